"""Reading reference snapshots safely (`reference.snapshot`) and importing them as a workdir
(`reference.import_reference`), checked against the reference fixtures (README sections 6-8).
"""

from __future__ import annotations

import ast
import collections
import json
import os
import pickle
import sys
import types
import zipfile

import jax
import ml_collections
import numpy as np
import pytest

import parity_fixtures as pf

pf.require_fixtures()

from genrl_jax import cli  # noqa: E402  (after the module-level skip)
from genrl_jax import experiment_config  # noqa: E402
from genrl_jax.stages import behavior as behavior_stage  # noqa: E402
from genrl_jax.stages import workdir as workdir_lib  # noqa: E402
from genrl_jax import rssm as rssm_lib  # noqa: E402
from genrl_jax import world_model as wm_lib  # noqa: E402
from genrl_jax import mfwm as mfwm_lib  # noqa: E402
from genrl_jax.behavior import learner  # noqa: E402
from genrl_jax.reference import convert  # noqa: E402
from genrl_jax.reference import import_reference as ir  # noqa: E402
from genrl_jax.reference import snapshot  # noqa: E402
from genrl_jax.train import checkpoints  # noqa: E402
from genrl_jax.train import mesh as mesh_lib  # noqa: E402

SNAPSHOT = pf.fixture_dir() / "snapshot_small.pt"
SIZES = pf.sizes()
SNAPSHOT_STEP = pf.snapshot_metadata(SNAPSHOT)["_global_step"]


def _reference_state_dict() -> dict[str, np.ndarray]:
  return pf.load_fixture("agent_state_dict").params


# --- writing torch-format archives without torch (test inputs) --------------------------


class _FakeStorage:
  """A flat numpy array saved as a storage record (`persistent_id`)."""

  def __init__(self, array: np.ndarray):
    self.array = array


class _FakeTensor:
  """A view of a storage, pickled the way `torch.save` pickles a tensor (protocol 2)."""

  def __init__(self, storage: np.ndarray | _FakeStorage, size, stride, offset: int = 0):
    self.storage = storage if isinstance(storage, _FakeStorage) else _FakeStorage(storage)
    self.size, self.stride, self.offset = size, stride, offset

  def __reduce__(self):
    rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
    return rebuild, (self.storage, self.offset, tuple(self.size), tuple(self.stride), False,
                     collections.OrderedDict())


def _fake_torch_modules(monkeypatch) -> None:
  """Importable `torch` / `torch._utils` stand-ins, so `pickle` can name their globals."""
  torch = types.ModuleType("torch")
  utils = types.ModuleType("torch._utils")
  for name in ("FloatStorage", "HalfStorage"):
    setattr(torch, name, type(name, (), {"__module__": "torch"}))

  for name in ("_rebuild_tensor_v2", "_rebuild_parameter"):
    func = lambda *args: None
    func.__module__, func.__qualname__ = "torch._utils", name
    setattr(utils, name, func)
  torch._utils = utils
  monkeypatch.setitem(sys.modules, "torch", torch)
  monkeypatch.setitem(sys.modules, "torch._utils", utils)


def _torch_save(payload, path, monkeypatch, top: str = "archive") -> None:
  """Writes `payload` (with `_FakeTensor`s) as a torch zip archive."""
  storages: list[np.ndarray] = []
  keys: dict[int, str] = {}

  class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      if not isinstance(obj, _FakeStorage):
        return None
      kind = {np.float32: "FloatStorage", np.float16: "HalfStorage"}[obj.array.dtype.type]
      if id(obj) not in keys:
        keys[id(obj)] = str(len(storages))
        storages.append(obj.array)
      return ("storage", getattr(sys.modules["torch"], kind), keys[id(obj)], "cuda:0",
              obj.array.size)

  with monkeypatch.context() as m:
    _fake_torch_modules(m)
    with open(path, "wb") as f:
      with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        with z.open(f"{top}/data.pkl", "w") as pkl:
          _Pickler(pkl, protocol=2).dump(payload)
        z.writestr(f"{top}/byteorder", "little")
        for i, storage in enumerate(storages):
          z.writestr(f"{top}/data/{i}", storage.astype(storage.dtype.newbyteorder("<")).tobytes())
        z.writestr(f"{top}/version", "3\n")


