"""The host allocator: tcmalloc found and preloaded, faults gone, the option checked."""

import os
import subprocess
import sys
import textwrap

import pytest

from genrl_jax import host_allocator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TCMALLOC = host_allocator.find_tcmalloc()
needs_tcmalloc = pytest.mark.skipif(
    TCMALLOC is None and os.environ.get("CI") != "true",
    reason="tcmalloc is not installed (scripts/setup.sh installs libtcmalloc-minimal4)")

# Ten XLA executions that each allocate and free a 400 MB temporary buffer (the barrier
# makes XLA write it out); prints the allocator in use and the page faults of the last 8.
FAULTS = """
    import os, resource, sys
    from genrl_jax import host_allocator
    host_allocator.reexec_with_tcmalloc()
    import jax, jax.numpy as jnp
    big = lambda x: jax.lax.optimization_barrier(jnp.sin(jnp.arange(100_000_000) * x))
    f = jax.jit(lambda x: jnp.sum(big(x)))
    for i in range(2):
      f(float(i)).block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(8):
      f(float(i)).block_until_ready()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print("tcmalloc" in os.environ.get("LD_PRELOAD", ""), faults)
"""


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
  environ = {k: v for k, v in os.environ.items()
             if k not in (host_allocator.ENV, "LD_PRELOAD", "TCMALLOC_RELEASE_RATE")}
  return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                        env={**environ, **env}, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@needs_tcmalloc
def test_reexec_under_tcmalloc_stops_the_page_faults_of_repeated_large_buffers():
  tuned, system = _run(FAULTS), _run(FAULTS, GENRL_JAX_MALLOC="system")
  assert tuned.returncode == 0 and system.returncode == 0, tuned.stderr + system.stderr
  (tuned_on, tuned_faults), (system_on, system_faults) = (
      tuned.stdout.split(), system.stdout.split())
  assert (tuned_on, system_on) == ("True", "False")
  pages_per_run = 400e6 / 4096
  assert int(system_faults) > 7 * pages_per_run  # glibc faults the buffer in every time
  assert int(tuned_faults) < 3 * pages_per_run  # tcmalloc reuses it (rarely a fresh span)
  assert "large alloc" not in tuned.stderr


def test_preload_environment(monkeypatch):
  monkeypatch.delenv(host_allocator.ENV, raising=False)
  assert host_allocator.preload_environment({"LD_PRELOAD": "/x/libtcmalloc.so.4"}) is None
  monkeypatch.setenv(host_allocator.ENV, "system")
  assert host_allocator.preload_environment({}) is None
  monkeypatch.setenv(host_allocator.ENV, "tcmalloc")
  env = host_allocator.preload_environment({"LD_PRELOAD": "/x/other.so"})
  if TCMALLOC is None:
    assert env is None
  else:
    assert env["LD_PRELOAD"] == f"{TCMALLOC} /x/other.so"


def test_unknown_mode_is_refused(monkeypatch):
  monkeypatch.setenv(host_allocator.ENV, "jemalloc")
  with pytest.raises(ValueError, match="GENRL_JAX_MALLOC='jemalloc'"):
    host_allocator.preload_environment({})


def test_shell_exports_set_what_the_restart_would():
  # What scripts/test.sh evals: the preload environment's changes, nothing once loaded.
  result = _run("from genrl_jax import host_allocator; print(host_allocator.shell_exports())")
  expected = host_allocator.preload_environment(
      {k: v for k, v in os.environ.items()
       if k not in (host_allocator.ENV, "LD_PRELOAD", "TCMALLOC_RELEASE_RATE")})
  if expected is None:
    assert result.stdout.strip() == ""
  else:
    assert f"export LD_PRELOAD={TCMALLOC}" in result.stdout
    assert "export TCMALLOC_RELEASE_RATE=0" in result.stdout
  loaded = _run("from genrl_jax import host_allocator; print(host_allocator.shell_exports())",
                LD_PRELOAD=TCMALLOC or "/x/libtcmalloc.so.4")
  assert loaded.stdout.strip() == ""
  bad = subprocess.run([sys.executable, "-m", "genrl_jax.host_allocator"], cwd=ROOT,
                       env={**os.environ, host_allocator.ENV: "jemalloc"},
                       capture_output=True, text=True, timeout=60)
  assert bad.returncode == 1 and bad.stderr.strip().startswith("error: GENRL_JAX_MALLOC=")
