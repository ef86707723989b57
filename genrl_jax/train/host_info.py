"""What a run computed on: the machine, the libraries and a fingerprint of their numerics.

The same config and seed give the same result bit for bit on one machine, but not across
machines: XLA's kernels round differently with other instruction sets (on CPU, e.g., with
or without fused multiply-add) and other library versions, and a training of thousands of
updates grows a difference in the last bit into a different model
(`docs/reproducibility.md`). Every checkpoint therefore records `describe_host()`, so that a result
that does not repeat can be told apart from a change of code or data: two machines with
the same `numerics` fingerprint (and the same versions) compute the same bits.

`python -m genrl_jax.train.host_info` prints the record of this machine.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import socket
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Libraries whose versions change the numbers a run computes.
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "mujoco",
            "dm_control")
# CPU features that change which kernels XLA runs (and so the rounding).
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")


def _cpuinfo() -> tuple[str, list[str]]:
  """The CPU model and the `CPU_FLAGS` it has (Linux's /proc/cpuinfo; else `platform`)."""
  try:
    with open("/proc/cpuinfo") as f:
      text = f.read()
  except OSError:
    return platform.processor() or platform.machine(), []
  model, flags = "", set()
  for line in text.splitlines():
    key, _, value = line.partition(":")
    key = key.strip()
    if key == "model name" and not model:
      model = value.strip()
    elif key == "flags" and not flags:
      flags = set(value.split())
  return model or platform.machine(), [f for f in CPU_FLAGS if f in flags]


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def numerics_fingerprint(device: jax.Device | None = None) -> str:
  """A digest (16 hex) of the exact bits of a fixed strided convolution, matmul and
  GRU-like update computed on `device` (default: the first local one). It differs where
  the device's kernels round differently (measured on the 2-core CPU: XLA limited to
  SSE4.2 or AVX gives another digest than AVX2 or AVX-512)."""
  device = device or jax.local_devices()[0]
  x = np.random.default_rng(0).standard_normal((8, 64, 64, 3)).astype(np.float32)
  w = np.random.default_rng(1).standard_normal((4, 4, 3, 32)).astype(np.float32)
  a = np.random.default_rng(2).standard_normal((256, 1024)).astype(np.float32)
  b = np.random.default_rng(3).standard_normal((1024, 384)).astype(np.float32)

  def compute(x, w, a, b):
    y = jax.lax.conv_general_dilated(x, w, (2, 2), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = a @ b
    z = jax.nn.sigmoid(h) * jnp.tanh(h) + jax.nn.silu(a[:, :384]) * jnp.exp(-jnp.abs(h))
    return y, z, jax.nn.logsumexp(z, axis=-1)

  args = jax.device_put((x, w, a, b), device)
  digest = hashlib.sha256()
  for out in jax.jit(compute)(*args):
    digest.update(np.ascontiguousarray(jax.device_get(out)).tobytes())
  return digest.hexdigest()[:16]


@functools.cache
def describe_host() -> dict[str, Any]:
  """This process's machine: host name, CPU model and `CPU_FLAGS`, cores, JAX backend,
  device kind and count, `PACKAGES` versions, `XLA_FLAGS`, and `numerics_fingerprint()`.
  Computed once per process (the fingerprint compiles and runs a small program)."""
  cpu, flags = _cpuinfo()
  local = jax.local_devices()
  return {
      "hostname": socket.gethostname(),
      "cpu": cpu,
      "cpu_flags": flags,
      "cpu_count": os.cpu_count(),
      "backend": jax.default_backend(),
      "device_kind": local[0].device_kind,
      "device_count": jax.device_count(),
      "process_count": jax.process_count(),
      "versions": {p: _version(p) for p in PACKAGES},
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "numerics": numerics_fingerprint(local[0]),
  }


if __name__ == "__main__":
  print(json.dumps(describe_host(), indent=2))
