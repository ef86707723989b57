"""Loading experiment configs given as `path/to/config.py[:arg]` (ml_collections style).

`configs/stickman.py` is resolved against the working directory first and then against
the repository's `experiments/` folder, so `--config=configs/stickman.py` works from the
repository root as documented.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import ml_collections

EXPERIMENTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "experiments")


def resolve_config_path(spec: str) -> str:
  """`configs/x.py:arg` -> `/abs/.../experiments/configs/x.py:arg` when not found as given."""
  path, sep, arg = spec.partition(":")
  if not os.path.exists(path):
    candidate = os.path.join(EXPERIMENTS_DIR, path)
    if os.path.exists(candidate):
      path = candidate
    else:
      raise FileNotFoundError(f"config file {path!r} not found (looked in {os.getcwd()} and "
                              f"{EXPERIMENTS_DIR}); available: {available_configs()}")
  return os.path.abspath(path) + sep + arg


def available_configs() -> list[str]:
  folder = os.path.join(EXPERIMENTS_DIR, "configs")
  if not os.path.isdir(folder):
    return []
  return sorted(f"configs/{n}" for n in os.listdir(folder)
                if n.endswith(".py") and n != "base.py" and not n.startswith("_"))


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Imports the config file of `spec` and returns `get_config(arg)`, locked."""
  path, _, arg = resolve_config_path(spec).partition(":")
  if EXPERIMENTS_DIR not in sys.path:
    sys.path.insert(0, EXPERIMENTS_DIR)  # Config files import `configs.base`.
  module_spec = importlib.util.spec_from_file_location("genrl_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  config.lock()
  return config


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
  """A JSON-compatible dict (tuples become lists)."""
  return json.loads(config.to_json())
