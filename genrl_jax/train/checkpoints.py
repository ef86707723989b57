"""Orbax checkpoints: periodic atomic saves, keep-last-K, automatic resume, partial restore.

Each checkpoint step directory holds two items: `state` (the train-state pytree) and
`config` (the run's config as JSON, with `host`: the machine, library versions and
numerics fingerprint that computed it, `host_info.describe_host`), so a checkpoint always
says what produced it.
Orbax writes into a temporary directory and renames it when complete, so an interrupted
save never shadows the previous checkpoint.

In a multi-process job every process calls the same `Checkpointer` methods at the same
points (Orbax writes each array's shards from the processes that hold them, replicated
ones and the JSON config from process 0); the directory must be on a filesystem all hosts
share. The processes check that they see the same checkpoints before acting on them.

Damage (docs/reliability.md): after Orbax has finished a step, process 0 records the size
and SHA-256 of every file of the step folder in `<step>/checksums.json`
(`files.write_checksums`). Every reader (`Checkpointer.restore`, `restore_subtree`,
`read_checkpoint_config`) picks its step through `newest_intact_step`, which checks
Orbax's commit marker and the record before any parameter is read: a damaged step is named
in a warning (which file, and how: truncated, content changed, missing) and the next older
intact one is used; with none intact the read fails with one `CheckpointError`. A run that
trains on (`Checkpointer`) moves damaged steps aside to `<step>.damaged` (never deleted;
Orbax and `list_steps` ignore that name), so that its own later saves cannot collide
with them. Steps saved before checksums were recorded are checked by Orbax's reading
alone: a read that fails although the shapes match the target counts as damage too.
"""

from __future__ import annotations

import glob
import hashlib
import logging as std_logging
import os
import shutil
import sys
from typing import Any, Collection

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from genrl_jax import files
from genrl_jax.train import distributed
from genrl_jax.train import host_info

# Orbax writes this into every finished step folder just before renaming it into place.
COMMIT_MARKER = "commit_success.txt"
# A damaged step set aside by a resuming run: `<step>.damaged`, `<step>.damaged-2`, ...
DAMAGED_SUFFIX = ".damaged"


class CheckpointError(RuntimeError):
  """A checkpoint cannot be read or does not match what the run expects."""


