"""The fixture helper of the parity tests (`tests/parity_fixtures.py`): a missing reference
set skips locally but fails under CI=true, and every size comes from the set's files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import parity_fixtures as pf


def _outcome(fn, *args) -> BaseException | None:
  """What `fn(*args)` raised, caught here: a skip escaping a test would itself read as a
  skip (not a failure), so `pytest.raises(Failed)` alone cannot catch a skip."""
  try:
    fn(*args)
  except BaseException as e:  # pylint: disable=broad-except  (Skipped/Failed included)
    return e
  return None


def test_require_fixtures_skips_when_missing_outside_ci(tmp_path, monkeypatch):
  monkeypatch.delenv("CI", raising=False)
  raised = _outcome(pf.require_fixtures, tmp_path / "absent")
  assert type(raised) is pytest.skip.Exception and "not found" in str(raised), repr(raised)


def test_require_fixtures_fails_when_missing_under_ci(tmp_path, monkeypatch):
  monkeypatch.setenv("CI", "true")
  raised = _outcome(pf.require_fixtures, tmp_path / "absent")
  assert type(raised) is pytest.fail.Exception and "CI=true" in str(raised), repr(raised)


def test_require_fixtures_default_folder_follows_the_env_var(tmp_path, monkeypatch):
  monkeypatch.setenv("CI", "true")
  monkeypatch.setenv(pf.FIXTURE_ENV, str(tmp_path / "absent"))
  assert pf.fixture_dir() == tmp_path / "absent"
  raised = _outcome(pf.require_fixtures)
  assert type(raised) is pytest.fail.Exception and "absent" in str(raised), repr(raised)
  monkeypatch.setenv(pf.FIXTURE_ENV, str(tmp_path))
  assert _outcome(pf.require_fixtures) is None  # present: neither skips nor fails
  monkeypatch.delenv("CI")
  assert _outcome(pf.require_fixtures) is None


def _edited_copy(directory) -> None:
  """`agent_state_dict.npz` of the reference set with other sizes in its config JSON, a
  wider connector input (n_frames 8 -> 4 with D 32 -> 48) and one world-model key less."""
  fx = pf.load_fixture("agent_state_dict")
  config = json.loads(json.dumps(fx.config))
  preset, agent = config["preset"], config["agent_config"]
  preset.update(action_dim=7, clip_dim=48)
  agent.update(batch_size=3, batch_length=24, imag_horizon=20)
  agent["rssm"].update(deter=96, hidden=80, stoch=12, discrete=16, single_obs_posterior=False)
  agent["encoder"].update(cnn_depth=4, cnn_kernels=[4, 4, 4, 5])
  agent["decoder"]["cnn_kernels"] = [5, 5, 5, 6]
  agent["reward_head"].update(units=24, layers=3)
  agent["actor"].update(units=40, layers=1)
  agent["critic"].update(units=56, layers=4)
  params = dict(fx.params)
  key = pf.CONNECTOR_PREFIX + "initial_state_pred.0.weight"
  params[key] = np.zeros((params[key].shape[0], 48 + 4), np.float32)
  del params["wm.rssm._obs_dist.bias"]
  arrays = {f"param/{k}": v for k, v in params.items()}
  np.savez(directory / "agent_state_dict.npz", config=np.array(json.dumps(config)), **arrays)


def test_sizes_follow_the_fixture_files(tmp_path, monkeypatch):
  """The parity tests read every size from `sizes()`: pointed at a reference set with other
  sizes (`$GENRL_TORCH_FIXTURES`), it reports those, nothing from the default set."""
  pf.require_fixtures()
  _edited_copy(tmp_path)
  real_dir = pf.fixture_dir()
  real = pf.sizes()
  monkeypatch.setenv(pf.FIXTURE_ENV, str(tmp_path))
  edited = pf.sizes()
  assert edited == pf.sizes(tmp_path)
  assert (edited.action_dim, edited.embed_dim, edited.n_frames) == (7, 48, 4)
  assert (edited.batch_size, edited.batch_length, edited.imag_horizon) == (3, 24, 20)
  assert (edited.deter, edited.hidden, edited.stoch, edited.discrete) == (96, 80, 12, 16)
  assert not edited.single_obs_posterior
  assert (edited.cnn_depth, edited.encoder_kernels, edited.decoder_kernels) == (
      4, (4, 4, 4, 5), (5, 5, 5, 6))
  assert (edited.reward_units, edited.reward_layers, edited.actor_units, edited.actor_layers,
          edited.critic_units, edited.critic_layers) == (24, 3, 40, 1, 56, 4)
  assert edited.feat_dim == 12 * 16 + 96
  assert edited.initial_kl_starts == (4, 8, 12, 16, 20)
  assert edited.n_params == {**real.n_params, "wm": real.n_params["wm"] - 1,
                             "total": real.n_params["total"] - 1}
  for name in ("model_opt", "actor_opt", "critic_opt"):
    assert pf.optimizer(name) == pf.optimizer(name, real_dir)  # not edited


def test_sizes_of_the_default_set_match_its_readme():
  """README section 2 of the default reference set, as a check of the reading itself."""
  pf.require_fixtures()
  if pf.fixture_dir() != pf.DEFAULT_FIXTURE_DIR:
    pytest.skip(f"${pf.FIXTURE_ENV} names another reference set: these are the default's")
  s = pf.sizes()
  assert (s.action_dim, s.embed_dim, s.n_frames, s.batch_size, s.batch_length,
          s.imag_horizon) == (6, 32, 8, 2, 16, 16)
  assert (s.deter, s.hidden, s.stoch, s.discrete, s.cnn_depth) == (64, 64, 8, 8, 8)
  assert s.initial_kl_starts == (8,)
  assert s.n_params == {"wm": 61, "connector": 49, "aligner": 26, "behavior": 33, "actor": 12,
                        "critic": 10, "total": 176}
  assert pf.optimizer("model_opt") == dict(lr=1e-4, eps=1e-8, clip=1000.0, wd=1e-6)
  assert pf.optimizer("actor_opt") == dict(lr=3e-5, eps=1e-5, clip=100.0, wd=1e-6)
  assert pf.kl("kl") == dict(forward=False, balance=0.85, free=1.0, free_avg=False)
  assert pf.kl("connector_kl") == dict(forward=True, balance=0.8, free=0.0, free_avg=False)
  assert pf.reward_alignment() == ("max_cosine", "sequence")


def test_a_copied_set_loads_from_its_own_folder(tmp_path):
  """Fixtures are cached per folder: a copy elsewhere is read from there, not the cache."""
  pf.require_fixtures()
  shutil.copy(pf.fixture_dir() / "encoder.npz", tmp_path / "encoder.npz")
  a, b = pf.load_fixture("encoder"), pf.load_fixture("encoder", tmp_path)
  assert a is not b and a is pf.load_fixture("encoder")
  assert sorted(a.params) == sorted(b.params)
