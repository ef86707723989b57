"""Loading of the GenRL PyTorch reference fixtures for the parity tests.

The fixtures (`/work/shared/fixtures/genrl_torch_reference`, format in its README) are
outputs of the original PyTorch code; nothing here is part of the package.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

FIXTURE_DIR = Path(__file__).resolve().parents[1].parent / "shared/fixtures/genrl_torch_reference"

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


def require_fixtures(directory: Path = FIXTURE_DIR, what: str = "GenRL reference") -> None:
  """Skips the calling test module when the fixture directory is absent."""
  if not Path(directory).is_dir():
    pytest.skip(f"{what} fixtures not found at {directory}", allow_module_level=True)


@functools.lru_cache(maxsize=None)
def load_fixture(name: str) -> Fixture:
  """Loads `<FIXTURE_DIR>/<name>.npz` (e.g. `load_fixture('encoder')`)."""
  parts: dict[str, dict[str, np.ndarray]] = {p: {} for p in ("param", "in", "out", "grad", "post")}
  config: dict[str, Any] = {}
  with np.load(FIXTURE_DIR / f"{name}.npz") as z:
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