class _FakeParameter(_FakeTensor):
  def __reduce__(self):
    return sys.modules["torch._utils"]._rebuild_parameter, (
        _FakeTensor(self.storage, self.size, self.stride, self.offset), True,
        collections.OrderedDict())


class _Module:
  """Pickles like an `nn.Module` of the reference: `NEWOBJ` + its `__dict__`."""

  def __init__(self, parameters=(), buffers=(), non_persistent=(), modules=(), **attrs):
    self._parameters = collections.OrderedDict(parameters)
    self._buffers = collections.OrderedDict(buffers)
    self._non_persistent_buffers_set = set(non_persistent)
    self._modules = collections.OrderedDict(modules)
    self.training = False
    self.__dict__.update(attrs)


def _rewrite_archive(src, dst, drop=(), replace=None) -> None:
  """Copies a zip archive leaving out `drop` entries; `replace(name, data)` edits data."""
  with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
    for item in zin.infolist():
      if item.filename in drop:
        continue
      data = zin.read(item.filename)
      zout.writestr(item.filename, replace(item.filename, data) if replace else data)


# --- snapshot reading -----------------------------------------------------------------


def test_snapshot_small_gives_the_agent_state_dict_exactly():
  snap = snapshot.load_snapshot(SNAPSHOT)
  reference = _reference_state_dict()
  assert list(snap.state_dict) == list(reference)  # same keys in the same order
  assert len(snap.state_dict) == SIZES.n_params["total"]
  for key, want in reference.items():
    got = snap.state_dict[key]
    assert got.dtype == want.dtype and got.shape == want.shape, key
    np.testing.assert_array_equal(got, want, err_msg=key)
  assert snap.metadata == {**pf.snapshot_metadata(SNAPSHOT), "format": "torch_agent"}
  assert set(snap.metadata) == {"_global_step", "_global_episode", "format"}
  assert snap.attributes["wm.rssm._discrete"] == SIZES.discrete
  assert snap.agent_config["task"] == "stickman_walk"
  assert snap.agent_config["connector"]["rescale_embeds"] is True
  # Storage shared between critic and target critic comes back as equal, separate arrays.
  a = snap.state_dict["_imag_behavior.critic.dense0.weight"]
  b = snap.state_dict["_imag_behavior._target_critic.dense0.weight"]
  np.testing.assert_array_equal(a, b)
  assert not np.shares_memory(a, b)


def test_snapshot_npz_layout():
  snap = snapshot.load_snapshot(pf.fixture_dir() / "agent_state_dict.npz")
  assert list(snap.state_dict) == list(_reference_state_dict())
  assert snap.metadata["format"] == "npz"


def test_snapshot_plain_state_dict_with_strided_and_half_tensors(tmp_path, monkeypatch):
  base = np.arange(24, dtype=np.float32)
  shared = _FakeStorage(base)
  state = collections.OrderedDict()
  state["a.weight"] = _FakeTensor(shared, (2, 3), (3, 1))
  state["a.t"] = _FakeTensor(shared, (3, 2), (1, 3))  # transposed view of the same storage
  state["b.bias"] = _FakeTensor(shared, (2, 2), (6, 2), offset=5)
  state["c.half"] = _FakeTensor(np.array([1.5, -2.0], np.float16), (2,), (1,))
  state._metadata = collections.OrderedDict()  # as `nn.Module.state_dict()` sets it
  path = tmp_path / "state_dict.pt"
  _torch_save(state, path, monkeypatch, top="my_model")  # the top folder name varies
  snap = snapshot.load_snapshot(path)
  assert list(snap.state_dict) == ["a.weight", "a.t", "b.bias", "c.half"]
  np.testing.assert_array_equal(snap.state_dict["a.weight"], base[:6].reshape(2, 3))
  np.testing.assert_array_equal(snap.state_dict["a.t"], base[:6].reshape(2, 3).T)
  np.testing.assert_array_equal(snap.state_dict["b.bias"], [[5, 7], [11, 13]])
  assert snap.state_dict["c.half"].dtype == np.float16
  assert snap.metadata["format"] == "torch_state_dict"


