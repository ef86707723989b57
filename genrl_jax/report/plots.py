"""Learning curves: one PNG per stage of `metrics.jsonl`, one subplot per metric; and the
learning report's figure (`plot_results`): returns against the random policy, and the
model's errors against the mean-frame baseline.

Drawn with matplotlib's Agg canvas on a `Figure` (not pyplot), so no global backend is
set and nothing needs a display. `<workdir>/plots/<stage>.png` is replaced atomically.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np
from absl import logging

from genrl_jax import files
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


def _figure(width: float, height: float):
  # Imported on use: matplotlib takes a while to import.
  # pylint: disable-next=g-import-not-at-top
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(width, height), dpi=80, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def _save(fig, path: str) -> None:
  files.write_with(path, lambda tmp: fig.savefig(tmp, format="png"))


def plot_results(rows: list[dict], path: str) -> None:
  """The learning report of `rows` (results-table rows, `report/results.py`) as the PNG
  `path`: per behaviour, its mean return +- std next to the random policy's (with the
  mean + 2 std bar it must clear), and the prompt target's and the MFWM's open-loop MSE
  next to their mean-frame baselines."""
  if not rows:
    raise ValueError("no evaluated behaviours to plot")
  fig = _figure(4 + 0.9 * len(rows), 6)
  ax = fig.add_subplot(2, 1, 1)
  x = np.arange(len(rows))
  get = lambda key: np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])
  ax.bar(x - 0.2, get("mean_return"), 0.4, yerr=get("std_return"), label="behaviour")
  ax.bar(x + 0.2, get("random_mean_return"), 0.4, yerr=get("random_std_return"),
         label="random policy", color="grey")
  bar = get("random_mean_return") + 2 * get("random_std_return")
  ax.hlines(bar, x - 0.4, x + 0.4, colors="red", linestyles="dashed", label="random + 2 std")
  ax.set_xticks(x, [r.get("behavior", r.get("task", "")) for r in rows], rotation=20,
                fontsize=7, ha="right")
  ax.set_ylabel("episode return")
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3, axis="y")
  ax = fig.add_subplot(2, 1, 2)
  pairs = [(f"prompt target\n{r.get('behavior', '')}", r.get("prompt_target_mse"),
            r.get("prompt_mean_frame_mse")) for r in rows]
  pairs.append(("MFWM open loop", rows[0].get("open_loop_mse"),
                rows[0].get("open_loop_mean_frame_mse")))
  x = np.arange(len(pairs))
  value = lambda v: np.nan if v is None else float(v)
  ax.bar(x - 0.2, [value(p[1]) for p in pairs], 0.4, label="model")
  ax.bar(x + 0.2, [value(p[2]) for p in pairs], 0.4, label="mean frame", color="grey")
  ax.set_xticks(x, [p[0] for p in pairs], rotation=20, fontsize=7, ha="right")
  ax.set_ylabel("per-pixel MSE")
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3, axis="y")
  _save(fig, path)


def plot_stage(rows: list[dict], path: str, title: str) -> None:
  """Writes the learning curves of `rows` (metric lines of one stage) to the PNG `path`."""
  from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
  curves = _curves(rows)
  if not curves:
    raise ValueError(f"no numeric metrics to plot for {title}")
  cols = min(COLUMNS, len(curves))
  nrows = math.ceil(len(curves) / cols)
  fig = _figure(4 * cols, 2.8 * nrows)
  for i, (key, (steps, values)) in enumerate(curves.items()):
    ax = fig.add_subplot(nrows, cols, i + 1)
    ax.plot(steps, values, marker="." if len(steps) < 50 else None, linewidth=1)
    ax.set_title(key, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
  fig.suptitle(title)
  _save(fig, path)


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


def write_learning_curves(workdir: str, stage: str) -> None:
  """`plot_learning_curves(workdir, stage)` on process 0; a failure is logged, never
  raised: a plot is not worth a training run."""
  if jax.process_index() != 0:
    return
  try:
    plot_learning_curves(workdir, stage)
  except Exception:  # pylint: disable=broad-except
    logging.warning("[%s] could not plot the learning curves", stage, exc_info=True)
