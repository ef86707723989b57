"""Several environments of one task, stepped together: one subprocess per environment
(:class:`ParallelEnvs`) or all in this process (:class:`SerialEnvs`), same API.

    with make_envs("walker_walk", num_envs=4, seed=0, fast_render=True) as envs:
      ts = envs.reset()                                  # observation (4, 64, 64, 3)
      ts = envs.step(np.zeros((4, envs.action_dim)))     # reward (4,), is_last (4,) ...

Environment ``i`` is ``make_env(task, seed=seed + i, ...)``, so it behaves exactly like that
environment alone. ``reset(indices, seeds=...)`` rebuilds environments with new seeds (one
fresh environment per episode, as in collection), and ``indices`` steps a subset (episodes
that end at different times).

Workers are started with 'spawn' and build their environment themselves: GL contexts do not
survive ``fork``, and forking a process in which JAX runs threads can deadlock.

A worker that dies (killed, out of memory, a crash in the renderer) is noticed within about
50 ms and restarted (at most ``max_restarts`` times per environment): the new worker
rebuilds the environment with the seed of its last rebuild and replays the commands sent
since (resets and actions), checking that every replayed time step equals the one
answered before, bit for bit, and then answers the pending command. Environments are
deterministic given their seed and actions, so callers (collection, evaluation) see the
same time steps as without the failure and need not know. Where replay is not possible
(restarts used up, a replay that differs, an environment left broken by an error, or
more than ``MAX_REPLAY`` commands since the last rebuild) the call raises one
RuntimeError naming the environment, task and seed.
"""

from __future__ import annotations

import builtins
import hashlib
import multiprocessing
import os
import signal
import time
import traceback
import weakref
from typing import Sequence

import numpy as np
from absl import logging

from genrl_jax.envs.pixels import check_action
from genrl_jax.envs.registry import make_env

# How often a waiting parent checks that its workers are alive.
_POLL_S = 0.05
_CLOSE_WAIT_S = 5.0
# Commands kept per environment since its last rebuild with a seed, for replay: collection
# rebuilds every episode; evaluation's 10 episodes of 500 steps need 5010. Beyond this an
# environment is no longer replayable (its memory stays bounded).
MAX_REPLAY = 100_000


def stack_time_steps(steps: Sequence[dict]) -> dict:
  """[{key: (...)}] * N -> {key: (N, ...)}."""
  return {k: np.stack([np.asarray(s[k]) for s in steps]) for k in steps[0]}


def _describe(task: str, index: int, seed: int) -> str:
  return f"env {index} ({task}, seed {seed})"


def _digest(payload: dict) -> bytes:
  """A fingerprint of a time step dict (keys, dtypes, shapes and bytes of its arrays)."""
  h = hashlib.blake2b(digest_size=16)
  for key in sorted(payload):
    a = np.ascontiguousarray(payload[key])
    h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
    h.update(a.tobytes())
  return h.digest()


def _env_info(env) -> dict:
  return {"action_dim": env.action_dim, "obs_shape": env.obs_shape}