@pytest.mark.parametrize("as_dict", [True, False])
def test_snapshot_collects_parameters_by_module_path(tmp_path, monkeypatch, as_dict):
  t = lambda *v: _FakeTensor(np.array(v, np.float32), (len(v),), (1,))
  p = lambda *v: _FakeParameter(np.array(v, np.float32), (len(v),), (1,))
  child = _Module(parameters=[("weight", p(1.0)), ("bias", None)],
                  buffers=[("kept", t(2.0)), ("dropped", t(3.0))], non_persistent=["dropped"],
                  _discrete=8)
  wm = _Module(parameters=[("scale", p(4.0))], modules=[("b", child), ("a", _Module()),
                                                       ("none", None)])
  backup = _Module(parameters=[("weight", p(5.0))])
  agent = _Module(modules=[("wm", wm), ("_backup_acting_behavior", backup)],
                  unconditional_target={"deter": t(6.0)}, decoder_input_fn=getattr)
  payload = {"agent": agent, "_global_step": 7, "wandb_run_id": "x1"} if as_dict else agent
  path = tmp_path / "agent.pt"
  _torch_save(payload, path, monkeypatch)
  snap = snapshot.load_snapshot(path)
  assert list(snap.state_dict) == ["wm.scale", "wm.b.weight", "wm.b.kept"]
  assert [float(v[0]) for v in snap.state_dict.values()] == [4.0, 1.0, 2.0]
  assert snap.ignored == ["_backup_acting_behavior"]
  assert snap.attributes["wm.b._discrete"] == 8
  if as_dict:
    assert snap.metadata == {"_global_step": 7, "wandb_run_id": "x1", "format": "torch_agent"}


def test_snapshot_tensor_past_its_storage_is_refused(tmp_path, monkeypatch):
  path = tmp_path / "bad.pt"
  _torch_save({"w": _FakeTensor(np.zeros(4, np.float32), (3, 3), (3, 1))}, path, monkeypatch)
  with pytest.raises(snapshot.SnapshotError, match="reaches past its storage"):
    snapshot.load_snapshot(path)


class _RunsCode:
  def __init__(self, func, *args):
    self.func, self.args = func, args

  def __reduce__(self):
    return self.func, self.args


@pytest.mark.parametrize("func", ["os.system", "builtins.exec"])
def test_snapshot_malicious_pickle_is_refused_and_nothing_runs(tmp_path, func):
  marker = tmp_path / "pwned"
  command = (f"touch {marker}" if func == "os.system"
             else f"open({str(marker)!r}, 'w').close()")
  payload = _RunsCode(os.system if func == "os.system" else exec, command)
  path = tmp_path / "evil.pt"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", pickle.dumps({"agent": payload}, protocol=2))
  with pytest.raises(snapshot.SnapshotError, match=r"refusing global .*(system|exec)"):
    snapshot.load_snapshot(path)
  assert not marker.exists()


def test_snapshot_other_globals_stay_inert(tmp_path):
  import pathlib  # pylint: disable=g-import-not-at-top
  marker = tmp_path / "pwned"
  # `pathlib.Path.touch(Path(marker))` when unpickled normally (protocol 4 names methods).
  payload = _RunsCode(pathlib.Path.touch, pathlib.Path(marker))
  path = tmp_path / "evil.pt"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", pickle.dumps(payload, protocol=4))
  with pytest.raises(snapshot.SnapshotError, match="expected a pickled agent"):
    snapshot.load_snapshot(path)
  assert not marker.exists()


def test_snapshot_truncated_archive_gives_a_clear_error(tmp_path):
  data = SNAPSHOT.read_bytes()
  path = tmp_path / "half.pt"
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(snapshot.SnapshotError, match=r"half\.pt.*truncated"):
    snapshot.load_snapshot(path)


def test_snapshot_missing_storage_record_gives_a_clear_error(tmp_path):
  path = tmp_path / "missing.pt"
  _rewrite_archive(SNAPSHOT, path, drop=("archive/data/7",))
  with pytest.raises(snapshot.SnapshotError,
                     match=r"missing\.pt.*no storage record 'archive/data/7'"):
    snapshot.load_snapshot(path)


