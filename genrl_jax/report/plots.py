"""Learning curves: one PNG per stage of `metrics.jsonl`, one subplot per metric.

Drawn with matplotlib's Agg canvas on a `Figure` (not pyplot), so no global backend is
set and nothing needs a display. `<workdir>/plots/<stage>.png` is replaced atomically.
"""

from __future__ import annotations

import math
import os

import numpy as np

from genrl_jax.report import metrics as metrics_lib
from genrl_jax.report import tensorboard

COLUMNS = 4


def _curves(rows: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """`{metric: (steps, values)}` sorted by step; for a step logged twice (a run resumed
  from an earlier checkpoint logs it again) the later line wins."""
  by_step: dict[str, dict[int, float]] = {}
  for row in rows:
    for key, value in row.items():
      if key in ("step", "stage") or isinstance(value, bool) or not isinstance(
          value, (int, float)):
        continue
      by_step.setdefault(key, {})[int(row["step"])] = float(value)
  out = {}
  for key in sorted(by_step):
    steps = np.array(sorted(by_step[key]))
    out[key] = steps, np.array([by_step[key][s] for s in steps])
  return out


def plot_stage(rows: list[dict], path: str, title: str) -> None:
  """Writes the learning curves of `rows` (metric lines of one stage) to the PNG `path`."""
  # Imported on use: matplotlib takes a while to import.
  # pylint: disable-next=g-import-not-at-top
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
  curves = _curves(rows)
  if not curves:
    raise ValueError(f"no numeric metrics to plot for {title}")
  cols = min(COLUMNS, len(curves))
  nrows = math.ceil(len(curves) / cols)
  fig = Figure(figsize=(4 * cols, 2.8 * nrows), dpi=80, layout="constrained")
  FigureCanvasAgg(fig)
  for i, (key, (steps, values)) in enumerate(curves.items()):
    ax = fig.add_subplot(nrows, cols, i + 1)
    ax.plot(steps, values, marker="." if len(steps) < 50 else None, linewidth=1)
    ax.set_title(key, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
  fig.suptitle(title)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp.{os.getpid()}.png"
  fig.savefig(tmp, format="png")
  os.replace(tmp, path)


def plot_learning_curves(workdir: str, stage: str | None = None) -> list[str]:
  """Writes `<workdir>/plots/<stage>.png` for `stage` (default: every stage of
  `metrics.jsonl`); returns the paths written. A stage without lines gets no plot."""
  rows = metrics_lib.read_metrics(workdir, stage)
  stages = list(dict.fromkeys(r.get("stage", "") for r in rows))
  paths = []
  for name in stages:
    path = os.path.join(workdir, "plots", tensorboard.sanitize(name) + ".png")
    plot_stage([r for r in rows if r.get("stage", "") == name], path, name)
    paths.append(path)
  return paths
