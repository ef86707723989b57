"""The fixture helper of the parity tests (`tests/parity_fixtures.py`): the repository's
reference sets are found without `../shared`, a missing set fails (never skips), every size
comes from the set's files, and the helpers that reshape records and read snapshot steps
hold for any chunk count and step."""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile

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


def test_the_reference_sets_are_in_the_repository(monkeypatch):
  """A fresh clone tests itself: with neither variable set, both sets come from
  `tests/fixtures/`, inside the repository."""
  monkeypatch.delenv(pf.FIXTURE_ENV, raising=False)
  monkeypatch.delenv(pf.INTERNVIDEO2_ENV, raising=False)
  tests_dir = pf.Path(pf.__file__).resolve().parent
  for directory in (pf.fixture_dir(), pf.internvideo2_fixture_dir()):
    assert directory.parent == tests_dir / "fixtures", directory
    assert (directory / "README.md").is_file(), directory
    assert _outcome(pf.require_fixtures, directory) is None
  assert (pf.fixture_dir() / "agent_state_dict.npz").is_file()
  assert (pf.internvideo2_fixture_dir() / "similarity.npz").is_file()


@pytest.mark.parametrize("ci", ["true", None])
def test_require_fixtures_fails_when_missing(tmp_path, monkeypatch, ci):
  """Missing fixtures fail the module, in CI or not: parity tests never pass by skipping."""
  if ci is None:
    monkeypatch.delenv("CI", raising=False)
  else:
    monkeypatch.setenv("CI", ci)
  raised = _outcome(pf.require_fixtures, tmp_path / "absent")
  assert type(raised) is pytest.fail.Exception, repr(raised)
  assert "absent" in str(raised) and pf.FIXTURE_ENV in str(raised), repr(raised)


def test_require_fixtures_default_folder_follows_the_env_vars(tmp_path, monkeypatch):
  monkeypatch.setenv(pf.FIXTURE_ENV, str(tmp_path / "absent"))
  assert pf.fixture_dir() == tmp_path / "absent"
  raised = _outcome(pf.require_fixtures)
  assert type(raised) is pytest.fail.Exception and "absent" in str(raised), repr(raised)
  monkeypatch.setenv(pf.FIXTURE_ENV, str(tmp_path))
  assert _outcome(pf.require_fixtures) is None  # present: neither skips nor fails
  monkeypatch.setenv(pf.INTERNVIDEO2_ENV, str(tmp_path / "iv2"))
  assert pf.internvideo2_fixture_dir() == tmp_path / "iv2"


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


# --- helpers that must hold on any reference set ----------------------------------------


@pytest.mark.parametrize("batch,chunks", [(1, 1), (2, 1), (2, 3), (3, 3), (3, 5)])
def test_chunk_rows_keeps_batch_chunk_order(batch, chunks):
  """Row `b * C + c` of a `(B * C, S, K)` record is sample b, chunk c."""
  b, c = np.meshgrid(np.arange(batch), np.arange(chunks), indexing="ij")
  code = (100 * b + c).reshape(-1).astype(np.float32)  # (B * C,) in (batch, chunk) order
  rows = np.broadcast_to(code[:, None, None], (batch * chunks, 4, 5))
  out = pf.chunk_rows(rows, chunks, item_ndim=2)
  assert out.shape == (batch, chunks, 4, 5)
  np.testing.assert_array_equal(out[..., 0, 0], 100 * b + c)
  # Already split records pass through unchanged; a 1-axis item (deter) works alike.
  np.testing.assert_array_equal(pf.chunk_rows(out, chunks, item_ndim=2), out)
  deter = pf.chunk_rows(rows[..., 0], chunks, item_ndim=1)
  np.testing.assert_array_equal(deter[..., 0], 100 * b + c)


def test_chunk_rows_rejects_a_partial_sample():
  with pytest.raises(ValueError, match="7 recorded rows .* 3 chunks"):
    pf.chunk_rows(np.zeros((7, 2, 2)), 3, item_ndim=2)


class _Agent:
  """Pickled as a class of a module the reader cannot import, like the reference's agent."""

  def __init__(self):
    self.weights = {"w": [1.0, 2.0]}


def _snapshot(path, payload) -> None:
  """A torch-style zip archive: `<top>/data.pkl` (protocol 2) plus one storage entry."""
  data = pickle.dumps(payload, protocol=2)
  data = data.replace(_Agent.__module__.encode(), b"agent.genrl")  # no such module here
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("snapshot/data.pkl", data)
    z.writestr("snapshot/data/0", b"\0" * 16)


@pytest.mark.parametrize("step", [500, 25000, 7])
def test_snapshot_metadata_reads_the_recorded_step(tmp_path, step):
  path = tmp_path / "snap.pt"
  _snapshot(path, {"agent": _Agent(), "_global_step": step, "_global_episode": 3,
                   "wandb_run_id": "x1"})
  assert pf.snapshot_metadata(path) == {"_global_step": step, "_global_episode": 3,
                                        "wandb_run_id": "x1"}
  _snapshot(path, _Agent())  # a bare agent (the released models): no metadata
  assert pf.snapshot_metadata(path) == {}


def test_snapshot_metadata_of_the_fixture_set():
  metadata = pf.snapshot_metadata(pf.fixture_dir() / "snapshot_small.pt")
  assert set(metadata) == {"_global_step", "_global_episode"}
  assert metadata["_global_step"] > 0


def _worst_case_move(logits: np.ndarray, atol: float) -> np.ndarray:
  """Per entry, the largest |softmax(z + d) - softmax(z)| over |d| <= atol (float64): +atol
  on the entry and -atol on the others, or the reverse."""
  p = lambda z: np.exp(z - z.max(-1, keepdims=True)) / np.exp(
      z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)
  eye = np.eye(logits.shape[-1])
  up = np.stack([p(logits + atol * (2 * e - 1))[..., i] for i, e in enumerate(eye)], -1)
  down = np.stack([p(logits - atol * (2 * e - 1))[..., i] for i, e in enumerate(eye)], -1)
  return np.maximum(np.abs(up - p(logits)), np.abs(down - p(logits)))


@pytest.mark.parametrize("logits", [
    [[40.0, 36.0, 30.0]],  # top-two gap of 4: unsaturated
    [[90.0, 12.0, 11.0], [0.0, 0.0, 0.0]],  # saturated, and a three-way tie
    [[5.0, -3.0, 1.0, 4.5]]])
def test_softmax_atol_bounds_the_worst_logit_move(logits):
  logits, atol = np.asarray(logits, np.float64), 1e-4
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  move = _worst_case_move(logits, atol)
  bound = pf.softmax_atol(p, atol)
  assert np.all(move <= bound), (move, bound)
  rounding = 8 * np.finfo(np.float32).eps * p
  assert np.all(bound - rounding <= 2.1 * move)  # and is loose by 2x at most
  # float32 logits within the tolerance, as a model's would be
  rng = np.random.default_rng(0)
  for _ in range(20):
    z = (logits + rng.uniform(-atol, atol, logits.shape)).astype(np.float32)
    q = np.exp(z - z.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    assert np.all(np.abs(q - p) <= bound)


def test_an_absolute_probability_tolerance_fails_on_unsaturated_logits():
  """Why the InternVideo2 test bounds probabilities through the logits: with a top-two gap
  of 4, logits 1e-4 apart (inside their own tolerance) move probabilities by over 1e-6."""
  logits = np.asarray([[40.0, 36.0, 30.0]])
  assert _worst_case_move(logits, 1e-4).max() > 1e-6
