"""The host record saved with every checkpoint (genrl_jax/train/host_info.py)."""

import json
import os
import subprocess
import sys

import jax
import pytest

from genrl_jax.train import host_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_describe_host_names_the_machine_libraries_and_numerics():
  record = host_info.describe_host()
  assert record["backend"] == jax.default_backend() and record["cpu"]
  assert record["versions"]["jax"] == jax.__version__
  assert set(record["cpu_flags"]) <= set(host_info.CPU_FLAGS)
  assert len(record["numerics"]) == 16 and int(record["numerics"], 16) >= 0
  assert record["numerics"] == host_info.numerics_fingerprint()  # the same bits again
  json.dumps(record)  # it goes into the checkpoints' JSON


def _fingerprint_with(xla_flags: str) -> str:
  env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", "genrl_jax.train.host_info"], cwd=ROOT, env=env,
                       capture_output=True, text=True, check=True, timeout=300)
  return json.loads(out.stdout)["numerics"]


@pytest.mark.skipif("fma" not in host_info.describe_host()["cpu_flags"]
                    or jax.default_backend() != "cpu",
                    reason="needs a CPU backend on a host with fused multiply-add")
def test_numerics_fingerprint_tells_kernels_that_round_differently():
  # XLA limited to AVX (no fused multiply-add) rounds the same program differently.
  assert _fingerprint_with("--xla_cpu_max_isa=AVX") != _fingerprint_with("")
