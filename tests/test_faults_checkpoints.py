"""Damaged checkpoints (docs/reliability.md): a truncated file, flipped bytes, a missing
commit marker or a missing file in the newest step is found before any parameter is read,
named in a warning, set aside (never deleted) and the newest intact step used; with no
intact step, one error. Told apart from a checkpoint of other model sizes.

The fast tests damage small `Checkpointer` checkpoints; the slow ones run
`experiments/main.py --mode=mfwm` on a micro config, as a user would, and read its output.
"""

from __future__ import annotations

import asyncio
import gc
import glob
import logging
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

import synthetic
from genrl_jax import files
from genrl_jax.train import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tree(step: int) -> dict:
  return {"w": np.arange(20_000, dtype=np.float32) + step, "b": np.full(3, step, np.int32)}


def _target() -> dict:
  return {"w": np.zeros(20_000, np.float32), "b": np.zeros(3, np.int32)}


def _save(directory: str, steps=(1, 2)) -> None:
  ckpt = checkpoints.Checkpointer(directory, save_every=1, keep=5, config={"run": "test"})
  for step in steps:
    ckpt.save(step, _tree(step))
  ckpt.close()


def _largest_data_file(step_dir: str) -> str:
  return max(glob.glob(os.path.join(step_dir, "state", "ocdbt.process_0", "d", "*")),
             key=os.path.getsize)


def _flip(path: str, at: int | None = None) -> None:
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2 if at is None else at] ^= 0x5A
  open(path, "wb").write(bytes(data))