class Checkpointer:
  """Saves every `save_every` steps (and when forced), keeps the last `keep`."""

  def __init__(self, directory: str, *, save_every: int, keep: int, config: dict[str, Any]):
    self.directory = os.path.abspath(directory)
    if save_every < 1 or keep < 1:
      raise ValueError(f"checkpoint save_every={save_every} and keep={keep} must be >= 1")
    self._config = config
    self.save_every = save_every
    options = ocp.CheckpointManagerOptions(max_to_keep=keep,
                                           create=True, enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "config"))

  def latest_step(self) -> int | None:
    """The newest intact step (None: no checkpoint); newer damaged steps are moved aside
    to `<step>.damaged` with a warning (`newest_intact_step`)."""
    step = newest_intact_step(self.directory, set_aside=True)
    self._manager.reload()  # the folders may have been renamed
    return step

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def should_save(self, step: int) -> bool:
    return step % self.save_every == 0

  def save(self, step: int, state: Any, force: bool = False) -> bool:
    """Saves `state` at `step` if it is a multiple of `save_every` (or `force`).

    Returns whether it saved. An existing checkpoint of the same step is kept as it is.
    """
    if not (force or self.should_save(step)):
      return False
    exists = distributed.same_on_all_processes(
        int(step in self._manager.all_steps()),
        f"whether checkpoint step {step} exists in {self.directory} (is the directory on "
        "a filesystem all hosts share?)")
    if exists:
      return False
    # The host of the process that writes the JSON (process 0), as of this save: a run
    # resumed elsewhere records the machine each checkpoint was computed on.
    config = dict(self._config, host=host_info.describe_host())
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              config=ocp.args.JsonSave(config))
    try:
      saved = self._manager.save(step, args=args, force=True)
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      if not files.is_disk_full(e):
        raise
      # Orbax leaves its unfinished step under a temporary name: remove it, so the space
      # is free again and no reader ever meets it; the earlier steps are untouched.
      partial = glob.glob(os.path.join(self.directory, f"{step}.orbax-checkpoint-tmp*"))
      written = sum(files.folder_size(p) for p in partial)
      if jax.process_index() == 0:
        for p in partial:
          shutil.rmtree(p, ignore_errors=True)
      needed = sum(int(getattr(x, "nbytes", 0)) for x in jax.tree.leaves(state))
      raise files.disk_full_error(self.step_dir(step), needed, written) from e
    if saved and jax.process_index() == 0:
      # After Orbax's rename, so the record describes the finished step; a crash before
      # it leaves a step without a record, which is read as one saved before records.
      files.write_checksums(self.step_dir(step))
    return saved

  def restore(self, target: Any, step: int | None = None) -> Any:
    """Restores into the structure, shapes, dtypes and shardings of `target`.

    `step` None: the newest intact step (`latest_step`; a step without a checksum record
    whose read fails is moved aside too, and the next older one tried). A given `step`
    must be intact.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    tried = set()
    while True:
      chosen = self.latest_step() if step is None else step
      if chosen is None:
        raise CheckpointError(f"no checkpoint in {self.directory}")
      if chosen in tried:  # it could not be moved aside: never loop
        raise CheckpointError(f"checkpoint {self.step_dir(chosen)} cannot be read and is "
                              "still in place")
      tried.add(chosen)
      if step is not None:
        _refuse_damaged(self.directory, step)
      # Before reading: Orbax restores an array of another shape than the target's without
      # an error (it returns the saved shape).
      mismatch = shape_mismatch(self.directory, chosen, abstract)
      if mismatch is not None:
        raise CheckpointError(
            f"checkpoint {self.step_dir(chosen)} cannot be restored into the state built from "
            f"the current config (different model sizes?): {mismatch}")
      error = None
      try:
        _quiet_closed_loop_reports()
        restored = self._manager.restore(
            chosen, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
      except Exception as e:  # Orbax raises several types for unreadable or mismatched trees.
        error = e
      failed = distributed.same_on_all_processes(
          int(error is not None), f"whether checkpoint {self.step_dir(chosen)} could be read")
      if not failed:
        return restored.state
      problem = f"Orbax cannot read it ({_first_line(error)})"
      if files.has_checksums(self.step_dir(chosen)):
        raise CheckpointError(f"checkpoint {self.step_dir(chosen)}: its files match their "
                              f"checksums but {problem}") from error
      if step is not None:
        raise CheckpointError(f"checkpoint {self.step_dir(chosen)} is damaged, nothing was "
                              f"loaded: {problem}") from error
      # Saved before checksum records: the failed read is the only sign of damage.
      _report_damaged(self.directory, {chosen: [problem]}, set_aside=True, using=None)
      self._manager.reload()

  def restore_or_keep(self, target: Any) -> tuple[Any, bool]:
    """Restores the latest intact checkpoint if there is one, else returns `target`
    unchanged."""
    if self.latest_step() is None:
      return target, False
    return self.restore(target), True

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def list_steps(directory: str) -> list[int]:
  """The finished checkpoint steps in `directory`, ascending ([] when it does not exist).

  Read from the folder names, without Orbax (cheap, for launchers and reports): Orbax names
  a finished step's folder by its number and writes into a temporary name before.
  """
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def latest_step(directory: str) -> int | None:
  """The newest finished checkpoint step in `directory` (None: none)."""
  return max(list_steps(directory), default=None)


def step_damage(directory: str, step: int) -> list[str]:
  """What is wrong with the files of checkpoint `step` (one phrase per damaged file; []
  when intact): Orbax's commit marker missing, or a file truncated, changed or missing
  against the step's checksum record (a step without a record: the marker only).

  A step folder verified before and unchanged since is not hashed again
  (`files.folder_damage`).
  """
  folder = os.path.join(directory, str(step))
  problems = []
  if not os.path.exists(os.path.join(folder, COMMIT_MARKER)):
    problems.append(f"{COMMIT_MARKER}: Orbax's commit marker missing (the save did not "
                    "finish)")
  return problems + [p for p in files.folder_damage(folder)
                     if not (problems and p.startswith(COMMIT_MARKER))]


# (Step folder, problems) already named in a warning by a reader that left it in place.
_WARNED: set[tuple[str, tuple[str, ...]]] = set()


def newest_intact_step(directory: str, *, set_aside: bool = False,
                       exclude: Collection[int] = ()) -> int | None:
  """The newest checkpoint step in `directory` whose files are intact (`step_damage`),
  leaving out the steps `exclude` (known unreadable); None when there is no step at all.

  Each newer damaged step is named in a warning; with `set_aside` (a run that will save
  into `directory`) it is also renamed to `<step>.damaged` by process 0. Raises
  `CheckpointError` when there are steps but none is intact (nothing is renamed then). In
  a multi-process job every process checks, and they must agree on the step.
  """
  directory = os.path.abspath(directory)
  steps = [s for s in list_steps(directory) if s not in exclude]
  distributed.same_on_all_processes(
      max(steps, default=-1), f"the latest checkpoint step in {directory} (-1: none; is the "
      "directory on a filesystem all hosts share?)")
  damaged: dict[int, list[str]] = {}
  chosen = None
  for step in reversed(steps):
    problems = step_damage(directory, step)
    if not problems:
      chosen = step
      break
    damaged[step] = problems
  agreed = distributed.same_on_all_processes(
      -1 if chosen is None else chosen,
      f"the newest intact checkpoint step in {directory} (-1: none)")
  if damaged and agreed < 0:
    listed = "; ".join(f"step {s}: {', '.join(p)}" for s, p in damaged.items())
    raise CheckpointError(
        f"no intact checkpoint in {directory}, nothing was loaded ({listed}). Move the "
        "damaged steps away to start afresh, or use another workdir")
  _report_damaged(directory, damaged, set_aside=set_aside, using=chosen)
  return chosen


def _refuse_damaged(directory: str, step: int) -> None:
  problems = step_damage(directory, step)
  if problems:
    raise CheckpointError(f"checkpoint {os.path.join(directory, str(step))} is damaged, "
                          f"nothing was loaded: {', '.join(problems)}")


def _report_damaged(directory: str, damaged: dict[int, list[str]], *, set_aside: bool,
                    using: int | None) -> None:
  """Warns about each damaged step (once per process for a step left in place); with
  `set_aside`, process 0 renames it first."""
  for step, problems in damaged.items():
    folder = os.path.join(directory, str(step))
    if not set_aside:
      if (folder, tuple(problems)) in _WARNED:
        continue
      _WARNED.add((folder, tuple(problems)))
    kept = f"left in place at {folder}"
    if set_aside:
      if jax.process_index() == 0:
        kept = f"moved aside to {_set_aside(folder)}"
      else:
        kept = "moved aside by process 0"
      distributed.barrier(f"checkpoints: set aside {folder}")
    logging.warning("checkpoint %s is damaged (%s); %s; %s", folder, ", ".join(problems),
                    kept, "nothing of it was loaded" if using is None
                    else f"using step {using}, the newest intact one")


def _set_aside(folder: str) -> str:
  target, n = folder + DAMAGED_SUFFIX, 1
  while os.path.exists(target):
    n += 1
    target = f"{folder}{DAMAGED_SUFFIX}-{n}"
  os.rename(folder, target)
  return target


def _first_line(error: BaseException) -> str:
  """`Type: first line` of an Orbax error (TensorStore appends many lines of spec)."""
  text = str(error).split(" See full TensorStore details")[0].strip().splitlines()
  return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def _quiet_closed_loop_reports() -> None:
  """Drops the 'Event loop is closed' reports of a failed Orbax read.

  Orbax reads an item with many concurrent TensorStore reads on an event loop it closes
  when one read fails; the reads still in flight then report `RuntimeError('Event loop
  is closed')`, or their own read error from an unawaited coroutine, through
  `sys.unraisablehook`, from TensorStore's threads, up to after the process has printed
  its error line, or through asyncio's logger when a failed read task is collected with
  its error unretrieved. They tell nothing the error does not, so they go to the debug
  log; every other report reaches the hook (or handlers) installed before.
  """
  previous = sys.unraisablehook
  if getattr(previous, "drops_closed_loop_reports", False):
    return

  def hook(report):
    closed_loop = (isinstance(report.exc_value, RuntimeError)
                   and str(report.exc_value) == "Event loop is closed")
    # The read coroutines left unawaited when the loop closed report their own failure
    # ("Exception ignored in: <coroutine ... _read_array_index_and_device_put>").
    failed_read = ("_read_array_index_and_device_put" in repr(report.object)
                   or _failed_read(report.exc_value))
    if closed_loop or failed_read:
      logging.debug("dropped a report of a failed checkpoint read: %s",
                    str(report.exc_value)[:300])
      return
    previous(report)

  hook.drops_closed_loop_reports = True
  sys.unraisablehook = hook
  # A read task garbage-collected with its error unretrieved is reported by asyncio's
  # logger instead ("Task exception was never retrieved"), with the same error.
  std_logging.getLogger("asyncio").addFilter(_drop_failed_read_task)


def _failed_read(error: BaseException | None) -> bool:
  return error is not None and str(error).startswith(
      "Encountered error while reading array index")


def _drop_failed_read_task(record: std_logging.LogRecord) -> bool:
  """Logging filter: False (drop) for asyncio's report of an unretrieved failed read."""
  error = record.exc_info[1] if record.exc_info else None
  if _failed_read(error):
    logging.debug("dropped a report of a failed checkpoint read: %s", str(error)[:300])
    return False
  return True


