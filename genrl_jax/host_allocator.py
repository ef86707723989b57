"""Runs the process with tcmalloc, so that XLA on CPU does not page-fault every step.

XLA's CPU runtime allocates every step's buffers afresh (gigabytes per MFWM update) and
frees them at the end. glibc's malloc serves such blocks with `mmap` and returns them to
the OS on `free`, so the next step page-faults in and zeroes its whole working set again.
Measured on 2 cores, `small` MFWM update: 0.89 M minor page faults and 1.7 s of system
time per 3.0 s update; under tcmalloc, which keeps freed memory for reuse, about 400 faults
and 2.0 s. (glibc tuned to keep its memory, with one arena, no mmap and no trimming, also
stops the faults, but its heap then fragments: a loop freeing and re-allocating a 400 MB
buffer grew to 2.5 GB in 10 iterations, where tcmalloc stays at 0.6 GB.)

`reexec_with_tcmalloc()` restarts the current command with `LD_PRELOAD` naming tcmalloc
when it is installed (Debian: `libtcmalloc-minimal4`, which `scripts/setup.sh` installs)
and not yet loaded. The entry points (`experiments/main.py`, the benchmarks) call it first
thing; `scripts/test.sh` sets the same environment for the test suite. In a notebook, start
Jupyter after `eval "$(python -m genrl_jax.host_allocator)"`. `GENRL_JAX_MALLOC=system` keeps the
C library's allocator.
"""

from __future__ import annotations

import os
import shlex
import sys

ENV = "GENRL_JAX_MALLOC"
_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64",
             "/usr/lib", "/usr/local/lib")


def find_tcmalloc() -> str | None:
  """The path of an installed tcmalloc shared library, or None."""
  for name in ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"):
    for directory in _LIB_DIRS:
      path = os.path.join(directory, name)
      if os.path.exists(path):
        return path
  return None


def _mode() -> str:
  mode = os.environ.get(ENV, "tcmalloc")
  if mode not in ("tcmalloc", "system"):
    raise ValueError(f"{ENV}={mode!r}: expected 'tcmalloc' (the default) or 'system'")
  return mode


def preload_environment(environ: dict[str, str] | None = None) -> dict[str, str] | None:
  """The environment to restart with, or None when nothing is to change (tcmalloc is
  already loaded, not installed, not wanted, or the OS is not Linux)."""
  environ = dict(os.environ if environ is None else environ)
  if _mode() == "system" or not sys.platform.startswith("linux"):
    return None
  preloaded = environ.get("LD_PRELOAD", "")
  if "tcmalloc" in preloaded:
    return None
  path = find_tcmalloc()
  if path is None:
    return None
  environ["LD_PRELOAD"] = f"{path} {preloaded}".strip()
  # tcmalloc reports every allocation above 1 GiB on stderr; XLA makes such ones each step.
  environ.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))
  environ.setdefault("TCMALLOC_RELEASE_RATE", "0")  # keep freed pages: the point of it all
  return environ


def reexec_with_tcmalloc() -> None:
  """Restarts this command (same interpreter, options and arguments) under tcmalloc, when
  `preload_environment()` says so; otherwise returns and nothing changes. Call it before
  anything else runs: the process is replaced."""
  environ = preload_environment()
  if environ is not None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, environ)


def shell_exports() -> str:
  """`export NAME=value` lines for what `preload_environment()` changes (empty if nothing),
  for shells: `eval "$(python -m genrl_jax.host_allocator)"`."""
  environ = preload_environment()
  if environ is None:
    return ""
  return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in environ.items()
                   if os.environ.get(k) != v)


if __name__ == "__main__":
  try:
    print(shell_exports())
  except ValueError as e:
    sys.exit(f"error: {e}")
