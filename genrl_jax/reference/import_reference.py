"""Import a reference PyTorch snapshot as a genrl_jax workdir (`genrl_jax import-reference`).

`import_reference(snapshot, out)` reads a reference snapshot safely (`snapshot.py`: no torch,
nothing from the file executed), converts its MFWM (`wm.*`: world model, connector, aligner)
and behaviours with the converter table (`convert.py`), and writes into `out`:

  out/config.json               the run config, as `stages.workdir.prepare_workdir` writes it
  out/mfwm/<step>/              Orbax checkpoint of the MFWM, as the mfwm stage writes it:
                                items `state` (TrainState: step = the snapshot's
                                `_global_step`, params, a fresh optimizer state) and `config`
  out/imported_behavior/<step>/ Orbax checkpoint of the snapshot's actor-critics (when
                                present): state `{'imag_behavior', 'acting_behavior'}`, each
                                `{'actor', 'critic', 'target_critic', 'return_ema'}`
  out/reference_import.json     what was imported, from where, and the command that continues

`next_commands` gives the exact `experiments/main.py` command lines that continue (printed by
`genrl_jax import-reference` and kept in `reference_import.json`): a behaviour for the
snapshot's task from its text prompt, from data-free starts (the import holds no episodes),
then its evaluation. They name the InternVideo2 checkpoint the prompts need: the file given
with `--vlm-model`, else the official file name next to the snapshot.
The sizes come from the tensor shapes; without a config the domain's config file is loaded
and given those sizes, with one they are checked against it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from genrl_jax import experiment_config
from genrl_jax import files
from genrl_jax import mfwm as mfwm_lib
from genrl_jax.reference import convert
from genrl_jax.reference import snapshot as snapshot_lib
from genrl_jax.train import checkpoints
from genrl_jax.train.state import TrainState
from genrl_jax.vlm import internvideo2

# Action sizes of the reference's domains (method.md §11), to guess the domain of a
# snapshot whose config does not name its task.
DOMAIN_ACTION_DIMS = {"stickman": 10, "walker": 6, "cheetah": 6, "quadruped": 12, "kitchen": 9}
WM_PREFIX, CONNECTOR_PREFIX = "wm.", "wm.connector."
BEHAVIOR_NAMES = {"_imag_behavior.": "imag_behavior", "_acting_behavior.": "acting_behavior"}
INFO_FILE = "reference_import.json"


class ReferenceImportError(ValueError):
  """The snapshot cannot be imported as asked (unmapped keys, sizes or config values)."""


def _agent_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """A whole agent's keys; a bare `agent.wm.state_dict()` gets its `wm.` prefix back."""
  own = ("wm.",) + tuple(BEHAVIOR_NAMES)
  if not any(k.startswith(own) for k in state_dict) and any(
      k.startswith(("encoder.", "rssm.", "heads.", "connector.")) for k in state_dict):
    return {WM_PREFIX + k: v for k, v in state_dict.items()}
  return dict(state_dict)


def _snapshot_discrete(snap: snapshot_lib.Snapshot) -> int | None:
  """Classes per latent variable, as the snapshot's RSSM or config records it."""
  value = snap.attributes.get("wm.rssm._discrete")
  if value is None:
    value = (snap.agent_config.get("rssm") or {}).get("discrete")
  return value if isinstance(value, int) and value > 0 else None


