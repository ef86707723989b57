"""experiments/notebook.ipynb is committed with its outputs. The test that executes it cell
by cell lives in `test_end_to_end.py`, beside the finished micro run it reads (its module
fixture `run`, built once for both); the helpers here serve both."""

from __future__ import annotations

import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "experiments", "notebook.ipynb")
MIN_IMAGES = 3  # batch frames, open loop, prompts, episode: at least three of them shown


def code_cells(notebook: dict) -> list[dict]:
  return [c for c in notebook["cells"] if c["cell_type"] == "code"]


def image_outputs(notebook: dict) -> int:
  """How many outputs of the notebook's code cells hold a PNG image."""
  return sum("image/png" in o.get("data", {}) for c in code_cells(notebook)
             for o in c.get("outputs", []))


def errors(notebook: dict) -> list[str]:
  """The `ename: evalue` of every error output."""
  return [f"{o.get('ename')}: {o.get('evalue')}" for c in code_cells(notebook)
          for o in c.get("outputs", []) if o.get("output_type") == "error"]


def files(directory: str) -> dict[str, tuple[int, int]]:
  """Every file under `directory`: relative path -> (size, modification time in ns)."""
  out = {}
  for parent, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(parent, name)
      stat = os.stat(path)
      out[os.path.relpath(path, directory)] = (stat.st_size, stat.st_mtime_ns)
  return out


def test_committed_notebook_has_outputs_and_images():
  with open(NOTEBOOK, encoding="utf-8") as f:
    notebook = json.load(f)
  cells = code_cells(notebook)
  assert cells
  unrun = [i for i, c in enumerate(cells)
           if not c.get("outputs") or c.get("execution_count") is None]
  assert not unrun, f"code cells {unrun} have no saved outputs: execute the notebook and save it"
  assert not errors(notebook)
  assert image_outputs(notebook) >= MIN_IMAGES