# Each fault: what it does to a step folder, and the words the warning names it with.
FAULTS = {
    "truncated data file": (lambda d: os.truncate(_largest_data_file(d), 1000),
                            "truncated (1000 of"),
    "flipped bytes in a data file": (lambda d: _flip(_largest_data_file(d)),
                                     "content changed"),
    "flipped byte in the array metadata": (
        lambda d: _flip(os.path.join(d, "state", "_METADATA"), at=2), "content changed"),
    "missing commit marker": (lambda d: os.remove(os.path.join(d, checkpoints.COMMIT_MARKER)),
                              "commit marker missing"),
    "missing data file": (lambda d: os.remove(_largest_data_file(d)), "missing"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_damaged_newest_step_is_named_set_aside_and_the_older_one_restored(
    fault, tmp_path, caplog):
  directory = str(tmp_path / "ckpt")
  _save(directory)
  damage, words = FAULTS[fault]
  damage(os.path.join(directory, "2"))
  ckpt = checkpoints.Checkpointer(directory, save_every=1, keep=5, config={})
  with caplog.at_level(logging.WARNING):
    restored = ckpt.restore(_target())
  np.testing.assert_array_equal(restored["w"], _tree(1)["w"])  # step 1's, never step 2's
  warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
  assert f"{directory}/2 is damaged" in warning and words in warning, warning
  assert "moved aside" in warning and "using step 1" in warning, warning
  # Kept for inspection, under a name no reader takes for a step ...
  assert sorted(os.listdir(directory)) == ["1", "2.damaged"]
  assert checkpoints.list_steps(directory) == [1]
  # ... so that the run's own save of step 2 does not collide with it.
  assert ckpt.save(2, _tree(22))
  np.testing.assert_array_equal(ckpt.restore(_target())["w"], _tree(22)["w"])
  ckpt.close()
  assert sorted(os.listdir(directory)) == ["1", "2", "2.damaged"]


def test_every_step_damaged_is_one_error_and_nothing_is_moved(tmp_path):
  directory = str(tmp_path / "ckpt")
  _save(directory)
  os.truncate(_largest_data_file(os.path.join(directory, "2")), 1000)
  _flip(_largest_data_file(os.path.join(directory, "1")))
  ckpt = checkpoints.Checkpointer(directory, save_every=1, keep=5, config={})
  with pytest.raises(checkpoints.CheckpointError) as raised:
    ckpt.restore_or_keep(_target())
  message = str(raised.value)
  assert "\n" not in message
  assert message.startswith(f"no intact checkpoint in {directory}, nothing was loaded")
  assert "step 2: state/ocdbt.process_0/d/" in message and "truncated" in message
  assert "step 1: " in message and "content changed" in message
  assert sorted(os.listdir(directory)) == ["1", "2"]
  ckpt.close()


def test_a_second_damaged_copy_of_a_step_gets_its_own_name(tmp_path):
  directory = str(tmp_path / "ckpt")
  _save(directory)
  for _ in range(2):
    ckpt = checkpoints.Checkpointer(directory, save_every=1, keep=5, config={})
    ckpt.save(2, _tree(2))
    os.remove(os.path.join(directory, "2", checkpoints.COMMIT_MARKER))
    assert ckpt.latest_step() == 1
    ckpt.close()
  assert sorted(os.listdir(directory)) == ["1", "2.damaged", "2.damaged-2"]


def test_readers_skip_a_damaged_step_leave_it_in_place_and_refuse_it_by_number(
    tmp_path, caplog):
  directory = str(tmp_path / "ckpt")
  _save(directory)
  _flip(_largest_data_file(os.path.join(directory, "2")))
  with caplog.at_level(logging.WARNING):
    w = checkpoints.restore_subtree(directory, ("w",))
    config = checkpoints.read_checkpoint_config(directory)
  np.testing.assert_array_equal(w, _tree(1)["w"])
  assert config["run"] == "test"
  assert checkpoints.newest_intact_step(directory) == 1
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
              and "is damaged" in r.getMessage()]
  assert len(warnings) == 1 and "left in place" in warnings[0], warnings  # once per process
  assert sorted(os.listdir(directory)) == ["1", "2"]
  with pytest.raises(checkpoints.CheckpointError, match="ckpt/2 is damaged, nothing was "
                     "loaded: state/ocdbt.process_0/d/.*content changed"):
    checkpoints.restore_subtree(directory, ("w",), step=2)


# Orbax's failed reads leave coroutines that may be reported at collection time.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_step_saved_without_checksums_is_judged_by_orbax_reading_it(tmp_path, caplog):
  directory = str(tmp_path / "ckpt")
  _save(directory)
  step_dir = os.path.join(directory, "2")
  os.remove(os.path.join(step_dir, files.CHECKSUM_FILE))  # as saved before the records
  assert checkpoints.step_damage(directory, 2) == []  # nothing to compare against
  os.truncate(_largest_data_file(step_dir), 1000)
  ckpt = checkpoints.Checkpointer(directory, save_every=1, keep=5, config={})
  with caplog.at_level(logging.WARNING):
    restored = ckpt.restore(_target())
  ckpt.close()
  np.testing.assert_array_equal(restored["w"], _tree(1)["w"])
  warning = " ".join(r.getMessage() for r in caplog.records)
  assert "/2 is damaged (Orbax cannot read it" in warning and "moved aside" in warning
  assert sorted(os.listdir(directory)) == ["1", "2.damaged"]


def test_closed_event_loop_reports_of_a_failed_read_are_dropped(monkeypatch):
  # When one of Orbax's concurrent reads fails, the others report "Event loop is closed"
  # through sys.unraisablehook from TensorStore's threads, when they finish: as many as
  # were in flight, so none on some runs and dozens on others (also after the `error:` line).
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", seen.append)
  checkpoints._quiet_closed_loop_reports()  # pylint: disable=protected-access
  checkpoints._quiet_closed_loop_reports()  # pylint: disable=protected-access  (once only)
  report = lambda e: types.SimpleNamespace(exc_type=type(e), exc_value=e, exc_traceback=None,
                                           err_msg=None, object=None)
  sys.unraisablehook(report(RuntimeError("Event loop is closed")))
  # A read coroutine left unawaited reports its own failure (timing-dependent as well).
  sys.unraisablehook(report(Exception("Encountered error while reading array index: ().")))
  other = report(RuntimeError("something else"))
  sys.unraisablehook(other)
  assert seen == [other]


def test_unretrieved_failed_read_tasks_are_not_reported_by_asyncio(monkeypatch):
  # A read task garbage-collected with its error never retrieved is reported by asyncio's
  # logger ("Task exception was never retrieved"), not by sys.unraisablehook.
  monkeypatch.setattr(sys, "unraisablehook", lambda report: None)
  checkpoints._quiet_closed_loop_reports()  # pylint: disable=protected-access
  seen = []
  handler = logging.Handler()
  handler.emit = seen.append
  asyncio_logger = logging.getLogger("asyncio")
  asyncio_logger.addHandler(handler)

  async def async_deserialize(message):
    raise Exception(message)  # pylint: disable=broad-exception-raised

  def leave_unretrieved(message):
    loop = asyncio.new_event_loop()
    task = loop.create_task(async_deserialize(message))
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    del task
    gc.collect()

  try:
    leave_unretrieved("Encountered error while reading array index: (slice(0, 4, 1),).")
    assert seen == []
    leave_unretrieved("something else")
    assert [r.exc_info[1].args for r in seen] == [("something else",)]
  finally:
    asyncio_logger.removeHandler(handler)


def test_other_model_sizes_are_a_config_mismatch_not_damage(tmp_path):
  directory = str(tmp_path / "ckpt")
  _save(directory)
  ckpt = checkpoints.Checkpointer(directory, save_every=1, keep=5, config={})
  bigger = dict(_target(), w=np.zeros(30_000, np.float32))
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"cannot be restored into the state built from the current "
                     r"config \(different model sizes\?\): w: saved \(20000,\) float32, "
                     r"expected \(30000,\) float32"):
    ckpt.restore(bigger)
  ckpt.close()
  assert sorted(os.listdir(directory)) == ["1", "2"]  # nothing set aside


