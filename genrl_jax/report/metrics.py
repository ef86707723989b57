"""Metric writing: one JSON line per logged step (`metrics.jsonl`) and a concise console line.

Only process 0 writes (every process of a job computes the same replicated metrics).
Several jobs may share a workdir (a sweep's behaviours): each line is appended with one
`write` on an `O_APPEND` descriptor, so lines of concurrent writers never interleave.
"""

from __future__ import annotations

import json
import os
import time
from typing import Mapping

import jax
import numpy as np
from absl import logging


class MetricWriter:
  """Appends `{"step": n, "stage": s, **scalars}` lines to `<workdir>/metrics.jsonl`."""

  def __init__(self, workdir: str, stage: str):
    self.stage = stage
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._active = jax.process_index() == 0
    self._last_time: float | None = None
    self._last_step: int | None = None

  def write(self, step: int, metrics: Mapping[str, float]) -> dict[str, float]:
    scalars = {k: float(np.asarray(v)) for k, v in metrics.items()}
    now = time.perf_counter()
    if self._last_time is not None and step > self._last_step:
      scalars["steps_per_second"] = (step - self._last_step) / (now - self._last_time)
    self._last_time, self._last_step = now, step
    if self._active:
      line = json.dumps({"step": step, "stage": self.stage, **scalars}) + "\n"
      fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
      try:
        os.write(fd, line.encode())
      finally:
        os.close(fd)
      shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(scalars.items()))
      logging.info("[%s] step %d: %s", self.stage, step, shown)
    return scalars


def read_metrics(workdir: str, stage: str | None = None) -> list[dict[str, float]]:
  """All metric lines of a workdir (optionally of one stage), in file order."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [r for r in rows if stage is None or r.get("stage") == stage]