def expected_config_values(state_dict: Mapping[str, np.ndarray], discrete: int,
                           agent_config: Mapping[str, Any]) -> dict[str, Any]:
  """Config key -> the value the snapshot's tensors (and recorded options) require."""
  wm = convert.infer_world_model_sizes(state_dict, WM_PREFIX, discrete)
  values = {f"world_model.{k}": wm[k] for k in (
      "deter", "hidden", "stoch", "discrete", "cnn_depth", "encoder_kernels",
      "decoder_kernels", "mlp_units", "mlp_layers", "single_obs_posterior")}
  if any(k.startswith(CONNECTOR_PREFIX) for k in state_dict):
    conn = convert.infer_connector_sizes(state_dict, CONNECTOR_PREFIX, discrete)
    shared = [f"{k} {conn[k]} (world model {wm[k]})"
              for k in ("deter", "hidden", "stoch", "discrete") if conn[k] != wm[k]]
    if shared:
      raise ReferenceImportError(f"the snapshot's connector and world model differ in "
                                 f"{shared}; ours shares these sizes")
    values.update({"connector.embed_dim": conn["embed_dim"],
                   "connector.n_frames": conn["n_frames"]})
    options = agent_config.get("connector") or {}
    for name in ("rescale_embeds", "temporal_embeds"):
      if isinstance(options.get(name), bool):
        values[f"connector.{name}"] = options[name]
  for prefix in BEHAVIOR_NAMES:
    if any(k.startswith(prefix) for k in state_dict):
      b = convert.infer_behavior_sizes(state_dict, prefix)
      feat = wm["stoch"] * wm["discrete"] + wm["deter"]
      if b["feat_dim"] != feat or b["action_dim"] != wm["action_dim"]:
        raise ReferenceImportError(
            f"{prefix}actor reads {b['feat_dim']} features and gives {b['action_dim']} "
            f"actions; the world model has {feat} features and {wm['action_dim']} actions")
      values.update({"behavior.actor.units": b["actor_units"],
                     "behavior.actor.layers": b["actor_layers"],
                     "behavior.critic.units": b["critic_units"],
                     "behavior.critic.layers": b["critic_layers"]})
      break  # `_imag_behavior` first; both come from the same reference config
  return values


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def _same(a: Any, b: Any) -> bool:
  norm = lambda v: list(v) if isinstance(v, (tuple, list)) else v
  return norm(a) == norm(b)


def check_config(config: ml_collections.ConfigDict, values: Mapping[str, Any]) -> None:
  """Raises ReferenceImportError naming every config key that disagrees with the snapshot."""
  bad = [f"{k}: config {_get(config, k)!r}, snapshot {v!r}" for k, v in values.items()
         if not _same(_get(config, k), v)]
  if bad:
    raise ReferenceImportError(
        "the config does not match the snapshot: " + "; ".join(bad)
        + ". Give these values (e.g. --config.<key>=<value>) or no config.")


def _domain(snap: snapshot_lib.Snapshot, action_dim: int) -> tuple[str, str | None]:
  """(domain, task) from the snapshot's config, else from its action size."""
  task = snap.agent_config.get("task")
  available = {os.path.basename(c)[:-3] for c in experiment_config.available_configs()}
  if isinstance(task, str) and task.split("_")[0] in available:
    return task.split("_")[0], task
  guesses = [d for d, n in DOMAIN_ACTION_DIMS.items() if n == action_dim and d in available]
  if len(guesses) != 1:
    raise ReferenceImportError(
        f"cannot tell the domain of {snap.path} (no task in its config; {action_dim} "
        f"actions fits {guesses or 'no domain'}): give --config")
  return guesses[0], None


def build_config(snap: snapshot_lib.Snapshot, state_dict: Mapping[str, np.ndarray]
                 ) -> tuple[ml_collections.ConfigDict, str, dict[str, Any], list[str]]:
  """The domain's config with the snapshot's sizes.

  Returns (config, spec of the config file, the values set, warnings).
  """
  action_dim = convert.infer_world_model_sizes(state_dict, WM_PREFIX)["action_dim"]
  domain, task = _domain(snap, action_dim)
  spec = f"configs/{domain}.py"
  config = experiment_config.load_config(spec)
  discrete = _snapshot_discrete(snap) or config.world_model.discrete
  values = expected_config_values(state_dict, discrete, snap.agent_config)
  if task and task != config.task:
    values["task"] = task
  for key, value in values.items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = tuple(value) if isinstance(value, (list, tuple)) else value
  warnings = []
  if DOMAIN_ACTION_DIMS.get(domain, action_dim) != action_dim:
    warnings.append(f"the snapshot's world model has {action_dim} actions, {domain} tasks "
                    f"{DOMAIN_ACTION_DIMS[domain]}: it cannot act in {domain} environments")
  return config, spec, values, warnings


