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
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from genrl_jax.train import distributed
from genrl_jax.train import host_info


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
    step = self._manager.latest_step()
    distributed.same_on_all_processes(
        -1 if step is None else step,
        f"the latest checkpoint step in {self.directory} (-1: none; is the directory on a "
        "filesystem all hosts share?)")
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
    saved = self._manager.save(step, args=args, force=True)
    self._manager.wait_until_finished()
    return saved

  def restore(self, target: Any, step: int | None = None) -> Any:
    """Restores into the structure, shapes, dtypes and shardings of `target`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    except Exception as e:  # Orbax raises several types for unreadable or mismatched trees.
      raise CheckpointError(
          f"checkpoint {self.step_dir(step)} cannot be restored into the state built from the "
          f"current config (different model sizes or a damaged checkpoint?): "
          f"{type(e).__name__}: {e}") from e
    return restored.state

  def restore_or_keep(self, target: Any) -> tuple[Any, bool]:
    """Restores the latest checkpoint if there is one, else returns `target` unchanged."""
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


def restore_subtree(directory: str, path: tuple[str, ...], step: int | None = None) -> Any:
  """Restores one subtree of a saved state as numpy arrays, e.g. `('params', 'world_model')`.

  Used to start a later stage (connector, behaviour) from a trained world model. Works
  whatever devices and processes wrote the checkpoint: every array is restored whole onto
  this process's first device.
  """
  manager = ocp.CheckpointManager(
      os.path.abspath(directory), options=ocp.CheckpointManagerOptions(read_only=True),
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "config": ocp.JsonCheckpointHandler()})
  step = manager.latest_step() if step is None else step
  if step is None:
    raise CheckpointError(f"no checkpoint in {os.path.abspath(directory)}")
  try:
    # Without a target Orbax restores the saved sharding, which fails on another topology
    # (a checkpoint of a 2-process job read by one process).
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          manager.item_metadata(step).state)
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  except Exception as e:
    raise CheckpointError(f"cannot read checkpoint {directory}/{step}: {e}") from e
  tree = restored.state
  for i, key in enumerate(path):
    if not isinstance(tree, dict) or key not in tree:
      have = sorted(tree) if isinstance(tree, dict) else type(tree).__name__
      raise CheckpointError(f"checkpoint {directory}/{step} has no entry "
                            f"{'/'.join(path[:i + 1])}; found {have}")
    tree = tree[key]
  return jax.tree.map(np.asarray, tree)


def read_checkpoint_config(directory: str, step: int | None = None) -> dict[str, Any]:
  manager = ocp.CheckpointManager(os.path.abspath(directory), item_names=("state", "config"),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise CheckpointError(f"no checkpoint in {os.path.abspath(directory)}")
  return manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config


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