class _Envs:
  """What :class:`SerialEnvs` and :class:`ParallelEnvs` share: arguments and batching."""

  def __init__(self, task: str, num_envs: int, seed: int, fast_render: bool, action_repeat: int,
               size: int, env_kwargs: dict | None):
    if num_envs < 1:
      raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    self.task = task
    self.num_envs = int(num_envs)
    self.seeds = [int(seed) + i for i in range(self.num_envs)]  # current seed of each env
    self._fresh = [True] * self.num_envs  # not reset since built
    self._make_kwargs = dict(fast_render=fast_render, action_repeat=action_repeat, size=size,
                             **(env_kwargs or {}))
    self.action_dim: int = 0
    self.obs_shape: tuple = ()

  def _indices(self, indices) -> list[int]:
    if indices is None:
      return list(range(self.num_envs))
    indices = [int(i) for i in np.atleast_1d(np.asarray(indices))]
    bad = [i for i in indices if not 0 <= i < self.num_envs]
    if bad or len(set(indices)) != len(indices) or not indices:
      raise ValueError(f"indices must be distinct, non-empty and in [0, {self.num_envs}); "
                       f"got {indices}")
    return indices

  def _seeds(self, indices: list[int], seeds) -> list[int] | None:
    if seeds is None:
      return None
    seeds = [int(s) for s in np.atleast_1d(np.asarray(seeds))]
    if len(seeds) != len(indices):
      raise ValueError(f"got {len(seeds)} seeds for {len(indices)} environments")
    return seeds

  def _actions(self, actions, indices: list[int]) -> list[np.ndarray]:
    """Checks every action before any environment steps: a bad one changes nothing."""
    if len(actions) != len(indices):
      raise ValueError(f"{self.task}: expected actions of shape ({len(indices)}, "
                       f"{self.action_dim}), got {len(actions)} rows")
    checked = []
    for row, i in enumerate(indices):
      try:
        checked.append(check_action(actions[row], self.action_dim))
      except ValueError as e:
        raise ValueError(f"{_describe(self.task, i, self.seeds[i])}: {e}") from e
    return checked

  def reset(self, indices=None, *, seeds=None) -> dict:
    """Resets environments; returns their stacked first time steps.

    Args:
      indices: environments to reset (default: all).
      seeds: optional new seeds, one per index: those environments are rebuilt as
        ``make_env(task, seed=s)`` first (a fresh environment, as collection uses).

    Returns:
      Time-step dict with a leading axis over ``indices``: observation (n, H, W, 3) uint8,
      reward/discount (n,) float32, is_first/is_last/is_terminal (n,) bool, action (n, A).
    """
    indices = self._indices(indices)
    seeds = self._seeds(indices, seeds)
    rebuild = None
    if seeds is not None:
      # A never-reset env already built with that seed is what a rebuild would give.
      rebuild = [None if self._fresh[i] and self.seeds[i] == s else s
                 for i, s in zip(indices, seeds)]
    steps = self._reset(indices, rebuild)
    for row, i in enumerate(indices):
      self._fresh[i] = False
      if seeds is not None:
        self.seeds[i] = seeds[row]
    return stack_time_steps(steps)

  def step(self, actions, indices=None) -> dict:
    """Steps environments ``indices`` (default: all) with ``actions`` (n, A).

    Returns the stacked time steps, leading axis n as in :meth:`reset`. Raises ValueError
    naming the environment when an action has the wrong shape (then nothing was stepped).
    """
    indices = self._indices(indices)
    return stack_time_steps(self._step(indices, self._actions(actions, indices)))

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def __repr__(self):
    return (f"{type(self).__name__}(task={self.task!r}, num_envs={self.num_envs}, "
            f"seeds={self.seeds})")


class SerialEnvs(_Envs):
  """``num_envs`` environments in this process (debugging, num_envs=1, no subprocesses)."""

  def __init__(self,
               task: str,
               num_envs: int,
               seed: int,
               *,
               fast_render: bool = False,
               action_repeat: int = 2,
               size: int = 64,
               env_kwargs: dict | None = None):
    super().__init__(task, num_envs, seed, fast_render, action_repeat, size, env_kwargs)
    self._envs = [self._make(s) for s in self.seeds]
    info = _env_info(self._envs[0])
    self.action_dim, self.obs_shape = info["action_dim"], info["obs_shape"]

  def _make(self, seed: int):
    return make_env(self.task, seed=seed, **self._make_kwargs)

  def _check_open(self):
    if not self._envs:
      raise RuntimeError(f"{self!r} is closed")

  def _reset(self, indices, seeds):
    self._check_open()
    for i, s in zip(indices, seeds or [None] * len(indices)):
      if s is not None:
        self._envs[i].close()
        self._envs[i] = self._make(s)
    return [self._envs[i].reset() for i in indices]

  def _step(self, indices, actions):
    self._check_open()
    return [self._envs[i].step(a) for i, a in zip(indices, actions)]

  def close(self) -> None:
    envs, self._envs = getattr(self, "_envs", []), []
    for env in envs:
      env.close()


def _require(env):
  if env is None:
    raise RuntimeError("no environment: building it failed (see the earlier error)")
  return env


