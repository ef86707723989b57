"""kill -9 (docs/reliability.md) at several points of the stages whose kills the other fault
tests leave out: the data stage's embedding step, the eval stage (its main process, and one
of its environment workers) and `genrl_jax import-reference`. Real subprocess runs of
`experiments/main.py` / `python -m genrl_jax` with micro settings, killed with SIGKILL when
a given line or file appears (the filesystem and output polled, nothing timed), then run
again; each test compares the end result with an uninterrupted run's, and after each kill
checks that nothing half-written reads as valid. Each test records its kills
(`fault_tally`), printed at the end.

Each kill below is one trial; a run that finished before its kill point came would fail
the test (the windows are hundreds of milliseconds wide against a 5 ms poll).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable

import jax
import numpy as np
import pytest

import parity_fixtures as pf
from fault_tally import record, tally  # noqa: F401  (tally: an autouse fixture)
import synthetic
from genrl_jax import experiment_config
from genrl_jax import files
from genrl_jax import mfwm as mfwm_lib
from genrl_jax.behavior import learner
from genrl_jax.data import dataset as dataset_lib
from genrl_jax.data import dataset_check
from genrl_jax.data import dataset_reader
from genrl_jax.data import embedding_shards
from genrl_jax.reference import import_reference as ir
from genrl_jax.report.metrics import read_metrics
from genrl_jax.train import checkpoints
from genrl_jax.train.state import TrainState

pytestmark = pytest.mark.slow  # subprocess runs, killed and run again

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, "experiments", "main.py")
BASE_CONFIG = "configs/walker.py:tiny"
_POLL_S = 0.005
_RUN_TIMEOUT_S = 600.0


def _env(tmp_path) -> dict[str, str]:
  return dict(os.environ, GENRL_JAX_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1",
              XLA_FLAGS="--xla_force_host_platform_device_count=1")


def _run(argv: list[str], env: dict[str, str], log: str,
         kill_when: Callable[[str, int], bool] | None = None,
         kill: Callable[[int], None] | None = None) -> tuple[int, str, bool]:
  """Runs `argv` (output to the file `log`); with `kill_when(output so far, pid)`, calls
  `kill(pid)` (default: SIGKILL to the process) the first time it holds. Returns (exit
  status, output, whether `kill` was called). The run's process group is killed at the
  end, so that no worker outlives the test."""
  with open(log, "w") as out:
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
  killed = False
  deadline = time.monotonic() + _RUN_TIMEOUT_S
  try:
    while proc.poll() is None:
      if time.monotonic() > deadline:
        raise AssertionError(f"{argv} still runs after {_RUN_TIMEOUT_S} s")
      if kill_when is not None and not killed:
        with open(log, errors="replace") as f:
          text = f.read()
        if kill_when(text, proc.pid):
          (kill or (lambda pid: os.kill(pid, signal.SIGKILL)))(proc.pid)
          killed = True
      time.sleep(_POLL_S)
  finally:
    try:
      os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    proc.wait()
  with open(log, errors="replace") as f:
    return proc.returncode, f.read(), killed


def _main_argv(workdir: str, mode: str, flags: list[str]) -> list[str]:
  return [sys.executable, MAIN, f"--config={BASE_CONFIG}", f"--workdir={workdir}",
          f"--mode={mode}", *flags]


def _flags(config) -> list[str]:
  """`--config.<key>=<value>` flags that turn BASE_CONFIG into `config`."""
  def flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
      out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out
  base = flatten(experiment_config.config_to_dict(experiment_config.load_config(BASE_CONFIG)))
  new = flatten(experiment_config.config_to_dict(config))
  assert set(new) == set(base)
  return [f"--config.{k}={json.dumps(v) if isinstance(v, list) else v}"
          for k, v in sorted(new.items()) if base[k] != v]


# --- the data stage's embedding step ---------------------------------------------------


def _embedded_shards(root: str, key: str) -> list[str]:
  return dataset_lib.shard_names(os.path.join(root, "embeddings", key))


def _embedding_content(root: str, key: str, shards: list[str]) -> dict[str, tuple]:
  """Per embedding shard: its metadata.json and its records' episode ids and embedding
  bytes (the arrays bit for bit; the files' bytes are not compared: the TFDS writer orders
  a record's features differently from one process to the next). Each shard must pass
  its checksums (nothing half-written)."""
  out = {}
  for name in shards:
    path = os.path.join(root, "embeddings", key, name)
    assert not dataset_check.shard_content_damage(path), path
    with open(os.path.join(path, "metadata.json")) as f:
      metadata = json.load(f)
    source = dataset_lib.open_shard(path)
    records = [source[i] for i in range(len(source))]
    out[name] = (metadata, [(int(r["episode_id"]), r["vlm_embedding"].dtype.str,
                             r["vlm_embedding"].shape, r["vlm_embedding"].tobytes())
                            for r in records])
  return out


def test_embedding_killed_at_3_points_resumes_to_the_uninterrupted_embeddings(tmp_path):
  config = synthetic.micro_config("")
  # 24 shards of one 100-step episode: about 0.1 s of embedding each on 2 cores.
  source = synthetic.write_episodes(str(tmp_path / "source"), num=24, length=100,
                                    episodes_per_shard=1)
  reference, root = str(tmp_path / "reference"), str(tmp_path / "dataset")
  shutil.copytree(source, reference)
  shutil.copytree(source, root)
  env = _env(tmp_path)
  with config.unlocked():
    config.data.path = reference
  # Uninterrupted, in a process of its own as the killed runs (in this one, numpy's BLAS
  # may round the last bit otherwise).
  code, output, _ = _run(_main_argv(str(tmp_path / "reference_work"), "data", _flags(config)),
                         env, str(tmp_path / "reference.log"))
  assert code == 0, output[-3000:]
  identifier = synthetic.SYNTHETIC_VLM
  key = embedding_shards.embedding_key(identifier)
  assert len(_embedded_shards(reference, key)) == 24
  want = _embedding_content(reference, key, _embedded_shards(reference, key))
  with config.unlocked():
    config.data.path = root
  argv = _main_argv(str(tmp_path / "work"), "data", _flags(config))
  # Killed after the first shard, as soon as a shard is being written (a temporary) once 6
  # are done, and after 14; then the run that completes.
  points = [lambda: len(_embedded_shards(root, key)) >= 1,
            lambda: len(_embedded_shards(root, key)) >= 6 and any(
                n.endswith(files.TEMP_SUFFIX)
                for n in os.listdir(os.path.join(root, "embeddings", key))),
            lambda: len(_embedded_shards(root, key)) >= 14]
  done = []
  for n, point in enumerate(points):
    code, output, killed = _run(argv, env, str(tmp_path / f"kill{n}.log"),
                                lambda *_, point=point: point())
    assert killed and code == -signal.SIGKILL, output[-3000:]
    have = _embedded_shards(root, key)
    assert len(done) <= len(have) < 24, (n, have)  # mid-embedding, nothing lost
    done = have
    # What reads as embedded is whole: every complete shard equals the reference's.
    dataset = dataset_reader.open_dataset(root)
    assert set(dataset.embedding_sets[identifier].shards) == set(have)
    assert _embedding_content(root, key, have) == {n: want[n] for n in have}
  code, output, _ = _run(argv, env, str(tmp_path / "final.log"))
  assert code == 0, output[-3000:]
  assert _embedded_shards(root, key) == sorted(want)
  assert _embedding_content(root, key, sorted(want)) == want  # bit for bit
  # What a kill left mid-write was a temporary, which no reader takes for a shard; the
  # next run removed it.
  assert sorted(os.listdir(os.path.join(root, "embeddings", key))) == sorted(want)
  embedded = dataset_reader.open_dataset(root, identifier)
  expected = dataset_reader.open_dataset(reference, identifier)
  for i in range(expected.num_episodes):
    np.testing.assert_array_equal(embedded.read_episode(i)["vlm_embedding"],
                                  expected.read_episode(i)["vlm_embedding"])
  record("kill -9 during the data stage's embedding", len(points))


# --- collection, MFWM and behaviour training --------------------------------------------


def _training_config():
  """Micro settings: 2 collected episodes (one per shard), 6 MFWM and 4 behaviour updates,
  a checkpoint every 2."""
  c = synthetic.micro_config("")
  with c.unlocked():
    c.data.collect_episodes, c.data.num_envs, c.data.episodes_per_shard = 2, 1, 1
    c.mfwm.num_steps, c.mfwm.log_every, c.mfwm.save_every = 6, 2, 2
    synthetic.micro_behavior(c, num_steps=4, log_every=2, save_every=2)
  return c


def _episode_content(root: str) -> dict[int, dict[str, bytes]]:
  """episode id -> its arrays' bytes, over every episode shard of the dataset `root`."""
  dataset = dataset_reader.open_dataset(root)
  out = {}
  for i in range(dataset.num_episodes):
    episode = dataset.read_episode(i)
    out[int(dataset.episode_ids[i])] = {k: np.asarray(v).tobytes() for k, v in episode.items()}
  return out


def test_collection_and_training_killed_at_2_points_each_resume_to_the_uninterrupted_run(
    tmp_path):
  config = _training_config()
  flags, env = _flags(config), _env(tmp_path)
  reference, work = str(tmp_path / "reference"), str(tmp_path / "work")
  for mode in ("data", "mfwm", "behavior"):  # data: collect, then embed
    code, output, _ = _run(_main_argv(reference, mode, flags), env,
                           str(tmp_path / f"reference_{mode}.log"))
    assert code == 0, output[-3000:]
  episodes = os.path.join(work, "dataset", "episodes")
  mfwm_dir = os.path.join(work, "mfwm")
  behavior_dir = os.path.join(work, "behavior", config.task)

  def temporary_in(folder):
    return lambda *_: os.path.isdir(folder) and any(
        n.endswith(files.TEMP_SUFFIX) or ".orbax-checkpoint-tmp" in n
        for n in os.listdir(folder))

  def intact(folder, step):
    return lambda *_: os.path.exists(os.path.join(folder, str(step), files.CHECKSUM_FILE))

  # Per stage: killed once its first shard or checkpoint is complete, then (in the run
  # that resumes from it) while the next one is being written; then the run that ends.
  kills = {"data": [lambda *_: dataset_lib.shard_names(episodes) == ["shard-00000"],
                    temporary_in(episodes)],
           "mfwm": [intact(mfwm_dir, 2), temporary_in(mfwm_dir)],
           "behavior": [intact(behavior_dir, 2), temporary_in(behavior_dir)]}
  for mode, points in kills.items():
    argv = _main_argv(work, mode, flags)
    for n, point in enumerate(points):
      code, output, killed = _run(argv, env, str(tmp_path / f"{mode}_kill{n}.log"), point)
      assert killed and code == -signal.SIGKILL, output[-3000:]
    code, output, _ = _run(argv, env, str(tmp_path / f"{mode}_final.log"))
    assert code == 0, output[-3000:]
    if mode != "data":
      assert "resumed from step" in output, output[-3000:]
  # The dataset, the MFWM's state and the behaviour's, bit for bit.
  assert _episode_content(os.path.join(work, "dataset")) == _episode_content(
      os.path.join(reference, "dataset"))
  assert dataset_lib.shard_names(episodes) == ["shard-00000", "shard-00001"]
  for sub in (("mfwm",), ("behavior", config.task)):
    _tree_equal(checkpoints.restore_subtree(os.path.join(work, *sub), ()),
                checkpoints.restore_subtree(os.path.join(reference, *sub), ()))
  assert checkpoints.newest_intact_step(mfwm_dir) == 6
  assert checkpoints.newest_intact_step(behavior_dir) == 4
  for mode in ("collection", "MFWM training", "behaviour training"):
    record(f"kill -9 during {mode}", 2)


# --- the eval stage ---------------------------------------------------------------------


def _eval_config():
  c = synthetic.micro_config("")
  with c.unlocked():
    b = c.behavior
    b.actor.units = b.critic.units = 32
    b.actor.layers = b.critic.layers = 1
    b.start = "data_free"
    c.eval.episodes = 4
    c.eval.num_envs = 2  # worker processes, one of which a test kills
    c.eval.time_limit = 4.0  # 80 agent steps
    c.eval.random_episodes = 2
    c.eval.latent_episodes = 0
  return c


def _random_params(shapes, rng: np.random.Generator):
  """Arrays of `shapes` (a tree of ShapeDtypeStruct) drawn from N(0, 0.1): an untrained
  model's params without compiling its initialiser."""
  return jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)


