"""Plumbing shared by the embedders: data-parallel calls over local devices, unit rows,
file digests for identifiers.

`DataParallel` holds a model's params replicated over a 1-D mesh of this process's devices
(`genrl_jax.train.mesh`) and runs jitted functions on batches split along their
leading axis, chunk by chunk, padding each chunk to a multiple of the device count.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from genrl_jax.train import mesh as mesh_lib


def unit_rows(x: jax.Array) -> jax.Array:
  """`(..., E)` rows scaled to unit L2 norm (the epsilon only guards an all-zero row)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def files_digest(directory: str, names: list[str]) -> str:
  """sha256 over the names, sizes and contents of `names` in `directory`, hex."""
  digest = hashlib.sha256()
  for name in names:
    path = os.path.join(directory, name)
    digest.update(f"{name}\0{os.path.getsize(path)}\0".encode())
    with open(path, "rb") as f:
      digest.update(hashlib.file_digest(f, "sha256").digest())
  return digest.hexdigest()


def check_batch_size(batch_size: int, option: str = "config.vlm.batch_size") -> None:
  if batch_size < 1:
    raise ValueError(f"{option} must be positive, got {batch_size}")


class DataParallel:
  """Params replicated over a mesh of local devices; batches split along axis 0.

  Attributes:
    mesh: the 1-D mesh (`mesh_lib.DATA_AXIS`).
    batch_size: rows per device call, a multiple of the device count.
    params: the replicated params.
  """

  def __init__(self, params: Any, batch_size: int, devices: list[jax.Device] | None = None,
               option: str = "config.vlm.batch_size"):
    """`batch_size` is rounded up to a multiple of the device count; `devices` default to
    this process's local devices (an embedder is called from one process)."""
    check_batch_size(batch_size, option)
    self.mesh = mesh_lib.make_mesh(list(devices or jax.local_devices()))
    n_dev = self.mesh.devices.size
    self.batch_size = -(-batch_size // n_dev) * n_dev
    self.params = jax.device_put(params, mesh_lib.replicated(self.mesh))

  def jit(self, fn: Callable[..., jax.Array], n_inputs: int) -> Callable[..., jax.Array]:
    """`fn(params, *inputs)` jitted with replicated params and inputs/output split on axis 0."""
    sharded = mesh_lib.batch_sharded(self.mesh)
    return jax.jit(fn, in_shardings=(mesh_lib.replicated(self.mesh),) + (sharded,) * n_inputs,
                   out_shardings=sharded)

  def run(self, fn: Callable[..., jax.Array], out_dim: int, *arrays: np.ndarray
          ) -> np.ndarray:
    """Applies `fn(params, *chunks)` (from `jit`) chunk by chunk over axis 0 of `arrays`.

    Each chunk is padded (by repeating its last row) to a multiple of the device count,
    split over the mesh, and its padding rows dropped from the result. Returns float32
    `(N, out_dim)`.
    """
    n = len(arrays[0])
    if n == 0:
      return np.zeros((0, out_dim), np.float32)
    n_dev = self.mesh.devices.size
    sharding = mesh_lib.batch_sharded(self.mesh)
    done, pending = [], []
    for start in range(0, n, self.batch_size):
      chunk = [a[start:start + self.batch_size] for a in arrays]
      k = len(chunk[0])
      pad = -k % n_dev
      if pad:
        chunk = [np.concatenate([c, np.repeat(c[-1:], pad, axis=0)]) for c in chunk]
      # Dispatch is asynchronous: the next chunk is sent while this one computes. At most
      # two chunks are in flight, so device memory stays bounded for any N.
      pending.append((fn(self.params, *jax.device_put(chunk, sharding)), k))
      if len(pending) > 2:
        out, k = pending.pop(0)
        done.append(np.asarray(out)[:k])
    done += [np.asarray(out)[:k] for out, k in pending]
    return np.concatenate(done).astype(np.float32)