def test_snapshot_unknown_storage_type_gives_a_clear_error(tmp_path):
  path = tmp_path / "quantized.pt"
  edit = lambda name, data: (data.replace(b"ctorch\nFloatStorage\n", b"ctorch\nQInt8Storage\n")
                             if name.endswith("data.pkl") else data)
  _rewrite_archive(SNAPSHOT, path, replace=edit)
  with pytest.raises(snapshot.SnapshotError,
                     match=r"unknown tensor storage type torch\.QInt8Storage"):
    snapshot.load_snapshot(path)


def test_snapshot_not_an_archive(tmp_path):
  path = tmp_path / "plain.pt"
  path.write_bytes(pickle.dumps({"a": 1}))
  with pytest.raises(snapshot.SnapshotError, match=r"plain\.pt is not a readable torch zip"):
    snapshot.load_snapshot(path)


# --- import ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> str:
  return ir.import_reference(str(SNAPSHOT), str(tmp_path_factory.mktemp("imp") / "run"))


def _config(out_dir: str) -> ml_collections.ConfigDict:
  with open(os.path.join(out_dir, "config.json")) as f:
    return ml_collections.ConfigDict(json.load(f))


def _info(out_dir: str) -> dict:
  with open(os.path.join(out_dir, ir.INFO_FILE)) as f:
    return json.load(f)


def _config_from_command(out_dir: str) -> ml_collections.ConfigDict:
  """The config `main.py` builds from the command the import printed."""
  info = _info(out_dir)
  config = experiment_config.load_config(info["config_file"])
  overrides = {}
  for flag in info["config_flags"]:
    key, value = flag[len("--config."):].split("=", 1)
    try:
      overrides[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      overrides[key] = value
  config.update_from_flattened_dict(overrides)
  return config


def test_import_reference_writes_what_the_pipeline_reads(imported):
  params = mfwm_lib.load(os.path.join(imported, "mfwm"))
  want = convert.torch_mfwm_to_flax(_reference_state_dict())
  assert jax.tree.structure(params) == jax.tree.structure(want)
  for got, ref in zip(jax.tree.leaves(params), jax.tree.leaves(want)):
    np.testing.assert_array_equal(got, ref)
  config = _config(imported)
  assert (config.world_model.deter, config.world_model.stoch, config.world_model.discrete,
          config.world_model.cnn_depth, config.connector.embed_dim) == (
              SIZES.deter, SIZES.stoch, SIZES.discrete, SIZES.cnn_depth, SIZES.embed_dim)
  assert config.task == "stickman_walk"
  info = _info(imported)
  assert info["step"] == SNAPSHOT_STEP and info["parameters"] == SIZES.n_params["total"]
  assert info["vlm"] == "internvideo2"
  assert f"--config.world_model.deter={SIZES.deter}" in info["command"]
  behavior = checkpoints.restore_subtree(os.path.join(imported, "imported_behavior"),
                                         ("imag_behavior",))
  want = convert.torch_behavior_to_flax(_reference_state_dict(), "_imag_behavior.")
  for got, ref in zip(jax.tree.leaves(behavior), jax.tree.leaves(want)):
    np.testing.assert_array_equal(got, ref)
  # `main.py` with the printed command passes the workdir check of the behaviour stage.
  workdir_lib.prepare_workdir(_config_from_command(imported), imported)
  # The note on offline starts names the folder the behaviour stage reads.
  assert any("--config.data.path" in n and "<workdir>/dataset" in n for n in info["notes"])
  assert workdir_lib.dataset_dir(config, imported) == os.path.join(imported, "dataset")


def test_import_reference_mfwm_stage_resumes_from_it(imported, monkeypatch):
  config = _config_from_command(imported)
  # `mfwm.build` as the mfwm stage calls it, with zeros for the random init (its values do not
  # matter for a restore and compiling the init takes most of a minute on CPU).
  init = mfwm_lib.init_params
  zeros = lambda mfwm, key: jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                                         jax.eval_shape(lambda k: init(mfwm, k), key))
  monkeypatch.setattr(mfwm_lib, "init_params", zeros)
  _, fresh, _ = mfwm_lib.build(config, SIZES.action_dim, mesh_lib.make_mesh())
  ckpt = checkpoints.Checkpointer(os.path.join(imported, "mfwm"), save_every=10, keep=3,
                                  config={})
  state, resumed = ckpt.restore_or_keep(fresh)
  ckpt.close()
  assert resumed and int(state.step) == SNAPSHOT_STEP and int(state.nonfinite_step) == -1
  want = convert.torch_mfwm_to_flax(_reference_state_dict())
  for got, ref in zip(jax.tree.leaves(state.params), jax.tree.leaves(want)):
    np.testing.assert_array_equal(got, ref)


