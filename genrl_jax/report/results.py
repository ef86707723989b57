"""The results table of a workdir: one row per evaluated behaviour (Markdown and CSV).

`results.md` opens with a summary (`SUMMARY_HEADER`: returns next to the random policy's,
the normalised score and the model's image errors as ratios to the mean frame's), then the
notes and one details table per behaviour; `results.csv` holds every column of `COLUMNS`.
`run_summary` is what the main job prints when it ends: the summary and the GIF paths.

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
from typing import Any, Callable

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


# The summary at the top of results.md (and printed at the end of the main job): one row
# per evaluated behaviour, the figures a reader checks first; every column of COLUMNS is in
# results.csv and in the details below the summary.
SUMMARY_HEADER = ("task", "behavior", "start", "return +- std", "random +- std",
                  "beats random", "normalised", "prompt target / mean frame",
                  "open loop / mean frame")


def read_results(workdir: str) -> list[dict[str, Any]]:
  """The eval.json contents of every evaluated behaviour of `workdir`, sorted.

  Each row also carries `eval_file`, the JSON's path relative to `workdir` (not a column).
  """
  rows = []
  for path in glob.glob(os.path.join(workdir, "behavior", "*", "eval*.json")):
    with open(path) as f:
      row = json.load(f)
    row["eval_file"] = os.path.relpath(path, workdir)
    rows.append(row)
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


def markdown_table(rows: list[dict[str, Any]], columns: tuple[str, ...] = COLUMNS,
                   cell: Callable[[Any], str] = _cell) -> str:
  """`rows` as a Markdown table with the header `columns` (`cell` formats each value)."""
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  for row in rows:
    cells = [cell(row.get(c)).replace("|", "\\|") for c in columns]
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


def _plus_minus(mean: Any, std: Any) -> str:
  return "" if mean is None else f"{_cell(float(mean))} +- {_cell(float(std or 0.0))}"


def _ratio(value: Any, baseline: Any) -> str:
  """`value / baseline` to 2 decimals ("" when either is missing or the baseline is 0)."""
  if value is None or not baseline:
    return ""
  return f"{float(value) / float(baseline):.2f}"


def summary_row(row: dict[str, Any]) -> dict[str, str]:
  """One results row -> the cells of `SUMMARY_HEADER`."""
  return dict(zip(SUMMARY_HEADER, (
      _cell(row.get("task")), _cell(row.get("behavior")), _cell(row.get("start")),
      _plus_minus(row.get("mean_return"), row.get("std_return")),
      _plus_minus(row.get("random_mean_return"), row.get("random_std_return")),
      _cell(row.get("beats_random")), _cell(row.get("normalized_score")),
      _ratio(row.get("prompt_target_mse"), row.get("prompt_mean_frame_mse")),
      _ratio(row.get("open_loop_mse"), row.get("open_loop_mean_frame_mse")))))


def summary_table(rows: list[dict[str, Any]]) -> str:
  """The summary of `rows` as a Markdown table of the `SUMMARY_HEADER` columns."""
  return markdown_table([summary_row(r) for r in rows], SUMMARY_HEADER, cell=str)


def details(rows: list[dict[str, Any]]) -> str:
  """Every column of each row, one two-column table per behaviour (Markdown)."""
  parts = []
  for row in rows:
    shown = [{"column": c, "value": row.get(c)} for c in COLUMNS if row.get(c) is not None]
    parts.append(f"### {row.get('task')}, behaviour {row.get('behavior')}\n\n"
                 + markdown_table(shown, ("column", "value")))
  return "\n".join(parts)


def videos(workdir: str, rows: list[dict[str, Any]]) -> list[str]:
  """Paths (relative to `workdir`) of the run's GIFs that exist: the MFWM's open loop,
  then per row its prompt clip, decoded prompt target and evaluation episode."""
  paths = [os.path.join("mfwm", "open_loop.gif")]
  for row in rows:
    directory = os.path.dirname(row.get("eval_file", ""))
    name = os.path.basename(row.get("eval_file", "eval.json"))
    paths += [os.path.join("prompts", f"{row.get('task')}.gif"),
              os.path.join(directory, "prompt_target.gif"),
              # eval.json -> eval_episode.gif, eval_<task>.json -> eval_episode_<task>.gif
              os.path.join(directory, "eval_episode" + name[len("eval"):-len(".json")] + ".gif")]
  return [p for p in dict.fromkeys(paths) if os.path.exists(os.path.join(workdir, p))]


def run_summary(workdir: str) -> str:
  """What the main job prints when it ends: the summary table and where its files are."""
  rows = read_results(workdir)
  if not rows:
    return f"No evaluated behaviours in {workdir}."
  beats = sum(bool(r.get("beats_random")) for r in rows)
  lines = [f"{beats} of {len(rows)} behaviours beat the random policy by 2 std "
           f"({os.path.join(workdir, 'results.md')}):", "", summary_table(rows), "Videos:"]
  lines += [f"  {os.path.join(workdir, p)}" for p in videos(workdir, rows)]
  return "\n".join(lines)


def write_results(workdir: str) -> list[dict[str, Any]]:
  """Writes `<workdir>/results.md` (summary, notes, details) and `results.csv`; returns
  the rows."""
  rows = read_results(workdir)
  beats = sum(bool(r.get("beats_random")) for r in rows)
  note = ("return: mean +- std over the evaluation episodes; random: the uniform random "
          "policy on the same environment seeds; beats random: the mean return is above "
          "the random mean + 2 std. normalised = (return - random) / (expert - random) "
          "with the paper's bounds, empty where the task has none. The last two columns "
          "are the per-pixel MSE (on [0, 1]) of the decoded prompt target against the "
          "prompt clip and of the MFWM's open-loop predictions on held-out episodes, each "
          "divided by the MSE of the training episodes' mean frame: about 1 for a model "
          "that draws only the background, lower when it draws the body.\n\n")
  text = (f"# Results ({len(rows)} behaviours)\n\n"
          f"{beats} of {len(rows)} behaviours beat the random policy by 2 std.\n\n"
          f"{summary_table(rows)}\n{note}## Details\n\n{details(rows)}")
  # Atomic with unique temporaries: eval jobs of a sweep may write at once.
  files.write_text(os.path.join(workdir, "results.md"), text)
  files.write_text(os.path.join(workdir, "results.csv"), csv_table(rows))
  return rows
