"""Device mesh and shardings for data-parallel training.

One 1-D mesh with axis `data` over every device of the job. Batches are split over `data`
along their leading (batch) axis; parameters and optimizer state are replicated. The train
steps are plain `jax.jit` functions with these shardings, so the gradient of the global
mean loss is averaged across devices by XLA (pmap-style semantics, without pmap).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading axis split over `data`, the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_divisible(batch_size: int, mesh: Mesh, what: str = "config.batch_size") -> None:
  """Refuses a size that cannot be split evenly over the mesh; `what` names the option."""
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(f"{what}={batch_size} is not divisible by the {n} devices of the mesh; "
                     f"choose a multiple of {n}")


def shard_batch(batch: dict[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
  """Places a host batch of arrays `(B, ...)` on the mesh, split along B.

  In a multi-process job each process passes its local part and the global array is
  assembled from all processes' parts. An empty batch (data-free steps) stays empty.
  """
  if not batch:
    return {}
  sizes = {k: np.shape(v)[0] for k, v in batch.items()}
  if len(set(sizes.values())) != 1:
    raise ValueError(f"batch arrays disagree on the batch size: {sizes}")
  sharding = batch_sharded(mesh)
  if jax.process_count() == 1:
    check_divisible(next(iter(sizes.values())), mesh)
    return jax.device_put(batch, sharding)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  check_divisible(next(iter(sizes.values())) * jax.process_count(), mesh,
                  "the global batch size (config.batch_size)")
  return multihost_utils.host_local_array_to_global_array(batch, mesh, P(DATA_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
  return jax.device_put(tree, replicated(mesh))