def test_import_reference_params_reproduce_the_fixtures(imported):
  params = mfwm_lib.load(os.path.join(imported, "mfwm"))
  config = _config(imported)
  mfwm = mfwm_lib.make_mfwm(config, SIZES.action_dim)
  wm, p = mfwm.world_model, {"params": params["world_model"]}

  fx = pf.load_fixture("encoder")
  encode = jax.jit(lambda p, x: wm.apply(p, x, method=wm_lib.WorldModel.encode))
  embed = encode(p, pf.nchw_to_nhwc(fx.inputs["observation"]))
  np.testing.assert_allclose(embed, fx.outputs["embed"], **pf.TOL_SINGLE)

  fx = pf.load_fixture("decoder")
  decode = jax.jit(lambda p, x: wm.apply(p, x, method=wm_lib.WorldModel.decode))
  image = decode(p, fx.inputs["decoder_input"])
  np.testing.assert_allclose(pf.nhwc_to_nchw(image), fx.outputs["image_mean"], **pf.TOL_IMAGE)

  fx = pf.load_fixture("rssm")
  prev = {"deter": fx.inputs["img_prev_deter"], "stoch": fx.inputs["img_prev_stoch"]}
  out = wm.rssm_def().apply({"params": params["world_model"]["rssm"]}, prev,
                            fx.inputs["img_action"], None, method=rssm_lib.RSSM.img_step)
  np.testing.assert_allclose(out["deter"], fx.outputs["img_deter"], **pf.TOL_SINGLE)
  np.testing.assert_allclose(out["logit"], fx.outputs["img_logit"], **pf.TOL_SINGLE)
  np.testing.assert_array_equal(out["stoch"], fx.outputs["img_stoch"])

  fx = pf.load_fixture("aligner")
  y = mfwm.aligner.apply({"params": params["aligner"]}, fx.inputs["x"])
  np.testing.assert_allclose(y, fx.outputs["y"], **pf.TOL_SINGLE)

  fx = pf.load_fixture("actor_critic")
  behavior = checkpoints.restore_subtree(os.path.join(imported, "imported_behavior"),
                                         ("imag_behavior",))
  modules = learner.make_behavior(config, SIZES.action_dim)
  mean, std = modules.actor.apply({"params": behavior["actor"]}, fx.inputs["feat"])
  np.testing.assert_allclose(mean, fx.outputs["actor_mean"], **pf.TOL_SINGLE)
  np.testing.assert_allclose(std, fx.outputs["actor_std"], **pf.TOL_SINGLE)
  logits = modules.critic.apply({"params": behavior["critic"]}, fx.inputs["feat"])
  np.testing.assert_allclose(logits, fx.outputs["critic_logits"], **pf.TOL_SINGLE)


def test_import_reference_checks_a_given_config(tmp_path, imported):
  out = tmp_path / "run"
  with pytest.raises(ir.ReferenceImportError,
                     match=rf"world_model\.deter: config 1024, snapshot {SIZES.deter}"
                           r".*connector\.embed_dim"):
    ir.import_reference(str(SNAPSHOT), str(out), "configs/stickman.py")
  assert not out.exists()
  ir.import_reference(str(SNAPSHOT), str(out), _config(imported))  # matching sizes
  assert mfwm_lib.load(str(out / "mfwm"))["aligner"]


def _save_npz(path, state_dict) -> str:
  np.savez(path, **{f"param/{k}": v for k, v in state_dict.items()})
  return str(path)


@pytest.mark.parametrize("key", ["wm.rssm._obs_dist.bias", "wm.connector.aligner.up.1.layer.bias",
                                 "_imag_behavior.critic._out._out.weight"])