def _override_flags(values: Mapping[str, Any], spec: str) -> list[str]:
  """`--config.<key>=<value>` flags that turn the config file into the imported config."""
  base = experiment_config.load_config(spec)
  flags = []
  for key, value in values.items():
    if not _same(_get(base, key), value):
      text = f"({','.join(map(str, value))})" if isinstance(value, (list, tuple)) else value
      flags.append(f"--config.{key}={text}")
  return flags


def _shell_word(word: str) -> str:
  """`word` for a POSIX shell: as it is when plain, else in double quotes (escaped)."""
  if all(c.isalnum() or c in "-_=./:,+@%" for c in word):
    return word
  return '"' + "".join("\\" + c if c in '"\\$`' else c for c in word) + '"'


# The commands are printed to be run from the repository root (`experiments/main.py`).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _from_root(path: str) -> str:
  """`path` relative to the repository root when inside it (shorter, portable), else
  absolute."""
  path = os.path.abspath(path)
  relative = os.path.relpath(path, REPO_ROOT)
  return path if relative.startswith(os.pardir) else relative


def next_commands(spec: str, flags: list[str], out_dir: str, task: str,
                  vlm_model: str | None, can_act: bool = True
                  ) -> list[tuple[str, list[str]]]:
  """The command lines that continue from an imported workdir, as (what, argv) pairs.

  Args:
    spec: the config file the imported config is built from (`configs/<domain>.py`).
    flags: the `--config.<key>=<value>` flags that give it the snapshot's sizes.
    out_dir: the imported workdir (absolute).
    task: the behaviour task (the snapshot's).
    vlm_model: the InternVideo2 checkpoint for the prompts, or None (config without one).
    can_act: whether the world model's actions fit the task's environment (else no
      evaluation command).
  """
  common = ["python", "experiments/main.py", f"--config={spec}", *flags,
            f"--workdir={_from_root(out_dir)}", f"--config.tasks=('{task}',)",
            "--config.behavior.start=data_free"]
  if vlm_model:
    common.append(f"--config.vlm.model={_from_root(vlm_model)}")
  commands = [(f"learn a behaviour for {task} from its text prompt, from data-free starts",
               common + ["--mode=behavior"])]
  if can_act:
    commands.append((f"play it in {task} next to the random policy; writes "
                     f"{_from_root(out_dir)}/results.md", common + ["--mode=eval"]))
  return commands


def format_commands(commands: list[tuple[str, list[str]]]) -> str:
  """`next_commands` as shell lines, each after a `#` comment saying what it does."""
  return "\n".join(f"  # {what}\n  " + " ".join(_shell_word(w) for w in argv)
                   for what, argv in commands)


def _float32(tree: Any) -> Any:
  return jax.tree.map(lambda x: np.asarray(x, np.float32), tree)


def _check_tree(params: Any, expected: Any, what: str) -> None:
  have = jax.tree.map(lambda x: tuple(x.shape), params)
  want = jax.tree.map(lambda x: tuple(x.shape), expected)
  if have != want:
    raise ReferenceImportError(f"the imported {what} params do not fit the model the config "
                               f"builds; params {have}, model {want}")


def _check_out_dir(out_dir: str) -> None:
  if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
    raise FileExistsError(f"output directory {out_dir} exists and is not empty; the import "
                          "never writes into an existing run (give a new --out)")


def _write(tmp: str, config: ml_collections.ConfigDict, state: TrainState, step: int,
           behaviors: dict[str, Any], info: dict[str, Any]) -> None:
  config_dict = experiment_config.config_to_dict(config)
  meta = {"source": info["source"], "snapshot_metadata": info["snapshot_metadata"]}
  mfwm = checkpoints.Checkpointer(os.path.join(tmp, "mfwm"), save_every=config.mfwm.save_every,
                                  keep=config.mfwm.keep,
                                  config={**config_dict, "reference_import": meta})
  try:
    mfwm.save(step, state, force=True)
  finally:
    mfwm.close()
  if behaviors:
    ckpt = checkpoints.Checkpointer(os.path.join(tmp, "imported_behavior"), save_every=1,
                                    keep=1, config={**config_dict, "reference_import": meta})
    try:
      ckpt.save(step, jax.tree.map(jnp.asarray, behaviors), force=True)
    finally:
      ckpt.close()
  files.write_json(os.path.join(tmp, "config.json"), config_dict)
  files.write_json(os.path.join(tmp, INFO_FILE), info)


