"""The test tiers (README "Tests"): `slow` is a registered marker, and the fast tier
(`bash scripts/test.sh --fast`, i.e. `pytest -m "not slow"`) leaves out the whole-pipeline
and multi-host tests while keeping every parity test."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _collect(*args: str) -> set[str]:
  out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                        "-p", "no:cacheprovider", "-p", "no:xdist", *args, "tests"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  return {line for line in out.stdout.splitlines() if "::" in line}


def test_slow_is_a_registered_marker_and_markers_are_strict():
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    pytest_options = tomllib.load(f)["tool"]["pytest"]["ini_options"]
  assert any(m.startswith("slow:") for m in pytest_options["markers"])
  assert "--strict-markers" in pytest_options["addopts"]


@pytest.mark.slow  # collects the suite three times in subprocesses
def test_the_fast_tier_leaves_out_pipelines_and_multihost_but_keeps_parity():
  every, fast, slow = _collect(), _collect("-m", "not slow"), _collect("-m", "slow")
  assert fast and slow and fast | slow == every and not fast & slow
  files = lambda ids: {i.split("::")[0] for i in ids}
  for pipeline in ("tests/test_end_to_end.py", "tests/test_multihost.py"):
    assert pipeline in files(every) and pipeline not in files(fast), pipeline
  parity = {i for i in every if "parity" in i.split("::")[0]}
  assert parity and parity <= fast


@pytest.mark.slow  # runs the test command in a subprocess
def test_test_sh_fast_collects_the_fast_tier():
  """`scripts/test.sh --fast` passes the marker expression on to pytest (its workers print
  per-file counts under --collect-only -q)."""
  out = subprocess.run(["bash", "scripts/test.sh", "--fast", "--collect-only", "-q"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  counts = dict(line.rsplit(": ", 1) for line in out.stdout.splitlines()
                if line.startswith("tests/") and ": " in line)
  fast = _collect("-m", "not slow")
  want = {f: str(sum(i.startswith(f + "::") for i in fast))
          for f in {i.split("::")[0] for i in fast}}
  assert counts == want