def test_each_step_records_the_checksums_of_its_files(tmp_path):
  directory = str(tmp_path / "ckpt")
  _save(directory, steps=(1,))
  step_dir = os.path.join(directory, "1")
  import json  # pylint: disable=g-import-not-at-top
  with open(os.path.join(step_dir, files.CHECKSUM_FILE)) as f:
    record = json.load(f)["files"]
  assert set(record) == set(files.folder_files(step_dir))
  assert checkpoints.COMMIT_MARKER in record and "state/_METADATA" in record
  assert all(len(v["sha256"]) == 64 for v in record.values())


# ---------------------------------------------------------------------------------------
# The user's report, end to end: `main.py --mode=mfwm` on a workdir whose newest MFWM step
# has a data file cut to 1000 bytes.

MICRO_FLAGS = (
    "--config.vlm.name=random_projection", "--config.connector.embed_dim=16",
    "--config.world_model.deter=32", "--config.world_model.hidden=32",
    "--config.world_model.stoch=4", "--config.world_model.discrete=4",
    "--config.world_model.mlp_units=32", "--config.world_model.mlp_layers=1",
    "--config.batch_size=8", "--config.batch_length=8", "--config.compute_dtype=float32",
    "--config.mfwm.save_every=3", "--config.mfwm.log_every=3",
    "--config.mfwm.heldout_episodes=0")


def _main(workdir: str, data: str, *args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", "main.py"),
       "--config=configs/walker.py:tiny", f"--workdir={workdir}", "--mode=mfwm",
       f"--config.data.path={data}", *MICRO_FLAGS, *args],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A workdir whose MFWM has steps 3 and 6, and its dataset."""
  data = synthetic.write_episodes(str(tmp_path_factory.mktemp("data") / "d"), embed_dim=16)
  workdir = str(tmp_path_factory.mktemp("run") / "w")
  result = _main(workdir, data, "--config.mfwm.num_steps=6")
  assert result.returncode == 0, result.stderr[-4000:]
  assert checkpoints.list_steps(os.path.join(workdir, "mfwm")) == [3, 6]
  return workdir, data


@pytest.mark.slow
def test_main_resumes_past_a_truncated_checkpoint_file_without_noise(trained, tmp_path):
  source, data = trained
  workdir = str(tmp_path / "w")
  shutil.copytree(source, workdir)
  step_dir = os.path.join(workdir, "mfwm", "6")
  # Saved before checksum records (the user's workdir): Orbax's read finds the damage.
  os.remove(os.path.join(step_dir, files.CHECKSUM_FILE))
  damaged = _largest_data_file(step_dir)
  os.truncate(damaged, 1000)
  result = _main(workdir, data, "--config.mfwm.num_steps=9")
  assert result.returncode == 0, result.stderr[-4000:]
  assert f"checkpoint {step_dir} is damaged (Orbax cannot read it" in result.stderr
  assert f"moved aside to {step_dir}.damaged" in result.stderr
  assert "mfwm: resumed from step 3" in result.stderr
  assert "Event loop is closed" not in result.stderr and "Traceback" not in result.stderr
  assert {"6", "6.damaged", "9"} <= set(os.listdir(os.path.join(workdir, "mfwm")))
  assert os.path.getsize(damaged.replace("/6/", "/6.damaged/")) == 1000  # kept as found


@pytest.mark.slow
def test_main_with_every_checkpoint_damaged_prints_one_error_line(trained, tmp_path):
  source, data = trained
  workdir = str(tmp_path / "w")
  shutil.copytree(source, workdir)
  for step in ("3", "6"):
    os.truncate(_largest_data_file(os.path.join(workdir, "mfwm", step)), 1000)
  result = _main(workdir, data, "--config.mfwm.num_steps=9")
  assert result.returncode == 1
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and errors[0].startswith(
      f"error: stage mfwm: no intact checkpoint in {workdir}/mfwm"), result.stderr[-3000:]
  assert "step 6: state/ocdbt.process_0/d/" in errors[0] and "truncated (1000 of" in errors[0]
  tail = result.stderr[result.stderr.index(errors[0]):]
  assert tail.strip() == errors[0]  # nothing after it: no library traceback
  assert "Traceback" not in result.stderr and "Event loop is closed" not in result.stderr
  assert checkpoints.list_steps(os.path.join(workdir, "mfwm")) == [3, 6]