def import_reference(snapshot_path: str, out_dir: str,
                     config: ml_collections.ConfigDict | str | None = None,
                     step: int | None = None, vlm_model: str | None = None) -> str:
  """Imports a reference snapshot into a new workdir `out_dir` (layout in the module doc).

  Args:
    snapshot_path: a reference `.pt` (train.py snapshot, bare pickled agent or plain state
      dict) or an `.npz` of torch-layout arrays (`param/<key>` or bare keys).
    out_dir: must not exist or be empty; written all at once (a failed import leaves
      nothing there).
    config: a `configs/<domain>.py[:variant]` spec or a ConfigDict whose sizes must match
      the snapshot; None: the domain's config file (domain from the snapshot's task or its
      action size) given the snapshot's sizes.
    step: the MFWM checkpoint step; None: the snapshot's `_global_step` (0 if unknown).
    vlm_model: the InternVideo2 checkpoint the next commands name (it must exist); None:
      the official file name in the snapshot's folder (present or not).
  Returns:
    The absolute path of `out_dir`.
  Raises:
    FileExistsError: `out_dir` is not empty.
    snapshot_lib.SnapshotError: the file cannot be read safely.
    KeyError / ValueError (ReferenceImportError): missing or extra parameters (named), shapes or
      config keys that disagree (named).
  """
  out_dir = os.path.abspath(out_dir)
  _check_out_dir(out_dir)
  if vlm_model is not None and not os.path.isfile(vlm_model):
    raise FileNotFoundError(f"--vlm-model={vlm_model} is not a file: give the InternVideo2 "
                            f"checkpoint ({internvideo2.OFFICIAL_CHECKPOINT}.pt)")
  snap = snapshot_lib.load_snapshot(snapshot_path)
  state_dict = _agent_state_dict(snap.state_dict)
  extra = convert.unmapped_agent_keys(state_dict)
  if extra:
    raise ReferenceImportError(f"{snapshot_path}: parameters that no conversion rule maps: "
                               f"{extra}")
  if not any(k.startswith(WM_PREFIX) for k in state_dict):
    raise ReferenceImportError(f"{snapshot_path}: no world-model parameters (wm.*) found")
  params = _float32(convert.torch_mfwm_to_flax(state_dict, WM_PREFIX)
                    if any(k.startswith(CONNECTOR_PREFIX) for k in state_dict) else
                    {"world_model": convert.torch_world_model_to_flax(state_dict, WM_PREFIX)})
  behaviors = {name: _float32(convert.torch_behavior_to_flax(state_dict, prefix))
               for prefix, name in BEHAVIOR_NAMES.items()
               if any(k.startswith(prefix) for k in state_dict)}

  warnings: list[str] = []
  if config is None:
    config, spec, values, warnings = build_config(snap, state_dict)
    flags = _override_flags(values, spec)
  else:
    spec = config if isinstance(config, str) else None
    config = experiment_config.load_config(config) if isinstance(config, str) else config
    discrete = _snapshot_discrete(snap) or config.world_model.discrete
    check_config(config, expected_config_values(state_dict, discrete, snap.agent_config))
    flags = []
  action_dim = convert.infer_world_model_sizes(state_dict, WM_PREFIX)["action_dim"]
  mfwm = mfwm_lib.make_mfwm(config, action_dim, with_connector="connector" in params)
  expected = jax.eval_shape(lambda key: mfwm_lib.init_params(mfwm, key), jax.random.key(0))
  _check_tree(params, expected, "MFWM")

  step = int(snap.metadata.get("_global_step") or 0) if step is None else int(step)
  jax_params = jax.tree.map(jnp.asarray, params)
  state = TrainState.create(jax_params, mfwm_lib.make_optimizer(config)).replace(
      step=jnp.asarray(step, jnp.int32))
  if "connector" not in params:
    warnings.append("no connector in the snapshot: behaviour learning from prompts needs "
                    "one (use out/mfwm as config.mfwm.init_world_model_from)")
  vlm = snap.agent_config.get("viclip_model")
  if config.vlm.name == "internvideo2":
    vlm_model = os.path.abspath(vlm_model or os.path.join(
        os.path.dirname(os.path.abspath(snapshot_path)),
        internvideo2.OFFICIAL_CHECKPOINT + ".pt"))
  # A ConfigDict given in Python has no file: the domain's, whose keys the flags then fix.
  domain = config.task.split("_")[0]
  commands = next_commands(spec or f"configs/{domain}.py", flags, out_dir, config.task,
                           vlm_model, DOMAIN_ACTION_DIMS.get(domain) == action_dim)
  command = " ".join(_shell_word(w) for w in commands[0][1])
  info = {"source": os.path.abspath(snapshot_path),
          "snapshot_metadata": snap.metadata, "step": step,
          "parameters": len(state_dict), "ignored_submodules": snap.ignored,
          "behaviors": sorted(behaviors), "config_file": spec, "config_flags": flags,
          "vlm": vlm, "vlm_model": vlm_model, "warnings": warnings, "command": command,
          "commands": [{"what": what, "argv": argv} for what, argv in commands],
          "notes": [f"prompts must be embedded with the VLM the snapshot was trained with "
                    f"({vlm or 'unknown'}; config.vlm.name='{config.vlm.name}'). "
                    + (f"The commands read InternVideo2's checkpoint from {vlm_model} "
                       "(bert-large-uncased's vocab.txt next to it)"
                       + ("" if os.path.isfile(vlm_model) else
                          ", which is not there yet: download it there (docs/vlm.md)")
                       if vlm_model else "Give its checkpoint with --config.vlm.model")
                    + "; a precomputed prompt embedding (E,) in that space can be given "
                    "with --config.behavior.prompt.embedding instead",
                    "offline behaviour starts read the dataset of --config.data.path "
                    "(else <workdir>/dataset); the commands use data-free starts, which "
                    "need no data"]}

  def fill(tmp: str) -> None:
    _write(tmp, config, state, step, behaviors, info)
    _check_out_dir(out_dir)  # still empty: nothing appeared there meanwhile

  # What an interrupted import into `out_dir` left; then an empty `out_dir` is replaced by
  # the rename.
  for leftover in files.remove_dead_temporaries(out_dir):
    logging.info("import-reference: removed %s, left by an interrupted import", leftover)
  files.write_directory(out_dir, fill)
  for w in warnings:
    logging.warning("import-reference: %s", w)
  logging.info("import-reference: %s -> %s (step %d); continue with: %s", snapshot_path,
               out_dir, step, command)
  return out_dir


def run_command(snapshot: str, out: str, config: str | None = None,
                vlm_model: str | None = None) -> int:
  """The `genrl_jax import-reference SNAPSHOT --out=DIR [--config=SPEC] [--vlm-model=PT]`
  command.

  Prints where the import went and the command lines that continue from it (warnings are
  logged); returns the exit status: 0, or 1 with the reason on stderr when refused.
  """
  try:
    out_dir = import_reference(snapshot, out, config, vlm_model=vlm_model)
  except (snapshot_lib.SnapshotError, FileExistsError, FileNotFoundError, KeyError,
          ValueError) as e:
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    print(f"genrl_jax import-reference: {message}", file=sys.stderr)
    return 1
  with open(os.path.join(out_dir, INFO_FILE)) as f:
    info = json.load(f)
  print(f"imported {snapshot} into {out_dir} (MFWM step {info['step']}; behaviours: "
        f"{', '.join(info['behaviors']) or 'none'})")
  for note in info["notes"]:
    print(f"note: {note}")
  commands = [(c["what"], c["argv"]) for c in info["commands"]]
  print(f"next, from the repository root:\n{format_commands(commands)}")
  return 0