def _untrained_workdir(workdir: str, config) -> None:
  """An MFWM checkpoint and a behaviour checkpoint for `config.task` with random params,
  laid out as the mfwm and behavior stages write them (training them costs minutes of
  compiling on 2 cores; what the eval stage plays need not be any good)."""
  rng = np.random.default_rng(0)
  mfwm = mfwm_lib.make_mfwm(config, 6)
  params = _random_params(jax.eval_shape(lambda k: mfwm_lib.init_params(mfwm, k),
                                         jax.random.key(0)), rng)
  saved = experiment_config.config_to_dict(config)
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "mfwm"), save_every=1, keep=1,
                                  config=saved)
  ckpt.save(1, TrainState.create(params, mfwm_lib.make_optimizer(config)), force=True)
  ckpt.close()
  behavior = learner.make_behavior(config, 6)
  feat = learner.feature_dim(mfwm.world_model)
  behavior_params = _random_params(
      jax.eval_shape(lambda k: learner.init_params(behavior, feat, k), jax.random.key(1)), rng)
  wm = config.world_model
  shape = (config.behavior.horizon + 1, learner.num_starts(config), wm.stoch, wm.discrete)
  target = {"stoch": np.zeros(shape, np.float32), "logit": np.zeros(shape, np.float32)}
  state = learner.create_state(behavior, learner.make_optimizer(config.behavior),
                               behavior_params, target)
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "behavior", config.task), save_every=1,
                                  keep=1, config={**saved, "behavior_run": {}})
  ckpt.save(1, state, force=True)
  ckpt.close()


