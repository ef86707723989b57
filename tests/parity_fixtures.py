"""Loading of the GenRL PyTorch reference fixtures for the parity tests.

The fixtures (`tests/fixtures/genrl_torch_reference` in the repository, or the folder named
by `$GENRL_TORCH_FIXTURES`; format in its README) are outputs of the original PyTorch code;
nothing here is part of the package. The InternVideo2 set has its own folder and variable
(`INTERNVIDEO2_*` below).

Every size a parity test needs comes from `sizes()` (the fixtures' config JSON, parameter
shapes and key counts), so the tests run unchanged on a reference set of other sizes.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import pickle
from pathlib import Path
from typing import Any
import zipfile

import numpy as np
import pytest

FIXTURES_ROOT = Path(__file__).resolve().parent / "fixtures"
DEFAULT_FIXTURE_DIR = FIXTURES_ROOT / "genrl_torch_reference"
FIXTURE_ENV = "GENRL_TORCH_FIXTURES"
INTERNVIDEO2_DEFAULT_DIR = FIXTURES_ROOT / "internvideo2_torch_reference"
INTERNVIDEO2_ENV = "GENRL_INTERNVIDEO2_FIXTURES"


def fixture_dir() -> Path:
  """The reference set in use: `$GENRL_TORCH_FIXTURES` if set, else the repository's copy."""
  return Path(os.environ.get(FIXTURE_ENV) or DEFAULT_FIXTURE_DIR)


def internvideo2_fixture_dir() -> Path:
  """The InternVideo2 reference set: `$GENRL_INTERNVIDEO2_FIXTURES` if set, else the
  repository's copy."""
  return Path(os.environ.get(INTERNVIDEO2_ENV) or INTERNVIDEO2_DEFAULT_DIR)

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
  """Fails the calling test module when the fixture folder (default `fixture_dir()`) is
  absent. The repository ships both reference sets (`tests/fixtures/`), so a missing folder
  means a broken checkout or a variable naming a wrong folder: never a reason to skip."""
  directory = fixture_dir() if directory is None else Path(directory)
  if directory.is_dir():
    return
  pytest.fail(f"{what} fixtures not found at {directory}: the repository keeps them in "
              f"{FIXTURES_ROOT}; ${FIXTURE_ENV} and ${INTERNVIDEO2_ENV} name other sets",
              pytrace=False)


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


def softmax_atol(probs: np.ndarray, logit_atol: float) -> np.ndarray:
  """The most each of `probs = softmax(z)` (any shape, softmax over the last axis) can move
  when every logit moves by at most `logit_atol`, elementwise.

  log softmax(z)_i = z_i - logsumexp(z), and logsumexp moves by at most max|dz|, so each
  probability moves by at most a factor exp(+-2 * logit_atol): |p' - p| <= p * expm1(2 *
  logit_atol); the same holds for 1 - p (a sum of the other probabilities), hence
  min(p, 1 - p) * expm1(2 * logit_atol). A few float32 ulps of p are added for the rounding
  of the softmax itself. An absolute bound alone fails on unsaturated logits (a top-two gap
  of ~4 already moves p by over 1e-6 for logits well inside 1e-4), and says nothing of
  small p.
  """
  probs = np.asarray(probs, np.float64)
  return (np.minimum(probs, 1.0 - probs) * np.expm1(2.0 * logit_atol)
          + 8 * np.finfo(np.float32).eps * probs)


def chunk_rows(rows: np.ndarray, n_chunks: int, item_ndim: int) -> np.ndarray:
  """Per-chunk records `(B * C, *item)`, rows in (batch, chunk) order, or already
  `(B, C, *item)`, as `(B, C, *item)` with C = `n_chunks` and `item` the last `item_ndim`
  axes (e.g. 2 for a stoch `(S, K)`, 1 for a deter `(H,)`).

  The reference records the connector's initial-KL latents one row per (sample, chunk
  start), so B is `rows // C`, never the first axis.
  """
  rows = np.asarray(rows)
  item = rows.shape[rows.ndim - item_ndim:]
  count = int(np.prod(rows.shape[:rows.ndim - item_ndim], dtype=np.int64))
  if n_chunks < 1 or count % n_chunks:
    raise ValueError(f"{count} recorded rows of shape {item} are not a whole number of "
                     f"samples of {n_chunks} chunks")
  return rows.reshape((count // n_chunks, n_chunks) + item)


class _Inert:
  """Stands for every class and function a snapshot's pickle names: accepts any call or
  state and keeps nothing, so only the payload's plain values survive."""

  def __new__(cls, *args, **kwargs):
    del args, kwargs
    return object.__new__(cls)

  def __init__(self, *args, **kwargs):
    del args, kwargs

  def __setstate__(self, state):
    del state

  def __setitem__(self, key, value):
    del key, value

  def append(self, value):
    del value

  def extend(self, values):
    del values

  def __call__(self, *args, **kwargs):
    return _Inert()


class _PlainValueUnpickler(pickle.Unpickler):

  def find_class(self, module, name):
    del module, name
    return _Inert

  def persistent_load(self, pid):
    del pid
    return None


def snapshot_metadata(path: Path | str) -> dict[str, Any]:
  """The plain values (ints, floats, strings) of a reference snapshot's top-level payload,
  e.g. `{"_global_step": 500, "_global_episode": 0}`; `{}` for a bare agent object.

  Read independently of the importer under test: every global in the pickle becomes an
  inert stand-in and no storage is read.
  """
  with zipfile.ZipFile(path) as archive:
    name = next(n for n in archive.namelist() if n.split("/")[-1] == "data.pkl")
    payload = _PlainValueUnpickler(io.BytesIO(archive.read(name))).load()
  if not isinstance(payload, dict):
    return {}
  return {k: v for k, v in payload.items()
          if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
