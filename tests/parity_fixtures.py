"""Loading of the GenRL PyTorch reference fixtures for the parity tests.

The fixtures (`../shared/fixtures/genrl_torch_reference` next to the repository, or the
folder named by `$GENRL_TORCH_FIXTURES`; format in its README) are outputs of the original
PyTorch code; nothing here is part of the package.

Every size a parity test needs comes from `sizes()` (the fixtures' config JSON, parameter
shapes and key counts), so the tests run unchanged on a reference set of other sizes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

DEFAULT_FIXTURE_DIR = (Path(__file__).resolve().parents[1].parent
                       / "shared/fixtures/genrl_torch_reference")
FIXTURE_ENV = "GENRL_TORCH_FIXTURES"


def fixture_dir() -> Path:
  """The reference set in use: `$GENRL_TORCH_FIXTURES` if set, else the default folder."""
  return Path(os.environ.get(FIXTURE_ENV) or DEFAULT_FIXTURE_DIR)

# README section 7 tolerances: (rtol, atol).
TOL_PREPROCESS = dict(rtol=0, atol=1e-7)
TOL_SINGLE = dict(rtol=1e-5, atol=1e-5)
TOL_IMAGE = dict(rtol=1e-4, atol=1e-4)
TOL_IMAGE_LOG_PROB = dict(rtol=1e-5, atol=1e-2)
TOL_SCAN = dict(rtol=1e-4, atol=1e-4)
TOL_KL = dict(rtol=1e-5, atol=1e-6)
TOL_KL_GRAD = dict(rtol=1e-4, atol=1e-8)
TOL_TWOHOT = dict(rtol=1e-5, atol=1e-5)
TOL_METRIC = dict(rtol=1e-5, atol=1e-6)
GRAD_RTOL = 1e-4
GRAD_ATOL_FRACTION = 1e-6  # atol = this x max|g_ref|
POST_TIGHT_ATOL = 1e-7


@dataclasses.dataclass(frozen=True)
class Fixture:
  """One `<name>.npz`, split by key prefix (README section 1).

  `params`, `grads` and `post` are keyed by the torch state-dict key (for `grads`, the part
  after `grad/`, e.g. `model_step/wm.encoder._conv_model.0.weight`), in torch layouts.
  """
  params: dict[str, np.ndarray]
  inputs: dict[str, np.ndarray]
  outputs: dict[str, np.ndarray]
  grads: dict[str, np.ndarray]
  post: dict[str, np.ndarray]
  config: dict[str, Any]


def require_fixtures(directory: Path | None = None, what: str = "GenRL reference") -> None:
  """Skips the calling test module when the fixture directory (default `fixture_dir()`) is
  absent, or fails it when `$CI` is `true` (a CI run must not pass by skipping parity
  tests)."""
  directory = fixture_dir() if directory is None else Path(directory)
  if directory.is_dir():
    return
  message = (f"{what} fixtures not found at {directory} "
             f"(set ${FIXTURE_ENV} or the test's own variable to the folder)")
  if os.environ.get("CI", "").lower() == "true":
    pytest.fail(f"{message}; CI=true: missing fixtures fail the run", pytrace=False)
  pytest.skip(message, allow_module_level=True)


def load_fixture(name: str, directory: Path | None = None) -> Fixture:
  """Loads `<directory>/<name>.npz` (default `fixture_dir()`), e.g. `load_fixture('encoder')`."""
  return _load_fixture(name, fixture_dir() if directory is None else Path(directory))


@functools.lru_cache(maxsize=None)
def _load_fixture(name: str, directory: Path) -> Fixture:
  parts: dict[str, dict[str, np.ndarray]] = {p: {} for p in ("param", "in", "out", "grad", "post")}
  config: dict[str, Any] = {}
  with np.load(directory / f"{name}.npz") as z:
    for key in z.files:
      if key == "config":
        config = json.loads(str(z[key]))
        continue
      head, rest = key.split("/", 1)
      if head not in parts:
        raise ValueError(f"{name}.npz: unexpected key {key!r}")
      parts[head][rest] = z[key]
  return Fixture(params=parts["param"], inputs=parts["in"], outputs=parts["out"],
                 grads=parts["grad"], post=parts["post"], config=config)


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
  """`(..., C, H, W) -> (..., H, W, C)` (reference images are channel-first)."""
  return np.moveaxis(x, -3, -1)


def nhwc_to_nchw(x: np.ndarray) -> np.ndarray:
  return np.moveaxis(np.asarray(x), -1, -3)


# --- sizes and settings of the reference set ------------------------------------------

# Key prefixes of the agent's state dict (README section 1 appendix).
WM_PREFIX = "wm."
CONNECTOR_PREFIX = "wm.connector."
ALIGNER_PREFIX = "wm.connector.aligner."
IMAG_PREFIX = "_imag_behavior."
ACTING_PREFIX = "_acting_behavior."


@dataclasses.dataclass(frozen=True)
class Sizes:
  """The reference set's sizes (README section 2), read from its files by `sizes()`.

  `n_params` counts `agent_state_dict.npz` keys: `wm` (world model without connector),
  `connector` (connector + aligner), `aligner`, `behavior` (one behaviour's, e.g.
  `_imag_behavior.*`), `actor` and `critic` (that behaviour's, without the slow critic)
  and `total`.
  """
  action_dim: int
  batch_size: int
  batch_length: int
  imag_horizon: int
  embed_dim: int  # video embedding dim D
  n_frames: int  # connector chunk length (embedding-action dim - D)
  cnn_depth: int
  encoder_kernels: tuple[int, ...]
  decoder_kernels: tuple[int, ...]
  deter: int
  hidden: int
  stoch: int
  discrete: int
  single_obs_posterior: bool
  reward_units: int
  reward_layers: int
  actor_units: int
  actor_layers: int
  critic_units: int
  critic_layers: int
  n_params: dict[str, int]

  @property
  def feat_dim(self) -> int:
    """`stoch * discrete + deter` (feature = concat([stoch_flat, deter]))."""
    return self.stoch * self.discrete + self.deter

  @property
  def initial_kl_starts(self) -> tuple[int, ...]:
    """Chunk starts `t0 = n_frames, 2 n_frames, ... < T` of the connector's initial KL."""
    return tuple(range(self.n_frames, self.batch_length, self.n_frames))


def agent_config(directory: Path | None = None) -> dict[str, Any]:
  """The composed agent config the reference set was made with (`config.agent_config`)."""
  return load_fixture("agent_state_dict", directory).config["agent_config"]


def sizes(directory: Path | None = None) -> Sizes:
  """Sizes of the reference set in `directory` (default `fixture_dir()`), from the config
  JSON of `agent_state_dict.npz` and that file's parameter shapes and key counts."""
  fx = load_fixture("agent_state_dict", directory)
  preset, agent = fx.config["preset"], fx.config["agent_config"]
  rssm = agent["rssm"]
  # The connector's embedding-action is concat([video_embed, temporal one-hot (n_frames)]).
  action_in = fx.params[CONNECTOR_PREFIX + "initial_state_pred.0.weight"].shape[1]
  keys = list(fx.params)
  count = lambda prefix: sum(k.startswith(prefix) for k in keys)
  n_params = {"wm": count(WM_PREFIX) - count(CONNECTOR_PREFIX),
              "connector": count(CONNECTOR_PREFIX), "aligner": count(ALIGNER_PREFIX),
              "behavior": count(IMAG_PREFIX), "actor": count(IMAG_PREFIX + "actor."),
              "critic": count(IMAG_PREFIX + "critic."),
              "total": len(keys)}
  return Sizes(
      action_dim=preset["action_dim"], batch_size=agent["batch_size"],
      batch_length=agent["batch_length"], imag_horizon=agent["imag_horizon"],
      embed_dim=preset["clip_dim"], n_frames=action_in - preset["clip_dim"],
      cnn_depth=agent["encoder"]["cnn_depth"],
      encoder_kernels=tuple(agent["encoder"]["cnn_kernels"]),
      decoder_kernels=tuple(agent["decoder"]["cnn_kernels"]),
      deter=rssm["deter"], hidden=rssm["hidden"], stoch=rssm["stoch"],
      discrete=rssm["discrete"], single_obs_posterior=rssm["single_obs_posterior"],
      reward_units=agent["reward_head"]["units"], reward_layers=agent["reward_head"]["layers"],
      actor_units=agent["actor"]["units"], actor_layers=agent["actor"]["layers"],
      critic_units=agent["critic"]["units"], critic_layers=agent["critic"]["layers"],
      n_params=n_params)


def optimizer(name: str, directory: Path | None = None) -> dict[str, float]:
  """`agent_config[name]` (`model_opt`, `actor_opt`, `critic_opt`) as our optimizer config:
  `dict(lr, eps, clip, wd)`."""
  opt = agent_config(directory)[name]
  return {k: float(opt[k]) for k in ("lr", "eps", "clip", "wd")}


def reward_alignment(directory: Path | None = None) -> tuple[str, str]:
  """`(score_fn, alignment)` of the reference's `imag_reward_args`, in our names."""
  args = agent_config(directory)["imag_reward_args"]
  alignment = ("initial" if args["align_initial"] else
               "sequence" if args["align_sequence"] else "none")
  return args["score_fn"], alignment


def kl(name: str, directory: Path | None = None) -> dict[str, Any]:
  """`agent_config[name]` (`kl` or `connector_kl`): `dict(forward, balance, free, free_avg)`."""
  cfg = agent_config(directory)[name]
  return {"forward": bool(cfg["forward"]), "balance": float(cfg["balance"]),
          "free": float(cfg["free"]), "free_avg": bool(cfg["free_avg"])}