def _workers(pid: int) -> list[int]:
  """The environment workers of the run `pid` (spawned Pythons in its session)."""
  out = []
  for entry in os.listdir("/proc"):
    if not entry.isdigit() or int(entry) == pid:
      continue
    try:
      with open(f"/proc/{entry}/stat") as f:
        session = int(f.read().rsplit(")", 1)[1].split()[3])
      with open(f"/proc/{entry}/cmdline", "rb") as f:
        cmdline = f.read()
    except (OSError, ValueError, IndexError):
      continue  # gone meanwhile
    if session == pid and b"spawn_main" in cmdline:
      out.append(int(entry))
  return sorted(out)


def test_eval_stage_killed_at_3_points_or_losing_a_worker_gives_identical_results(tmp_path):
  config = _eval_config()
  base = str(tmp_path / "base")
  _untrained_workdir(base, config)
  flags, env = _flags(config), _env(tmp_path)
  task_dir = os.path.join("behavior", config.task)

  def workdir(name):
    path = str(tmp_path / name)
    shutil.copytree(base, path)
    return path

  def results(path):
    with open(os.path.join(path, task_dir, "eval.json")) as f:
      evaluation = json.load(f)
    with open(os.path.join(path, "random_policy", f"{config.task}.json")) as f:
      random = json.load(f)
    with open(os.path.join(path, task_dir, "eval_episode.gif"), "rb") as f:
      gif = hashlib.sha256(f.read()).hexdigest()
    return evaluation, random, gif

  reference = workdir("reference")
  code, output, _ = _run(_main_argv(reference, "eval", flags), env, str(tmp_path / "ref.log"))
  assert code == 0, output[-3000:]
  want = results(reference)
  assert len(want[0]["returns"]) == 4

  # One environment worker killed while the behaviour plays its second episodes (the
  # first two ended: "2/4"; the random baseline's bar comes after "4/4"): restarted, its
  # first episode and the second's steps replayed, the run goes on and its results are
  # the uninterrupted run's.
  lone = workdir("worker")
  code, output, killed = _run(
      _main_argv(lone, "eval", flags), env, str(tmp_path / "worker.log"),
      lambda text, pid: "2/4" in text and "4/4" not in text and len(_workers(pid)) >= 2,
      lambda pid: os.kill(_workers(pid)[0], signal.SIGKILL))
  assert killed and code == 0, output[-3000:]
  assert re.search(r"killed by signal SIGKILL; restarting it \(restart 1 of at most 3\) and "
                   r"replaying the (8[2-9]|9\d|1\d\d) commands", output), output[-3000:]
  assert results(lone) == want

  # The main process killed: while the behaviour plays, once the random baseline is saved,
  # once eval.json is written (results table and plots); then the run that completes.
  killed_dir = workdir("killed")
  eval_json = os.path.join(killed_dir, task_dir, "eval.json")
  random_json = os.path.join(killed_dir, "random_policy", f"{config.task}.json")
  points = [lambda text, _: "eval walker_walk:" in text,
            lambda *_: os.path.exists(random_json),
            lambda *_: os.path.exists(eval_json)]
  argv = _main_argv(killed_dir, "eval", flags)
  for n, point in enumerate(points):
    code, output, killed = _run(argv, env, str(tmp_path / f"kill{n}.log"), point)
    assert killed and code == -signal.SIGKILL, output[-3000:]
    # Nothing half-written: what is there is the uninterrupted run's.
    for path, expected in ((eval_json, want[0]), (random_json, want[1])):
      if os.path.exists(path):
        with open(path) as f:
          assert json.load(f) == expected
  code, output, _ = _run(argv, env, str(tmp_path / "final.log"))
  assert code == 0, output[-3000:]
  assert results(killed_dir) == want
  # metrics.jsonl holds the evaluation's row once (written after eval.json; a run killed
  # between the two writes it when run again).
  eval_rows = lambda path: [{k: v for k, v in r.items() if k.startswith("eval_")}
                            for r in read_metrics(path, f"behavior_{config.task}")
                            if "eval_mean_return" in r]
  assert eval_rows(killed_dir) == eval_rows(reference) and len(eval_rows(reference)) == 1
  record("kill -9 of the eval stage", len(points))
  record("env worker killed in the eval stage (subprocess)", 1)