def _worker(conn, task: str, seed: int, make_kwargs: dict, render_threads: int) -> None:
  """A worker's loop: builds its environment, then answers (command, argument) messages
    with ("ok", result) or ("error", (exception type name, message, traceback))."""
  # Ctrl-C goes to the whole process group: the parent decides, then closes us.
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  # Mesa's software renderer otherwise starts one thread per core in every worker; frames
  # do not depend on the thread count. Read when the first GL context is made.
  os.environ.setdefault("LP_NUM_THREADS", str(render_threads))
  env = None

  def make(s):
    return make_env(task, seed=s, **make_kwargs)

  try:
    command, arg = "make", seed
    while True:
      try:
        if command == "make":
          env = make(arg)
          result = _env_info(env)
        elif command == "reset":
          if arg is not None:
            if env is not None:
              env.close()
            env = None
            env = make(arg)
          result = _require(env).reset()
        elif command == "step":
          result = _require(env).step(arg)
        elif command == "close":
          break
        else:
          raise ValueError(f"unknown command {command!r}")
        conn.send(("ok", result))
      except Exception as e:  # pylint: disable=broad-except  (reported to the parent)
        conn.send(("error", (type(e).__name__, str(e), traceback.format_exc())))
      command, arg = conn.recv()
  except (EOFError, OSError, KeyboardInterrupt):
    pass  # the parent went away
  finally:
    if env is not None:
      try:
        env.close()
      except Exception:  # pylint: disable=broad-except
        pass
    conn.close()


def _rebuild_error(where: str, name: str, message: str, tb: str) -> Exception:
  """The worker's exception as the same builtin type (else RuntimeError), naming the env."""
  text = f"{where}: {message}\n\nTraceback in the worker process:\n{tb}"
  cls = getattr(builtins, name, None)
  if isinstance(cls, type) and issubclass(cls, Exception):
    try:
      return cls(text)
    except Exception:  # pylint: disable=broad-except  (constructors with other arguments)
      pass
  return RuntimeError(f"{where}: {name}: {message}\n\nTraceback in the worker process:\n{tb}")


def _shutdown(processes: list, conns: list) -> None:
  """Stops workers: ask, then terminate, then kill; joins them so none is left a zombie."""
  # Slots of workers never started (a failed start) hold None.
  pairs = [(c, p) for c, p in zip(conns, processes) if p is not None]
  conns, processes = [c for c, _ in pairs], [p for _, p in pairs]
  for conn, proc in zip(conns, processes):
    if proc.is_alive():
      try:
        conn.send(("close", None))
      except (OSError, ValueError):
        pass
  deadline = time.monotonic() + _CLOSE_WAIT_S
  for proc in processes:
    proc.join(max(deadline - time.monotonic(), 0.0))
  for proc in processes:
    if proc.is_alive():
      proc.terminate()
      proc.join(1.0)
    if proc.is_alive():
      proc.kill()
      proc.join()
  for conn in conns:
    conn.close()


class _WorkerDied(Exception):
  """A worker process is gone; the message says how (signal or exit code, pid)."""


