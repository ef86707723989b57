"""Metric writing: one JSON line per logged step (`metrics.jsonl`), TensorBoard scalars and
videos (`<workdir>/tensorboard/<stage>/`, `report/tensorboard.py`) and a concise console
line.

Only process 0 writes (every process of a job computes the same replicated metrics).
Several jobs may share a workdir (a sweep's behaviours): each line is appended with one
`write` on an `O_APPEND` descriptor, so lines of concurrent writers never interleave.

Besides the given metrics, each line holds `steps_per_second` (since the previous line)
and the memory in use: `device_memory_mib` and `device_peak_memory_mib` (the first local
device's allocator, on GPU and TPU), or `host_peak_rss_mib` (this process's peak resident
memory) where the device reports no statistics (CPU).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Mapping

import jax
import numpy as np
from absl import logging

from genrl_jax.report import tensorboard

MIB = 1 << 20


def memory_metrics() -> dict[str, float]:
  """The memory in use, in MiB: device allocator statistics when there are, else the
  host's peak resident set size (keys say which)."""
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except; backends without statistics raise.
    stats = None
  if stats and "bytes_in_use" in stats:
    out = {"device_memory_mib": stats["bytes_in_use"] / MIB}
    if "peak_bytes_in_use" in stats:
      out["device_peak_memory_mib"] = stats["peak_bytes_in_use"] / MIB
    return out
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  # ru_maxrss is in KiB on Linux, in bytes on macOS.
  return {"host_peak_rss_mib": peak / (MIB if sys.platform == "darwin" else 1024)}


class MetricWriter:
  """Appends `{"step": n, "stage": s, **scalars}` lines to `<workdir>/metrics.jsonl` and
  writes the same scalars to TensorBoard. `close()` (or a `with` block) flushes and closes
  the TensorBoard file; a write after it opens a new one."""

  def __init__(self, workdir: str, stage: str):
    self.workdir = workdir
    self.stage = stage
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._active = jax.process_index() == 0
    self._last_time: float | None = None
    self._last_step: int | None = None
    self.tensorboard = tensorboard.TensorBoardWriter(workdir, stage)

  def write(self, step: int, metrics: Mapping[str, float]) -> dict[str, float]:
    scalars = {k: float(np.asarray(v)) for k, v in metrics.items()}
    now = time.perf_counter()
    if self._last_time is not None and step > self._last_step:
      scalars["steps_per_second"] = (step - self._last_step) / (now - self._last_time)
    self._last_time, self._last_step = now, step
    scalars.update(memory_metrics())
    if self._active:
      line = json.dumps({"step": step, "stage": self.stage, **scalars}) + "\n"
      fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
      try:
        os.write(fd, line.encode())
      finally:
        os.close(fd)
      self.tensorboard.scalars(step, scalars)
      shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(scalars.items()))
      logging.info("[%s] step %d: %s", self.stage, step, shown)
    return scalars

  def video(self, tag: str, step: int, frames: np.ndarray, duration_ms: int = 100) -> None:
    """uint8 `frames (T, H, W, 3)` to TensorBoard as an animated GIF (process 0)."""
    self.tensorboard.video(tag, step, frames, duration_ms)

  def flush(self) -> None:
    self.tensorboard.flush()

  def close(self) -> None:
    self.tensorboard.close()

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def read_metrics(workdir: str, stage: str | None = None) -> list[dict[str, float]]:
  """All metric lines of a workdir (optionally of one stage), in file order."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [r for r in rows if stage is None or r.get("stage") == stage]