# --- import-reference --------------------------------------------------------------------


def _temporaries(out: str, pid: int | None = None) -> list[str]:
  """The temporaries of `out` (`files.temp_name`), of the process `pid` when given."""
  parent, name = os.path.split(out)
  prefix = f".{name}.{'' if pid is None else f'{pid}-'}"
  return [os.path.join(parent, n) for n in os.listdir(parent)
          if n.startswith(prefix) and n.endswith(files.TEMP_SUFFIX)]


def _tree_equal(a, b) -> None:
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_import_reference_killed_at_3_points_leaves_nothing_valid_and_reruns(tmp_path):
  pf.require_fixtures()
  snapshot = str(pf.fixture_dir() / "snapshot_small.pt")
  reference = ir.import_reference(snapshot, str(tmp_path / "reference"))  # uninterrupted
  out = str(tmp_path / "imported")
  argv = [sys.executable, "-m", "genrl_jax", "import-reference", snapshot, f"--out={out}"]
  env = _env(tmp_path)

  def inside(*parts):
    return lambda _, pid: any(os.path.exists(os.path.join(t, *parts))
                              for t in _temporaries(out, pid))

  # Killed once its temporary folder exists, once the MFWM checkpoint is being written
  # there, once the behaviours' is (each run's own temporary: its name holds the pid).
  points = [inside(), inside("mfwm"), inside("imported_behavior")]
  for n, point in enumerate(points):
    code, output, killed = _run(argv, env, str(tmp_path / f"kill{n}.log"), point)
    assert killed and code == -signal.SIGKILL, output[-3000:]
    # No workdir appeared: `out` is absent (or empty), the rest is a named temporary (of
    # this run: each run removes those of the killed ones before).
    assert not os.path.exists(out) or not os.listdir(out)
    assert len(_temporaries(out)) == 1
  code, output, _ = _run(argv, env, str(tmp_path / "final.log"))
  assert code == 0 and f"into {out}" in output, output[-3000:]
  assert _temporaries(out) == []
  _tree_equal(checkpoints.restore_subtree(os.path.join(out, "mfwm"), ("params",)),
              checkpoints.restore_subtree(os.path.join(reference, "mfwm"), ("params",)))
  _tree_equal(checkpoints.restore_subtree(os.path.join(out, "imported_behavior"), ()),
              checkpoints.restore_subtree(os.path.join(reference, "imported_behavior"), ()))
  for name in ("config.json", ir.INFO_FILE):
    with open(os.path.join(out, name)) as f, open(os.path.join(reference, name)) as g:
      assert f.read().replace(out, "OUT") == g.read().replace(reference, "OUT")
  record("kill -9 during import-reference", len(points))