class ParallelEnvs(_Envs):
  """``num_envs`` environments, each in its own worker process.

    Args:
      task, num_envs, seed: environment i is ``make_env(task, seed=seed + i, ...)``.
      fast_render, action_repeat, size, env_kwargs: passed to ``make_env``.
      start_method: multiprocessing start method, 'spawn' or 'forkserver' ('fork' is
        unsafe: GL contexts and JAX's threads do not survive it).
      timeout: seconds one call may wait for a worker before failing (None: no limit);
        a worker that dies is noticed within about 50 ms whatever this is.
      max_restarts: how many times each environment's worker is restarted after dying
        (its commands replayed, see the module doc) before a death raises; 0: never.

    Unless ``LP_NUM_THREADS`` is set, each worker's Mesa software renderer (llvmpipe) gets
    ``cpu_count // num_envs`` threads (at least 1), not one per core.

    Errors raised in a worker are raised here with the same builtin type, naming the env
    index, task and seed, followed by the worker's traceback. A worker that dies past its
    restarts or where replay is not possible, or that does not answer in time, raises
    RuntimeError and closes all workers.
    """

  def __init__(self,
               task: str,
               num_envs: int,
               seed: int,
               *,
               fast_render: bool = False,
               action_repeat: int = 2,
               size: int = 64,
               env_kwargs: dict | None = None,
               start_method: str = "spawn",
               timeout: float | None = 300.0,
               max_restarts: int = 3):
    super().__init__(task, num_envs, seed, fast_render, action_repeat, size, env_kwargs)
    if start_method == "fork":
      raise ValueError("start_method='fork' is not supported: GL contexts and JAX threads do "
                       "not survive fork; use 'spawn' or 'forkserver'")
    if max_restarts < 0:
      raise ValueError(f"max_restarts must be >= 0, got {max_restarts}")
    self.timeout = timeout
    self.max_restarts = int(max_restarts)
    self._context = multiprocessing.get_context(start_method)
    self._render_threads = max(1, (os.cpu_count() or 1) // self.num_envs)
    # Per environment, what a restarted worker needs to reach the same state: the seed its
    # environment was last built with and the commands answered since, each with the
    # digest of its answer ((command, argument, digest)); None where replay is not possible,
    # `_why_not` then says why.
    self._built_with = list(self.seeds)
    self._log: list[list | None] = [[] for _ in range(self.num_envs)]
    self._why_not = [""] * self.num_envs
    self.restarts = [0] * self.num_envs  # restarts so far, per environment
    self._conns, self._processes = [None] * self.num_envs, [None] * self.num_envs
    self._finalizer = weakref.finalize(self, _shutdown, self._processes, self._conns)
    for i, s in enumerate(self.seeds):
      self._start_worker(i, s)
    try:
      info = self._send(list(range(self.num_envs)), [None] * self.num_envs)[0]
    except BaseException:
      self.close()
      raise
    self.action_dim, self.obs_shape = info["action_dim"], info["obs_shape"]

  @property
  def processes(self) -> list:
    """The worker processes (``multiprocessing.Process``), one per environment (a
    restarted worker replaces its predecessor)."""
    return list(self._processes)

  @property
  def closed(self) -> bool:
    return not self._finalizer.alive

  def _where(self, i: int) -> str:
    return _describe(self.task, i, self.seeds[i])

  def _fail(self, message: str) -> RuntimeError:
    self.close()
    return RuntimeError(message + "; all workers of this ParallelEnvs were closed")

  def _start_worker(self, i: int, seed: int) -> None:
    """Starts the worker of environment i, which builds ``make_env(task, seed)`` and
    answers ("ok", info) or ("error", ...) before its first command."""
    parent, child = self._context.Pipe()
    proc = self._context.Process(
        target=_worker, args=(child, self.task, seed, self._make_kwargs, self._render_threads),
        name=f"genrl-env-{i}-{self.task}", daemon=True)
    proc.start()
    child.close()  # the worker's end; the parent keeps only its own
    # In place: the finalizer shuts down what these lists hold.
    self._conns[i], self._processes[i] = parent, proc

  def _post(self, i: int, command: tuple) -> None:
    try:
      self._conns[i].send(command)
    except (OSError, ValueError):
      pass  # a dead worker: _wait reports it

  def _wait(self, i: int, deadline: float | None):
    """The answer of worker i; _WorkerDied when it is gone, RuntimeError (all workers
    closed) when the deadline passes."""
    conn, proc = self._conns[i], self._processes[i]
    while True:
      try:
        if conn.poll(_POLL_S):
          return conn.recv()
      except (EOFError, OSError):
        pass  # the pipe broke: the worker is gone, reported below
      if not proc.is_alive():
        proc.join()
        code = proc.exitcode
        how = (f"was killed by signal {signal.Signals(-code).name}"
               if code is not None and code < 0 else f"exited with code {code}")
        raise _WorkerDied(f"the worker process (pid {proc.pid}) {how}")
      if deadline is not None and time.monotonic() > deadline:
        raise self._fail(f"{self._where(i)}: no answer from the worker process within "
                         f"{self.timeout} s")

  def _deadline(self) -> float | None:
    return None if self.timeout is None else time.monotonic() + self.timeout

  def _revive(self, i: int, how: str) -> dict:
    """Restarts the dead worker of environment i and replays its commands; returns the
    new worker's environment info. Raises RuntimeError (all workers closed) when the
    restarts are used up, replay is not possible or what it gives differs."""
    while True:
      self._conns[i].close()
      if self.restarts[i] >= self.max_restarts:
        raise self._fail(f"{self._where(i)}: {how}; not restarted (max_restarts="
                         f"{self.max_restarts}" + (f", all used: it was restarted "
                                                   f"{self.restarts[i]} times)"
                                                   if self.max_restarts else ")"))
      log = self._log[i]
      if log is None:
        raise self._fail(f"{self._where(i)}: {how}; it cannot be restarted: "
                         f"{self._why_not[i]}")
      self.restarts[i] += 1
      logging.warning("%s: %s; restarting it (restart %d of at most %d) and replaying the "
                      "%d commands since its environment was built with seed %d",
                      self._where(i), how, self.restarts[i], self.max_restarts, len(log),
                      self._built_with[i])
      self._start_worker(i, self._built_with[i])
      try:
        status, info = self._wait(i, self._deadline())
        if status == "error":
          raise self._fail(str(_rebuild_error(self._where(i), *info)))
        for k, (command, arg, digest) in enumerate(log):
          self._post(i, (command, arg))
          status, payload = self._wait(i, self._deadline())
          if status == "error" or _digest(payload) != digest:
            what = (_rebuild_error(self._where(i), *payload) if status == "error"
                    else "a different time step than before")
            raise self._fail(
                f"{self._where(i)}: {how}; restarted, but replaying its command {k + 1} of "
                f"{len(log)} ({command}) gave {what}: the environment is not deterministic "
                "given its seed and actions, so it cannot be restarted")
        return info
      except _WorkerDied as again:
        how = f"{how}; restarted, it died again: {again}"

  def _record(self, i: int, command: tuple | None, status: str, payload) -> None:
    """Keeps what replaying environment i needs after its answer to `command`."""
    if command is None:
      return  # the build: nothing to replay
    name, arg = command
    if status != "ok":
      # An environment whose command failed (e.g. a failed rebuild) is in no state a
      # replay could be checked against.
      self._log[i], self._why_not[i] = None, f"its {name} command failed before"
      return
    if name == "reset" and arg is not None:
      self._built_with[i], self._log[i] = arg, []
      name, arg = "reset", None  # replayed on a worker built with that seed
    log = self._log[i]
    if log is None:
      return
    if len(log) >= MAX_REPLAY:
      self._log[i] = None
      self._why_not[i] = (f"more than {MAX_REPLAY} commands since its environment was "
                          "built with its seed, too many to replay")
      return
    # A copy: the caller may reuse its action buffer.
    log.append((name, None if arg is None else np.array(arg), _digest(payload)))

  def _send(self, indices: list[int], commands: list) -> list:
    """Sends `commands[k]` to worker `indices[k]` (None: none, the answer to its build is
    awaited) and receives one answer per index (all of them, so that the pipes stay in
    step), restarting workers that died; then raises the first worker error, if any."""
    if self.closed:
      raise RuntimeError(f"{self!r} is closed")
    try:
      for i, command in zip(indices, commands):
        if command is not None:
          self._post(i, command)
      deadline = self._deadline()
      answers = []
      for i, command in zip(indices, commands):
        while True:
          try:
            answers.append(self._wait(i, deadline))
            break
          except _WorkerDied as died:
            if command is not None and command[0] == "reset" and command[1] is not None:
              # The environment is rebuilt anyway: nothing from before needs replaying.
              self._built_with[i], self._log[i] = command[1], []
            info = self._revive(i, str(died))
            deadline = self._deadline()  # the replay took its time, not the others'
            if command is None:
              answers.append(("ok", info))
              break
            self._post(i, command)
      for i, command, (status, payload) in zip(indices, commands, answers):
        self._record(i, command, status, payload)
      for i, (status, payload) in zip(indices, answers):
        if status == "error":
          raise _rebuild_error(self._where(i), *payload)
      return [payload for _, payload in answers]
    except KeyboardInterrupt:
      self.close()  # answers may be left in the pipes: these workers cannot be reused
      raise

  def _reset(self, indices, seeds):
    seeds = seeds or [None] * len(indices)
    return self._send(indices, [("reset", s) for s in seeds])

  def _step(self, indices, actions):
    return self._send(indices, [("step", a) for a in actions])

  def close(self) -> None:
    """Stops the worker processes (idempotent; also runs when garbage-collected or at exit)."""
    self._finalizer()


def make_envs(task: str, num_envs: int, seed: int, parallel: bool = True, **kwargs):
  """``ParallelEnvs`` (one process per env) or, with ``parallel=False``, ``SerialEnvs``.

    ``kwargs``: ``fast_render``, ``action_repeat``, ``size``, ``env_kwargs`` (and for
    ParallelEnvs ``start_method``, ``timeout``).
    """
  cls = ParallelEnvs if parallel else SerialEnvs
  return cls(task, num_envs, seed, **kwargs)
