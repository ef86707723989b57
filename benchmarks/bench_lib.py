"""What the benchmarks share: the device and host they ran on, peak memory, compilation
counts and timed calls of a jitted step.

Nothing here imports a simulator (dm_control, MuJoCo), TensorFlow or transformers: the
benchmarks and `scripts/accelerator_check.py` run on accelerator machines that lack them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
import statistics
import threading
import time
from typing import Any, Callable, Iterator, Sequence

import jax

# jax.monitoring events of one compilation (jax/_src/dispatch.py). The lowering event fires
# for every new program, also when the persistent compilation cache then spares the
# backend compile, so it is the one counted as "a compilation".
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_COMPILE_EVENTS = (TRACE_EVENT, LOWER_EVENT, BACKEND_COMPILE_EVENT)


@dataclasses.dataclass
class CompileWindow:
  """The compilation events seen while a `compile_events()` block ran."""
  lowerings: int = 0
  backend_compiles: int = 0
  traces: int = 0
  seconds: float = 0.0  # tracing + lowering + backend compile, summed

  @property
  def compiles(self) -> int:
    """New programs: lowerings (backend compiles too, should a lowering go unreported)."""
    return max(self.lowerings, self.backend_compiles)


_windows: list[CompileWindow] = []
_windows_lock = threading.Lock()
_listener_registered = False


def _on_event(event: str, duration_secs: float, **_: Any) -> None:
  if event not in _COMPILE_EVENTS:
    return
  with _windows_lock:
    for window in _windows:
      window.seconds += duration_secs
      if event == LOWER_EVENT:
        window.lowerings += 1
      elif event == BACKEND_COMPILE_EVENT:
        window.backend_compiles += 1
      else:
        window.traces += 1


@contextlib.contextmanager
def compile_events() -> Iterator[CompileWindow]:
  """Counts the compilations (and their seconds) of everything JAX runs in the block, in
  any thread. jax.monitoring listeners cannot be removed, so one is registered per process
  and feeds the open windows."""
  global _listener_registered
  with _windows_lock:
    if not _listener_registered:
      jax.monitoring.register_event_duration_secs_listener(_on_event)
      _listener_registered = True
    window = CompileWindow()
    _windows.append(window)
  try:
    yield window
  finally:
    with _windows_lock:
      _windows.remove(window)


def jit_cache_size(fn: Any) -> int | None:
  """Entries in a jitted function's cache (a private attribute: None where it is gone)."""
  size = getattr(fn, "_cache_size", None)
  try:
    return int(size()) if callable(size) else None
  except Exception:  # pylint: disable=broad-except
    return None


@dataclasses.dataclass
class StepTiming:
  """`time_jitted_calls`' figures, seconds."""
  first_call_s: float  # compile + the first call
  compile_s: float  # tracing + lowering + backend compile of the first call
  times_s: list[float]  # the timed calls
  compiles_first: int  # programs compiled by the first call
  recompiles: int  # programs compiled by the later calls: 0 when shapes are stable
  jit_cache_entries: int | None  # the jitted function's cache after all calls

  @property
  def median_s(self) -> float:
    return statistics.median(self.times_s)


def time_jitted_calls(fn: Callable[..., Any], call: Callable[[Any, int], Any], carry: Any,
                      iters: int, warmup: int = 0) -> tuple[Any, StepTiming]:
  """Calls `carry = call(carry, i)` once (compiling `fn`), `warmup` times untimed, then
  `iters` times timed, each to completion (`jax.block_until_ready` of the carry).

  `fn` is the jitted function `call` runs (for its cache size). Compilations are counted
  over the first call and over all later ones: a later one means the step recompiles
  (shapes, dtypes, shardings or static arguments changing from call to call).
  """
  if iters < 1 or warmup < 0:
    raise ValueError(f"iters={iters} must be >= 1 and warmup={warmup} >= 0")
  with compile_events() as first:
    t0 = time.perf_counter()
    carry = jax.block_until_ready(call(carry, 0))
    first_call_s = time.perf_counter() - t0
  times = []
  with compile_events() as later:
    for i in range(1, 1 + warmup + iters):
      t0 = time.perf_counter()
      carry = jax.block_until_ready(call(carry, i))
      if i > warmup:
        times.append(time.perf_counter() - t0)
  return carry, StepTiming(first_call_s=first_call_s, compile_s=first.seconds, times_s=times,
                           compiles_first=first.compiles, recompiles=later.compiles,
                           jit_cache_entries=jit_cache_size(fn))


def device_info() -> dict[str, Any]:
  """Backend, device kind and count, JAX version, CPU count and the 1-minute load average
  (other processes on the CPUs slow the CPU figures down)."""
  return {
      "jax": jax.__version__,
      "backend": jax.default_backend(),
      "device_kind": jax.devices()[0].device_kind,
      "device_count": jax.device_count(),
      "cpu_count": os.cpu_count(),
      "load_average_1min": round(os.getloadavg()[0], 2),
  }


def peak_memory() -> dict[str, Any]:
  """The peak memory so far: the devices' largest `peak_bytes_in_use` (GPU/TPU; None on
  CPU, whose backend keeps no such count) and this process's peak RSS, both MiB and both
  cumulative over the process. `kind` names the one that measures the step: `device` on
  accelerators, `host_rss` on CPU."""
  stats = [d.memory_stats() or {} for d in jax.local_devices()]
  peaks = [s["peak_bytes_in_use"] for s in stats if s.get("peak_bytes_in_use")]
  device = max(peaks) / 2**20 if peaks else None
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
  return {"kind": "device" if device is not None else "host_rss",
          "device_peak_mib": None if device is None else round(device, 1),
          "host_peak_rss_mib": round(rss, 1)}


def memory_text(memory: dict[str, Any]) -> str:
  if memory["device_peak_mib"] is not None:
    return (f"device peak {memory['device_peak_mib']:.0f} MiB (host peak RSS "
            f"{memory['host_peak_rss_mib']:.0f} MiB)")
  return f"host peak RSS {memory['host_peak_rss_mib']:.0f} MiB"


def allocator() -> str:
  return "tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else "system malloc"


def fmt_seconds(values: Sequence[float]) -> str:
  return ", ".join(f"{t:.3f}" for t in values)