def _reader(directory: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory), options=ocp.CheckpointManagerOptions(read_only=True),
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "config": ocp.JsonCheckpointHandler()})


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _dtype_name(dtype: Any) -> str:
  try:
    return str(np.dtype(dtype))
  except TypeError:  # e.g. a PRNG key type
    return str(dtype)


def _shapes(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  """`{'a/b/c': (shape, dtype name)}` of a tree of arrays or array metadata."""
  return {"/".join(_key_name(k) for k in path): (tuple(leaf.shape), _dtype_name(leaf.dtype))
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def shape_mismatch(directory: str, step: int, target: Any) -> str | None:
  """How the arrays saved at `step` differ from `target`'s (paths, shapes, dtypes), e.g.
  `'params/world_model/.../kernel: saved (32, 16) float32, expected (48, 16) float32'`;
  None when they agree or the saved metadata cannot be read (then it is no config
  mismatch)."""
  try:
    saved = _shapes(_reader(directory).item_metadata(step).state)
    want = _shapes(target)
  except Exception:  # pylint: disable=broad-except  (unreadable metadata: damage)
    return None
  differ = [f"{k}: saved {_describe(saved.get(k))}, expected {_describe(want.get(k))}"
            for k in sorted(set(saved) | set(want)) if saved.get(k) != want.get(k)]
  if not differ:
    return None
  more = f" (and {len(differ) - 3} more arrays)" if len(differ) > 3 else ""
  return "; ".join(differ[:3]) + more


def _describe(entry: tuple[tuple[int, ...], str] | None) -> str:
  return "nothing" if entry is None else f"{entry[0]} {entry[1]}"


def restore_subtree(directory: str, path: tuple[str, ...], step: int | None = None) -> Any:
  """Restores one subtree of a saved state as numpy arrays, e.g. `('params', 'world_model')`.

  Used to start a later stage (connector, behaviour) from a trained world model. Works
  whatever devices and processes wrote the checkpoint: every array is restored whole onto
  this process's first device. `step` None: the newest intact step (damaged newer ones
  are skipped with a warning and left in place); a given `step` must be intact.
  """
  directory = os.path.abspath(directory)
  manager = _reader(directory)
  explicit = step is not None
  skipped: set[int] = set()
  while True:
    if explicit:
      _refuse_damaged(directory, step)
    else:
      step = newest_intact_step(directory, exclude=skipped)
      if step is None:
        raise CheckpointError(f"no checkpoint in {directory}" if not skipped else
                              f"no readable checkpoint in {directory} (steps "
                              f"{sorted(skipped)} cannot be read, see the warnings)")
    error = None
    try:
      _quiet_closed_loop_reports()
      # Without a target Orbax restores the saved sharding, which fails on another
      # topology (a checkpoint of a 2-process job read by one process).
      device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                            manager.item_metadata(step).state)
      restored = manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    except Exception as e:  # pylint: disable=broad-except
      error = e
    if not distributed.same_on_all_processes(int(error is not None),
                                             f"whether {directory}/{step} could be read"):
      break
    problem = f"Orbax cannot read it ({_first_line(error)})"
    if explicit or files.has_checksums(os.path.join(directory, str(step))):
      raise CheckpointError(f"cannot read checkpoint {directory}/{step}: {problem}") from error
    _report_damaged(directory, {step: [problem]}, set_aside=False, using=None)
    skipped.add(step)
  tree = restored.state
  for i, key in enumerate(path):
    if not isinstance(tree, dict) or key not in tree:
      have = sorted(tree) if isinstance(tree, dict) else type(tree).__name__
      raise CheckpointError(f"checkpoint {directory}/{step} has no entry "
                            f"{'/'.join(path[:i + 1])}; found {have}")
    tree = tree[key]
  return jax.tree.map(np.asarray, tree)


def read_checkpoint_config(directory: str, step: int | None = None) -> dict[str, Any]:
  """The run config saved with checkpoint `step` (None: the newest intact one)."""
  directory = os.path.abspath(directory)
  if step is None:
    step = newest_intact_step(directory)
    if step is None:
      raise CheckpointError(f"no checkpoint in {directory}")
  else:
    _refuse_damaged(directory, step)
  try:
    return _reader(directory).restore(
        step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f"cannot read the config of checkpoint {directory}/{step}: "
                          f"{_first_line(e)}") from e


def params_fingerprint(tree: Any) -> str:
  """A SHA-256 digest of a parameter tree's paths, shapes, dtypes and exact values.

  Behaviour checkpoints record the fingerprint of the MFWM they were trained in, so a
  behaviour is never resumed or evaluated with a different MFWM by mistake.
  """
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    array = np.asarray(jax.device_get(leaf))
    digest.update(f"{jax.tree_util.keystr(path)}|{array.shape}|{array.dtype}|".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()
