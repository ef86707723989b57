"""The results table of a workdir: one row per evaluated behaviour (Markdown and CSV).

Rows come from `<workdir>/behavior/<name>/eval.json` (written by the eval stage) and
`eval_<task>.json` (the behaviour played in another task: a cross-task control), sorted
by task then behaviour name. The prompt_kind column says what the behaviour was asked with
(`text`, `video`, `video (dataset clip)`: a clip cut from the run's own episodes, or
`embedding`), the prompt column what exactly (`text: "..."`, `video: file.gif`, ...) and the
VLM column the embedder that turned it into an embedding, so rows made with a stand-in VLM
(`random-projection`, `clip:random-weights(...)`) are marked as such.

The learning report's columns: the random policy's mean/std return (`random_source` says
how it was measured), `beats_random` (mean return > random mean + 2 std), the decoded
prompt target's per-pixel MSE against the prompt clip next to the MSE of the training
episodes' mean frame against the same clip, and the MFWM's open-loop MSE next to the mean
frame's (`open_loop_split`: on held-out or training episodes).

The imagination gap's columns (`behavior/latent_gap.py`): GenRL's reward, the one the
behaviour was trained on, of the evaluation episodes as the world model filters them
(`latent_reward`), of the model's rollouts of the episodes' own actions
(`replayed_latent_reward`) and of the actor's imagined rollouts (`imagined_latent_reward`)
from the same states, and the first two for random-policy episodes of the task from the
run's dataset (`dataset_latent_reward`, `dataset_replayed_latent_reward`).

`mfwm_fingerprint`: the first 12 hex of the fingerprint of the MFWM the behaviour learned
in (`train.checkpoints.params_fingerprint`); the open-loop columns are left empty when
`mfwm/open_loop.json` scored another MFWM (one trained again after the behaviour).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from typing import Any

from genrl_jax import files

COLUMNS = ("task", "behavior", "prompt_kind", "prompt", "vlm", "start", "episodes", "mean_return",
           "std_return", "normalized_score", "checkpoint_step",
           # The learning report (stages/evaluation.py, report/open_loop.py).
           "random_mean_return", "random_std_return", "random_source", "beats_random",
           "prompt_target_mse", "prompt_mean_frame_mse", "open_loop_mse",
           "open_loop_mean_frame_mse", "open_loop_split",
           # The imagination gap (behavior/latent_gap.py).
           "latent_reward", "replayed_latent_reward", "imagined_latent_reward",
           "dataset_latent_reward", "dataset_replayed_latent_reward",
           # Which MFWM (checkpoints.params_fingerprint, 12 hex): rows of two runs with the
           # same fingerprint were computed in the same model, bit for bit.
           "mfwm_fingerprint")


def read_results(workdir: str) -> list[dict[str, Any]]:
  """The eval.json contents of every evaluated behaviour of `workdir`, sorted."""
  rows = []
  for path in glob.glob(os.path.join(workdir, "behavior", "*", "eval*.json")):
    with open(path) as f:
      rows.append(json.load(f))
  return sorted(rows, key=lambda r: (r.get("task", ""), r.get("behavior", "")))


def _cell(value: Any) -> str:
  if value is None:
    return ""
  if isinstance(value, bool):
    return "yes" if value else "no"
  if isinstance(value, float):
    if value != 0 and abs(value) < 0.01:
      return f"{value:.5f}"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
  return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
  lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  for row in rows:
    cells = [_cell(row.get(c)).replace("|", "\\|") for c in COLUMNS]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def csv_table(rows: list[dict[str, Any]], columns: tuple[str, ...] = COLUMNS) -> str:
  """`rows` as CSV with the header `columns` (missing values empty, other keys dropped)."""
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
  writer.writeheader()
  for row in rows:
    writer.writerow({c: row.get(c) for c in columns})
  return out.getvalue()


def write_results(workdir: str) -> list[dict[str, Any]]:
  """Writes `<workdir>/results.md` and `results.csv`; returns the rows."""
  rows = read_results(workdir)
  beats = sum(bool(r.get("beats_random")) for r in rows)
  note = ("Normalised score = (return - random) / (expert - random) with the paper's "
          "bounds; empty where the task has none. beats_random: the mean return is above "
          "the random policy's mean + 2 std. MSEs are per pixel on [0, 1]; a model that "
          "draws only the background scores about its mean-frame baseline.\n\n"
          f"{beats} of {len(rows)} behaviours beat the random policy by 2 std.\n\n")
  # Atomic with unique temporaries: eval jobs of a sweep may write at once.
  files.write_text(os.path.join(workdir, "results.md"),
                f"# Results ({len(rows)} behaviours)\n\n{note}{markdown_table(rows)}")
  files.write_text(os.path.join(workdir, "results.csv"), csv_table(rows))
  return rows
