"""Loading experiment configs given as `path/to/config.py[:arg]` (ml_collections style), and
the per-task configs of a run's behaviours (`task_configs`, `behavior_name`, `behavior_seed`).

`configs/stickman.py` is resolved against the working directory first and then against
the repository's `experiments/` folder, so `--config=configs/stickman.py` works from the
repository root as documented.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import sys

import ml_collections

EXPERIMENTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "experiments")


# Config keys that moved: old dotted key -> new. A command line or a workdir's saved config
# that uses an old key keeps its meaning (`rename_flags`, `upgrade_saved_config`).
RENAMED_KEYS = {f"vlm.{k}": f"vlm.internvideo2.{k}"
                for k in ("tokenizer", "dtype", "size", "size_overrides")}


def rename_flags(argv: list[str]) -> list[str]:
  """`--config.<old key>[=value]` -> `--config.<new key>[=value]` for `RENAMED_KEYS`,
  saying so on stderr; other arguments unchanged."""
  out = []
  for arg in argv:
    for old, new in RENAMED_KEYS.items():
      flag = f"--config.{old}"
      if arg == flag or arg.startswith(flag + "="):
        print(f"warning: {flag} is now --config.{new}", file=sys.stderr)
        arg = f"--config.{new}" + arg[len(flag):]
        break
    out.append(arg)
  return out


def check_override_keys(argv: list[str]) -> None:
  """Refuses `--config.<key>=...` flags whose key the config does not have, in one line
  (absl would end in a traceback). `argv` holds `--config=<file>[:variant]` (resolved).

  Raises:
    ValueError: naming the flag, the config and the nearest keys it does have.
  """
  spec = next((a[len("--config="):] for a in argv if a.startswith("--config=")), None)
  overrides = [a[len("--config."):].split("=", 1)[0] for a in argv
               if a.startswith("--config.")]
  if spec is None or not overrides:
    return
  config = load_config(spec)
  for key in overrides:
    node, parts = config, key.split(".")
    for i, part in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        parent = ".".join(parts[:i])
        known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        raise ValueError(
            f"--config.{key}: the config {os.path.basename(spec)} has no key "
            f"{key!r}" + (f"; {parent or 'the top level'} has {', '.join(known)}"
                          if known else f" ({parent} is not a group)"))
      node = node[part]


def upgrade_saved_config(saved: dict) -> dict:
  """A config dict saved before keys moved (`RENAMED_KEYS`), with them in their new places
  (a copy; an up-to-date dict comes back equal)."""
  saved = copy.deepcopy(saved)
  for old, new in RENAMED_KEYS.items():
    *old_path, old_leaf = old.split(".")
    node = saved
    for part in old_path:
      node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or old_leaf not in node:
      continue
    value = node.pop(old_leaf)
    *new_path, new_leaf = new.split(".")
    target = saved
    for part in new_path:
      target = target.setdefault(part, {})
    target.setdefault(new_leaf, value)
  return saved


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


def behavior_name(config: ml_collections.ConfigDict) -> str:
  return config.behavior.name or config.task


def task_configs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """One config per behaviour task: `config.tasks` (empty: `config.task` alone), each with
  `task` set. Several tasks use their own default prompts and names, so
  `behavior.prompt.*` and `behavior.name` must then be empty."""
  tasks = list(config.tasks) or [config.task]
  if len(tasks) > 1:
    p = config.behavior.prompt
    if p.text or p.video or p.embedding or config.behavior.name:
      raise ValueError(f"config.tasks lists {len(tasks)} tasks {tasks}; a custom prompt "
                       "(behavior.prompt.*) or behavior.name applies to one task: name it "
                       f"with --config.tasks=\"('{tasks[0]}',)\" (or another task)")
  out = []
  for task in tasks:
    c = ml_collections.ConfigDict(config.to_dict())
    c.task = task
    out.append(c)
  return out


def behavior_seed(config: ml_collections.ConfigDict) -> int:
  """`behavior.seed` (which follows `config.seed` unless set; -1, its earlier default, still
  means `config.seed`). Behaviour settings may change between runs in one workdir, so
  several seeds can learn in one MFWM."""
  return config.behavior.seed if config.behavior.seed >= 0 else config.seed