def test_import_reference_missing_parameter_is_named(tmp_path, key):
  state_dict = dict(_reference_state_dict())
  del state_dict[key]
  path = _save_npz(tmp_path / "missing.npz", state_dict)
  with pytest.raises(KeyError, match=key.replace(".", r"\.")):
    ir.import_reference(path, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("key", ["wm.heads.discount.dense0.weight", "extra_module.weight",
                                 "_imag_behavior.actor.dense9.weight"])
def test_import_reference_extra_parameter_is_named(tmp_path, key):
  state_dict = dict(_reference_state_dict())
  state_dict[key] = np.zeros((64, 64), np.float32)
  path = _save_npz(tmp_path / "extra.npz", state_dict)
  with pytest.raises((KeyError, ValueError), match=key.replace(".", r"\.")):
    ir.import_reference(path, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_import_reference_refuses_a_non_empty_out_dir(tmp_path, capsys):
  out = tmp_path / "run"
  out.mkdir()
  (out / "keep.txt").write_text("earlier work")
  with pytest.raises(FileExistsError, match="not empty"):
    ir.import_reference(str(SNAPSHOT), str(out))
  assert cli.main(["import-reference", str(SNAPSHOT), f"--out={out}"]) == 1
  assert "not empty" in capsys.readouterr().err
  assert os.listdir(out) == ["keep.txt"] and (out / "keep.txt").read_text() == "earlier work"
  assert sorted(os.listdir(tmp_path)) == ["run"]  # no temporary directory left behind


def test_import_reference_bare_world_model_state_dict_gets_its_prefix():
  sd = {"encoder.x": 1, "connector.y": 2}
  assert ir._agent_state_dict(sd) == {"wm.encoder.x": 1, "wm.connector.y": 2}
  assert ir._agent_state_dict({"wm.encoder.x": 1}) == {"wm.encoder.x": 1}


@pytest.mark.slow
def test_import_reference_then_behavior_stage_learns_from_a_precomputed_prompt(imported,
                                                                              tmp_path):
  """After the import, the behaviour stage runs on the imported MFWM exactly as on ours:
  a prompt embedded elsewhere (an `.npy` in the snapshot's VLM space, E = D), data-free
  starts (the import holds no episodes), one update, a checkpoint tied to this MFWM."""
  config = _config_from_command(imported)
  embedding = np.random.default_rng(0).normal(size=SIZES.embed_dim).astype(np.float32)
  np.save(tmp_path / "prompt.npy", embedding)
  b = config.behavior
  b.start = "data_free"
  b.prompt.embedding = str(tmp_path / "prompt.npy")
  b.batch_size, b.batch_length = 8, 16
  b.actor.units = b.critic.units = 32
  b.actor.layers = b.critic.layers = 1
  b.num_steps, b.log_every, b.save_every = 1, 1, 1
  run = behavior_stage.train_behavior(config, imported, None, progress=False)
  assert int(run.state.step) == 1
  assert run.mfwm_fingerprint == checkpoints.params_fingerprint(
      mfwm_lib.load(os.path.join(imported, "mfwm")))
  assert os.path.isdir(os.path.join(imported, "behavior", "stickman_walk", "1"))


def test_import_reference_next_commands_are_shell_lines_that_round_trip():
  import subprocess  # pylint: disable=g-import-not-at-top

  def bash_words(line: str) -> list[str]:  # what bash passes to the program
    out = subprocess.run(["bash", "-c", f"printf '%s\\0' {line}"], capture_output=True,
                         check=True).stdout
    return out.decode().split("\0")[:-1]

  commands = ir.next_commands("configs/walker.py", ["--config.world_model.deter=64"],
                              "/runs/my run", "walker_walk", "/models/iv2 $HOME.pt")
  assert [argv[-1] for _, argv in commands] == ["--mode=behavior", "--mode=eval"]
  assert "--config.behavior.start=data_free" in commands[0][1]
  text = ir.format_commands(commands + [("a prompt", ['--config.behavior.prompt.text=say "hi"'])])
  lines = [line.strip() for line in text.splitlines() if not line.strip().startswith("#")]
  assert [bash_words(line) for line in lines] == [argv for _, argv in commands] + [
      ['--config.behavior.prompt.text=say "hi"']]
  assert "\"--workdir=/runs/my run\"" in text and "\\$HOME" in text
  # A world model that cannot act in the task's environment gets no evaluation command.
  assert len(ir.next_commands("configs/walker.py", [], "/r", "walker_walk", None, False)) == 1
