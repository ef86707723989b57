"""Multi-process jobs with real processes on CPU: 2 processes x 2 simulated devices joined
over loopback (gloo collectives), started by `launch/local.py`.

Checked: identical parameters on both processes and equal to one process on 4 devices with
the same global batches; Orbax checkpoints of the 2-process job restore in a fresh
2-process job (and training resumes) and in one process; the real pipeline (data stage
with the embedding split over processes, MFWM, behaviour) end to end; a process that dies
stops the other within a bounded time; bad input (unreachable coordinator, processes that
do not all join, different process counts, a global batch that does not divide over the
devices) fails with clear errors; sweeps of behaviour jobs from one MFWM. Every subprocess
runs under a timeout and is killed with SIGKILL (JAX handles SIGTERM itself). All
processes share one persistent compilation cache, so each program compiles once.
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from fault_tally import record, tally  # noqa: F401  (tally: an autouse fixture)
import synthetic
from genrl_jax.data import dataset as dataset_lib
from genrl_jax.data import dataset_reader
from genrl_jax.data import embed as embed_lib
from genrl_jax.report.metrics import read_metrics
from genrl_jax.train import checkpoints
from genrl_jax.train import distributed
from genrl_jax.vlm import embedder as embedder_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "launch"))
import local as local_launcher  # pylint: disable=wrong-import-position
import sweep as sweep_lib  # pylint: disable=wrong-import-position

pytestmark = pytest.mark.slow  # multi-process jobs in subprocesses: the full tier only

PY = sys.executable
LAUNCH = os.path.join(ROOT, "launch", "local.py")
SWEEP = os.path.join(ROOT, "launch", "sweep.py")
WORKER = os.path.join(ROOT, "tests", "multihost_worker.py")
MAIN = os.path.join(ROOT, "experiments", "main.py")
TIMEOUT = 240  # seconds for any one command of these tests
# Runs that should succeed keep the default heartbeat timeout (50 s): CI once ended both
# processes of a healthy 2-process job after 10 s without heartbeats on a loaded 2-core
# machine. Only the failure tests pass 10 s, to bound how long a dead process goes unseen.
JOB_FLAGS = ["--init_timeout=60"]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
  """The environment of every process: CPU, one compilation cache for all of them."""
  cache = str(tmp_path_factory.mktemp("jax_cache"))
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
              JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")


def _with_devices(env: dict[str, str], n: int) -> dict[str, str]:
  return local_launcher.process_env(0, n, 0, env)


def run(cmd: list[str], env: dict[str, str], timeout: float = TIMEOUT) -> tuple[int, str]:
  """Runs `cmd` to its end (SIGTERM then SIGKILL after `timeout`); returns status, output."""
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True)
  try:
    out, _ = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.terminate()  # the launcher kills its processes on SIGTERM
    time.sleep(3)
    os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate()
    pytest.fail(f"{' '.join(cmd)} ran over {timeout} s:\n{out[-6000:]}")
  return proc.returncode, out


def launch(args: list[str], env: dict[str, str], processes: int = 2, devices: int = 2,
           script: str = WORKER) -> tuple[int, str]:
  return run([PY, LAUNCH, f"--num_processes={processes}", f"--devices_per_process={devices}",
              f"--script={script}", f"--timeout={TIMEOUT - 20}", "--", *args], env)


def _logged(out: str, process: int, text: str) -> bool:
  """Whether process `process` printed a line containing `text`."""
  return any(line.startswith(f"[p{process}]") and text in line for line in out.splitlines())


def _params(path: str) -> dict[str, np.ndarray]:
  with np.load(path) as z:
    return {k: z[k] for k in z.files}


def _assert_same_structure(a: dict, b: dict) -> None:
  """The same non-empty set of keys, and per key the same shape and dtype (no
  broadcasting: `(1,)` against `(3,)` is a mismatch)."""
  assert a and b, "nothing to compare"
  missing, extra = sorted(set(a) - set(b)), sorted(set(b) - set(a))
  assert not missing and not extra, (f"keys only in the first: {missing}, "
                                     f"only in the second: {extra}")
  for k in a:
    assert a[k].shape == b[k].shape, f"{k}: shape {a[k].shape} != {b[k].shape}"
    assert a[k].dtype == b[k].dtype, f"{k}: dtype {a[k].dtype} != {b[k].dtype}"


def _assert_equal(a: dict, b: dict) -> None:
  """Bit-identical arrays under the same keys."""
  _assert_same_structure(a, b)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _assert_close(a: dict, b: dict) -> None:
  """Every array equal up to the order of float sums (all-reduce over 2 processes vs one
  process), under the same keys with the same shapes."""
  _assert_same_structure(a, b)
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("compare", [_assert_equal, _assert_close])
def test_param_comparisons_fail_on_any_difference(compare):
  """The helpers above fail on one differing leaf, a missing or extra key, a shape or dtype
  mismatch and an empty tree; they pass on equal trees (fast: no processes)."""
  rng = np.random.default_rng(0)
  a = {"w/kernel": rng.normal(size=(3, 4)).astype(np.float32),
       "w/bias": rng.normal(size=(4,)).astype(np.float32), "step": np.array(3)}
  copy = lambda: {k: v.copy() for k, v in a.items()}
  compare(a, copy())
  differing = copy()
  differing["w/bias"][2] += 1e-2
  missing = copy()
  del missing["w/bias"]
  extra = {**copy(), "w/extra": np.zeros(2, np.float32)}
  reshaped = {**copy(), "w/bias": a["w/bias"][:1]}  # broadcasts in assert_allclose
  retyped = {**copy(), "w/bias": a["w/bias"].astype(np.float64)}
  for b in (differing, missing, extra, reshaped, retyped):
    with pytest.raises(AssertionError):
      compare(a, b)
    with pytest.raises(AssertionError):
      compare(b, a)
  with pytest.raises(AssertionError):
    compare({}, {})


def test_param_comparisons_tolerance():
  """`_assert_close` accepts float-sum-order differences, `_assert_equal` does not."""
  a = {"w": np.linspace(-1, 1, 10, dtype=np.float32)}
  b = {"w": a["w"] * np.float32(1 + 1e-6)}
  _assert_close(a, b)
  with pytest.raises(AssertionError):
    _assert_equal(a, b)


@pytest.fixture(scope="module")
def two_process_run(env, tmp_path_factory):
  """2 processes x 2 devices: 3 MFWM updates, checkpoint at step 3."""
  root = tmp_path_factory.mktemp("two_process")
  out_dir, ckpt = str(root / "out"), str(root / "ckpt")
  code, out = launch([f"--out={out_dir}", "--dump_steps=3", f"--ckpt={ckpt}"], env)
  assert code == 0, out[-6000:]
  return out_dir, ckpt, out


@pytest.fixture(scope="module")
def one_process_run(env, two_process_run, tmp_path_factory):
  """1 process x 4 devices: the same updates; first restores the 2-process checkpoint."""
  _, ckpt, _ = two_process_run
  out_dir = str(tmp_path_factory.mktemp("one_process"))
  code, out = run([PY, WORKER, f"--out={out_dir}", "--dump_steps=3,4",
                   f"--restore_from={ckpt}"], _with_devices(env, 4))
  assert code == 0, out[-6000:]
  return out_dir, out


def test_multihost_processes_end_with_identical_parameters(two_process_run):
  out_dir, ckpt, out = two_process_run
  _assert_equal(_params(f"{out_dir}/step3_p0.npz"), _params(f"{out_dir}/step3_p1.npz"))
  assert "[p0] process 0/2" in out and "[p1] process 1/2" in out  # identity lines
  assert "2 local devices" in out and "of 4 global" in out
  assert checkpoints.Checkpointer(ckpt, save_every=3, keep=3, config={}).all_steps() == [3]


def test_multihost_equals_one_process_on_four_devices_with_the_same_batches(
    two_process_run, one_process_run):
  two_dir, _, _ = two_process_run
  one_dir, out = one_process_run
  assert "process 0/1" in out and "4 local devices" in out
  _assert_close(_params(f"{two_dir}/step3_p0.npz"), _params(f"{one_dir}/step3_p0.npz"))


def test_multihost_checkpoint_restores_in_one_process(two_process_run, one_process_run):
  two_dir, _, _ = two_process_run
  one_dir, out = one_process_run
  assert "restored step 3" in out
  _assert_equal(_params(f"{two_dir}/step3_p0.npz"), _params(f"{one_dir}/restored_p0.npz"))


def test_multihost_checkpoint_resumes_in_a_fresh_two_process_run(env, two_process_run,
                                                                 one_process_run, tmp_path):
  two_dir, ckpt, _ = two_process_run
  one_dir, _ = one_process_run
  code, out = launch([f"--out={tmp_path}", f"--restore_from={ckpt}", "--train_from_restored",
                      "--dump_steps=4", f"--ckpt={ckpt}"], env)
  assert code == 0, out[-6000:]
  saved = _params(f"{two_dir}/step3_p0.npz")
  for p in (0, 1):
    _assert_equal(saved, _params(f"{tmp_path}/restored_p{p}.npz"))
  resumed = _params(f"{tmp_path}/step4_p0.npz")
  _assert_equal(resumed, _params(f"{tmp_path}/step4_p1.npz"))
  _assert_close(resumed, _params(f"{one_dir}/step4_p0.npz"))  # = an uninterrupted run
  assert checkpoints.Checkpointer(ckpt, save_every=3, keep=3, config={}).all_steps() == [3, 4]


CONFIG_FILE = '''
import sys
sys.path.insert(0, {tests!r})
import synthetic


def get_config(arg=None):
  c = synthetic.micro_config({data!r})
  with c.unlocked():
    c.world_model.conv_impl = "native"  # compiles faster; not what these tests check
    c.vlm.name = "random_projection"
    c.mfwm.num_steps, c.mfwm.log_every, c.mfwm.save_every = 3, 1, 1
    synthetic.micro_behavior(c, num_steps=2, log_every=1, save_every=1)
  return c
'''


def _micro_job(root) -> tuple[str, str, str]:
  """In the folder `root`: a dataset of 4 one-episode shards, a config file for
  experiments/main.py (`micro_config` on it) and the workdir's path."""
  data = synthetic.write_episodes(str(root / "episodes"), num=4, length=24,
                                  episodes_per_shard=1)
  path = root / "micro.py"
  path.write_text(CONFIG_FILE.format(tests=os.path.join(ROOT, "tests"), data=data))
  return data, str(path), str(root / "work")


@pytest.fixture(scope="module")
def pipeline_run(env, tmp_path_factory, two_process_run):
  """experiments/main.py as 2 processes x 2 devices: the data stage (embeds a dataset of
  4 one-episode shards), the MFWM stage (the program `two_process_run` compiled) and the
  behaviour stage. Returns the workdir, the config file, the dataset and each output."""
  del two_process_run  # only run after it, for its compilation cache
  data, config, workdir = _micro_job(tmp_path_factory.mktemp("pipeline"))
  outputs = {}
  for mode in ("data", "mfwm", "behavior"):
    code, out = launch([f"--config={config}", f"--workdir={workdir}", f"--mode={mode}",
                        *JOB_FLAGS], env, script=MAIN)
    assert code == 0, f"--mode={mode}:\n{out[-6000:]}"
    outputs[mode] = out
  return workdir, config, data, outputs


def _start_job(args: list[str], env: dict[str, str]
               ) -> list[tuple[subprocess.Popen, list[str], threading.Thread]]:
  """The 2 processes of a job of experiments/main.py started directly, as a cluster
  scheduler starts them (not by launch/local.py, which would stop the others itself when
  one dies); each with a thread collecting its output lines."""
  address = f"127.0.0.1:{local_launcher.free_port()}"
  job = []
  for p in (0, 1):
    proc = subprocess.Popen(
        [PY, MAIN, *args, f"--coordinator_address={address}", "--num_processes=2",
         f"--process_id={p}", *JOB_FLAGS], cwd=ROOT, env=_with_devices(env, 2), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines = []
    reader = threading.Thread(target=_read_lines, args=(proc, lines), daemon=True)
    reader.start()
    job.append((proc, lines, reader))
  return job


def _embeddings(data: str) -> dict[int, bytes]:
  """episode id -> its VLM embeddings' bytes, over every embedding shard of `data`."""
  out = {}
  folder = os.path.join(data, "embeddings", synthetic.SYNTHETIC_VLM)
  for name in dataset_lib.shard_names(folder):
    source = dataset_lib.open_shard(os.path.join(folder, name))
    for i in range(len(source)):
      out[int(source[i]["episode_id"])] = source[i]["vlm_embedding"].tobytes()
  return out


# Per stage: the process killed, and the point it is killed at (the workdir, the dataset
# and process 0's output so far).
_KILLS = (
    ("data", 1, lambda work, data, out: "stage data" in out),
    ("mfwm", 0, lambda work, data, out: os.path.exists(
        os.path.join(work, "mfwm", "1", "checksums.json"))),
    ("behavior", 1, lambda work, data, out: os.path.exists(
        os.path.join(work, "behavior", "walker_walk", "1", "checksums.json"))),
)


@pytest.fixture(scope="module")
def pipeline_with_lost_processes(env, tmp_path_factory, pipeline_run):
  """`pipeline_run`'s job again, with one process killed (SIGKILL) in each stage and the
  same command run again after the other stopped. Returns the workdir, the dataset, per
  stage the survivor's exit status, output and seconds from the kill to its exit, and the
  relaunch's output."""
  data, config, workdir = _micro_job(tmp_path_factory.mktemp("lost"))
  results = {}
  for mode, dies, kill_point in _KILLS:
    args = [f"--config={config}", f"--workdir={workdir}", f"--mode={mode}",
            "--heartbeat_timeout=20"]
    job = _start_job(args, env)
    try:
      deadline = time.monotonic() + TIMEOUT
      while not kill_point(workdir, data, "".join(job[0][1])):
        assert time.monotonic() < deadline and job[dies][0].poll() is None, (
            f"--mode={mode}: ended before its kill point:\n" + "".join(job[0][1])[-4000:])
        time.sleep(0.05)
      killed_at = time.monotonic()
      os.killpg(job[dies][0].pid, signal.SIGKILL)
      survivor, lines, reader = job[1 - dies]
      try:
        code = survivor.wait(timeout=TIMEOUT)
      except subprocess.TimeoutExpired:
        pytest.fail(f"--mode={mode}: the surviving process still runs {TIMEOUT} s after "
                    "the other died:\n" + "".join(lines)[-4000:])
      stopped_after = time.monotonic() - killed_at
      reader.join(timeout=60)  # to the end of its output (and its stderr filter's)
      survived = (code, "".join(lines), stopped_after)
    finally:
      for proc, _, _ in job:
        if proc.poll() is None:
          os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    code, out = launch(args, env, script=MAIN)
    assert code == 0, f"--mode={mode} again:\n{out[-6000:]}"
    results[mode] = survived, out
  return workdir, data, results


@pytest.mark.parametrize("mode,dies", [(mode, dies) for mode, dies, _ in _KILLS])
def test_multihost_a_process_lost_in_a_stage_stops_the_other_naming_it(
    pipeline_with_lost_processes, mode, dies):
  (code, out, stopped_after), _ = pipeline_with_lost_processes[2][mode]
  assert code != 0
  named = ("error: process 1 of this 2-process job stopped sending heartbeats" if dies
           else "error: lost the coordinator of this 2-process job, process 0 at")
  assert named in out and "Run the same command again" in out, out[-4000:]
  assert "Traceback" not in out and "Check failure stack trace" not in out, out[-4000:]
  # Seen after the heartbeat timeout (20 s here, 50 s by default) at most; a loaded
  # machine may add a few seconds.
  print(f"--mode={mode}: process {1 - dies} stopped {stopped_after:.1f} s after process "
        f"{dies} was killed")
  record(f"multi-host: a process killed in the {mode} stage", 1)


def test_multihost_relaunch_after_lost_processes_ends_as_the_uninterrupted_job(
    pipeline_run, pipeline_with_lost_processes):
  workdir, data, results = pipeline_with_lost_processes
  clean_workdir, _, clean_data, _ = pipeline_run
  # The same embeddings, and bit-identical parameters of the MFWM and the behaviour.
  assert _embeddings(data) == _embeddings(clean_data) and len(_embeddings(data)) == 4
  for sub in (("mfwm",), ("behavior", "walker_walk")):
    got = checkpoints.restore_subtree(os.path.join(workdir, *sub), ("params",))
    want = checkpoints.restore_subtree(os.path.join(clean_workdir, *sub), ("params",))
    _assert_equal(_flat(got), _flat(want))
  # The training stages resumed from their checkpoints instead of starting over.
  assert "mfwm: resumed from step" in results["mfwm"][1]
  assert "resumed from step" in results["behavior"][1]
  assert [r["step"] for r in read_metrics(workdir, "mfwm")][-1] == 3


def _flat(tree, prefix="") -> dict[str, np.ndarray]:
  if isinstance(tree, dict):
    return {k: v for key in tree for k, v in _flat(tree[key], f"{prefix}{key}/").items()}
  return {prefix.rstrip("/"): np.asarray(tree)}


def test_multihost_pipeline_embeds_trains_and_logs_on_process_zero(pipeline_run):
  workdir, _, data, outputs = pipeline_run
  dataset = dataset_reader.open_dataset(data)
  embedded = dataset.embedding_sets[synthetic.SYNTHETIC_VLM].shards
  assert sorted(embedded) == sorted(s.name for s in dataset.shards)
  # Process 0 embedded its 2 shards of 4, process 1 the others.
  assert "data: embedded 2 episodes" in outputs["data"]
  for mode, stage in (("mfwm", "mfwm"), ("behavior", "behavior/walker_walk")):
    out = outputs[mode]
    assert _logged(out, 0, "] process 0/2 on") and _logged(out, 1, "] process 1/2 on")
    assert f"[{stage}] parameters identical on all 2 processes" in out
    # Logs, metric lines and progress bars come from process 0 alone.
    p1_lines = [line for line in out.splitlines() if line.startswith("[p1]")]
    assert not [line for line in p1_lines if f"[{stage}] step" in line or "it/s" in line]
  # Training lines, then the open-loop report (process 0 alone).
  assert [r["step"] for r in read_metrics(workdir, "mfwm")] == [1, 2, 3, 3]
  assert [r["step"] for r in read_metrics(workdir, "behavior_walker_walk")] == [1, 2]
  assert os.path.getsize(os.path.join(workdir, "behavior", "walker_walk",
                                      "prompt_target.gif")) > 0
  # The 2-process checkpoint opens in this single process (8 devices).
  params = checkpoints.restore_subtree(os.path.join(workdir, "mfwm"), ("params",))
  assert {"world_model", "connector", "aligner"} <= set(params)


def test_multihost_sweep_runs_task_seed_jobs_and_writes_the_table(env, pipeline_run):
  workdir, config, _, _ = pipeline_run
  code, out = run([PY, SWEEP, f"--workdir={workdir}", f"--config={config}",
                   "--tasks=walker_walk,walker_run", "--seeds=0,1", "--parallel=2",
                   "--name=test"], _with_devices(env, 1))
  assert code == 0, out[-6000:]
  sweep_dir = os.path.join(workdir, "sweeps", "test")
  with open(os.path.join(sweep_dir, "results.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [(r["task"], r["seed"]) for r in rows] == [
      ("walker_walk", "0"), ("walker_walk", "1"), ("walker_run", "0"), ("walker_run", "1")]
  assert all(r["status"] == "ok" and r["source"] == "train" and r["step"] == "2"
             and np.isfinite(float(r["imag_reward_mean"])) for r in rows)
  with open(os.path.join(sweep_dir, "results.md")) as f:
    table = f.read()
  assert "| walker_run |" in table and "(n=2)" in table
  # Each job learned its own behaviour, seeded by its seed.
  actors = {s: checkpoints.restore_subtree(
      os.path.join(workdir, "behavior", f"walker_walk_s{s}"), ("params", "actor"))
            for s in (0, 1)}
  first = lambda tree: np.asarray(next(iter(_leaves(tree))))
  assert not np.array_equal(first(actors[0]), first(actors[1]))
  assert os.path.exists(os.path.join(sweep_dir, "logs", "walker_run_s1.log"))


def _leaves(tree):
  if isinstance(tree, dict):
    for k in sorted(tree):
      yield from _leaves(tree[k])
  else:
    yield tree


def test_multihost_sweep_refuses_a_workdir_without_mfwm(tmp_path):
  code, out = run([PY, SWEEP, f"--workdir={tmp_path}", "--config=configs/walker.py:tiny",
                   "--tasks=walker_walk"], dict(os.environ), timeout=60)
  assert code != 0 and "holds no MFWM checkpoint" in out


def test_sweep_table_prefers_eval_of_the_latest_checkpoint(tmp_path):
  workdir = str(tmp_path)
  for name, step in (("walker_walk_s0", 4), ("walker_walk_s1", 4)):
    os.makedirs(os.path.join(workdir, "behavior", name, str(step)))
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
      f.write(f'{{"step": {step}, "stage": "behavior_{name}", "imag_reward_mean": 0.5}}\n')
  eval_json = ('{{"task": "walker_walk", "episodes": 5, "mean_return": {r}, "std_return": 1.0,'
               ' "normalized_score": 0.25, "checkpoint_step": {step}}}')
  with open(os.path.join(workdir, "behavior", "walker_walk_s0", "eval.json"), "w") as f:
    f.write(eval_json.format(r=100.0, step=4))
  with open(os.path.join(workdir, "behavior", "walker_walk_s1", "eval.json"), "w") as f:
    f.write(eval_json.format(r=50.0, step=2))  # stale: of an older checkpoint
  rows = [dict(sweep_lib.job_result(workdir, "walker_walk", s), status="ok") for s in (0, 1)]
  assert rows[0]["source"] == "eval" and rows[0]["mean_return"] == 100.0
  assert rows[1]["source"] == "train" and rows[1].get("mean_return") is None
  assert rows[1]["imag_reward_mean"] == 0.5 and rows[1]["step"] == 4
  table = sweep_lib.results_markdown(rows, "t")
  assert "| walker_walk | 100 ± 0 (n=1) | 0.25 ± 0 (n=1) | 0.5 ± 0 (n=2) |" in table


def _read_lines(proc: subprocess.Popen, lines: list[str]) -> None:
  for line in proc.stdout:
    lines.append(line)


@pytest.mark.parametrize("dies", [1, 0])
def test_multihost_a_dead_process_stops_the_other(env, tmp_path, dies):
  """Process `dies` is killed mid-training; the other must exit with one error line naming
  it (its heartbeat times out after 10 s; process 0's loss is seen at once) instead of
  waiting for it forever. A survivor still running after a generous wait fails the
  test."""
  address = f"127.0.0.1:{local_launcher.free_port()}"
  procs, outputs, readers = [], [], []
  try:
    for p in (0, 1):
      procs.append(subprocess.Popen(
          [PY, WORKER, f"--coordinator_address={address}", "--num_processes=2",
           f"--process_id={p}", f"--out={tmp_path}", "--model=tiny", "--dump_steps=1000",
           "--step_sleep=0.2",
           "--heartbeat_timeout=10"], cwd=ROOT, env=_with_devices(env, 2), text=True,
          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True))
      outputs.append([])
      readers.append(threading.Thread(target=_read_lines, args=(procs[-1], outputs[-1]),
                                      daemon=True))
      readers[-1].start()
    deadline = time.monotonic() + TIMEOUT - 60
    while not any(line.startswith("batch 3") for line in outputs[dies]):
      assert time.monotonic() < deadline and procs[dies].poll() is None, "".join(outputs[dies])
      time.sleep(0.2)
    os.killpg(procs[dies].pid, signal.SIGKILL)
    survivor = procs[1 - dies]
    try:
      code = survivor.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
      pytest.fail(f"the surviving process still runs {TIMEOUT} s after the other died:\n"
                  + "".join(outputs[1 - dies])[-4000:])
    readers[1 - dies].join(timeout=60)  # it has read the survivor's output to the end
    out = "".join(outputs[1 - dies])
    assert code != 0
    named = ("error: process 1 of this 2-process job stopped sending heartbeats" if dies
             else "error: lost the coordinator of this 2-process job, process 0 at "
             f"{address}")
    assert named in out and "Run the same command again" in out, out[-4000:]
    # JAX's own report (C++ log lines and a stack trace) went to the file the line names.
    assert "Check failure stack trace" not in out and "coordination_service" not in out
    report = out.split("JAX's report: ")[1].split()[0]
    with open(report) as f:
      assert "Terminating process because the JAX distributed service" in f.read()
    record(f"multi-host: process {dies} killed mid-training (test worker)", 1)
  finally:
    for proc in procs:
      if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()


def test_multihost_launcher_stops_all_processes_when_one_fails(tmp_path):
  script = tmp_path / "job.py"
  script.write_text(
      "import argparse, os, sys, time\n"
      "p = argparse.ArgumentParser()\n"
      "for f in ('--coordinator_address', '--num_processes', '--process_id'):\n"
      "  p.add_argument(f)\n"
      "a = p.parse_args()\n"
      f"pid_file = os.path.join({str(tmp_path)!r}, 'pid%s' % a.process_id)\n"
      "open(pid_file, 'w').write(str(os.getpid()))\n"
      "print('started', a.process_id, a.num_processes, a.coordinator_address, flush=True)\n"
      "if a.process_id == '1':\n"
      "  time.sleep(1); sys.exit(7)\n"
      "time.sleep(300)\n")
  # Process 0 sleeps 300 s unless stopped: run()'s limit (TIMEOUT) fails the test if it is not.
  code, out = run([PY, LAUNCH, "--num_processes=2", f"--script={script}"], dict(os.environ))
  assert code == 7
  assert "[p0] started 0 2 127.0.0.1:" in out and "[p1] started 1 2" in out
  assert "process 1 exited with status 7; stopping the others" in out
  with pytest.raises(ProcessLookupError):  # process 0 was killed
    os.kill(int((tmp_path / "pid0").read_text()), 0)


def test_multihost_unreachable_coordinator_is_a_clear_error(tmp_path):
  address = f"127.0.0.1:{local_launcher.free_port()}"  # nobody listens there
  code, out = run([PY, MAIN, "--config=configs/walker.py:tiny", f"--workdir={tmp_path}",
                   f"--coordinator_address={address}", "--num_processes=2", "--process_id=1",
                   "--init_timeout=3"], dict(os.environ))
  assert code != 0
  assert f"the coordinator {address} could not be reached" in out


def test_multihost_processes_missing_at_start_are_a_clear_error(tmp_path):
  address = f"127.0.0.1:{local_launcher.free_port()}"
  # Process 0 of 2 alone: it hosts the coordinator, process 1 never comes.
  code, out = run([PY, MAIN, "--config=configs/walker.py:tiny", f"--workdir={tmp_path}",
                   f"--coordinator_address={address}", "--num_processes=2", "--process_id=0",
                   "--init_timeout=3"], dict(os.environ))
  assert code == distributed.JOIN_TIMEOUT_EXIT
  assert f"process 0 of 2 could not join the job at coordinator {address} within 3 s" in out


def test_multihost_different_process_counts_are_refused_on_every_process(env, tmp_path):
  address = f"127.0.0.1:{local_launcher.free_port()}"
  procs = [subprocess.Popen(
      [PY, MAIN, "--config=configs/walker.py:tiny", f"--workdir={tmp_path}",
       f"--coordinator_address={address}", f"--num_processes={n}", f"--process_id={p}",
       "--init_timeout=30", "--heartbeat_timeout=10"], cwd=ROOT, env=_with_devices(env, 1),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
      for p, n in ((0, 2), (1, 3))]
  try:
    outs = [proc.communicate(timeout=120)[0] for proc in procs]
  finally:
    for proc in procs:
      if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
  for proc, out in zip(procs, outs):
    assert proc.returncode != 0, out[-3000:]
    assert "started with different process counts (process 0: 2, process 1: 3)" in out, \
        out[-3000:]


def test_multihost_global_batch_must_divide_over_all_devices(env, tmp_path):
  code, out = launch([f"--out={tmp_path}", "--model=tiny", "--dump_steps=1",
                      "--global_batch=6"], env)
  assert code != 0
  assert "the global batch size (config.batch_size)=6 is not divisible by the 4 devices" in out


FAKE_SRUN = """#!/bin/bash
# srun on one machine: SLURM_NTASKS local copies of the command, with srun's variables.
while [[ $1 == --* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_STEP_NODELIST=$SLURM_JOB_NODELIST \
      "$@" > "$FAKE_SRUN_LOGS/task$i.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
"""


def test_multihost_slurm_script_starts_a_job_that_joins_from_slurm_variables(env, tmp_path):
  """launch/slurm.sbatch under a stand-in srun (local processes) and scontrol: the tasks
  join as one job from the SLURM variables and run the data stage (embedding split)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "srun").write_text(FAKE_SRUN)
  (bin_dir / "scontrol").write_text("#!/bin/bash\necho 127.0.0.1\n")
  for tool in ("srun", "scontrol"):
    os.chmod(bin_dir / tool, 0o755)
  data, config, workdir = _micro_job(tmp_path)
  port = local_launcher.free_port()
  job_env = dict(_with_devices(env, 1), PATH=f"{bin_dir}:{os.environ['PATH']}",
                 SLURM_JOB_ID="4242", SLURM_NTASKS="2", SLURM_JOB_NODELIST="127.0.0.1",
                 SLURM_JOB_NUM_NODES="1", SLURM_SUBMIT_DIR=ROOT, GENRL_PYTHON=PY,
                 GENRL_COORDINATOR_PORT=str(port), FAKE_SRUN_LOGS=str(tmp_path))
  code, out = run(["bash", os.path.join(ROOT, "launch", "slurm.sbatch"),
                   f"--config={config}", f"--workdir={workdir}", "--mode=data", *JOB_FLAGS],
                  job_env)
  logs = [(tmp_path / f"task{i}.log").read_text() for i in (0, 1)]
  assert code == 0, out + "\n".join(logs)
  assert f"coordinator 127.0.0.1:{port}" in out
  for i, log in enumerate(logs):
    assert f"joining the job as process {i} of 2 (from slurm)" in log
    assert f"] process {i}/2 on" in log
  dataset = dataset_reader.open_dataset(data)
  assert len(dataset.embedding_sets[synthetic.SYNTHETIC_VLM].shards) == 4


def test_multihost_job_resolution_from_flags_and_slurm():
  job = distributed.resolve_job("auto", "10.0.0.1:1234", 4, 3, environ={})
  assert job == distributed.Job("flags", "10.0.0.1:1234", 4, 3)
  assert distributed.resolve_job("auto", "10.0.0.1:1234", 1, 0, environ={}) is None
  assert distributed.resolve_job("auto", environ={}) is None  # a plain single-process run
  slurm = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "gpu[017-018,020],cpu1",
           "SLURM_NTASKS": "16", "SLURM_PROCID": "5", "SLURM_LOCALID": "1"}
  # JAX's own derivation of the port from the job id.
  assert distributed.resolve_job("auto", environ=slurm) == distributed.Job(
      "slurm", f"gpu017:{4242 % 4096 + 61440}", 16, 5)
  given = dict(slurm, JAX_COORDINATOR_ADDRESS="head:29500")
  assert distributed.resolve_job("auto", environ=given).coordinator_address == "head:29500"
  assert distributed.resolve_job("auto", "other:1", environ=given).coordinator_address \
      == "other:1"
  assert distributed.resolve_job("auto", environ=dict(slurm, SLURM_NTASKS="1")) is None
  assert distributed.resolve_job("off", environ=slurm) is None
  assert distributed.resolve_job("jax", environ={}).source == "jax"
  assert distributed.first_slurm_host("node7") == "node7"
  assert distributed.first_slurm_host("rack[1-2]-n[07,09],x") == "rack1-n07"


@pytest.mark.parametrize("kwargs, message", [
    (dict(coordinator_address="h:1", num_processes=2), "missing ['process_id']"),
    (dict(num_processes=2, process_id=0), "missing ['coordinator_address']"),
    (dict(coordinator_address="h:1"), "missing ['num_processes', 'process_id']"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=2), "process ids run from"),
    (dict(coordinator_address="h", num_processes=2, process_id=0), "is not host:port"),
])
def test_multihost_incomplete_or_bad_job_flags_are_refused(kwargs, message):
  with pytest.raises(distributed.DistributedError, match=message.replace("[", r"\[")):
    distributed.resolve_job("auto", environ={}, **kwargs)


def test_multihost_launcher_gives_each_process_its_devices():
  env = local_launcher.process_env(1, 2, 0, {"XLA_FLAGS": "--xla_foo=1 "
                                             "--xla_force_host_platform_device_count=8"})
  assert env["XLA_FLAGS"] == "--xla_foo=1 --xla_force_host_platform_device_count=2"
  assert local_launcher.process_env(2, 0, 2, {})["CUDA_VISIBLE_DEVICES"] == "4,5"
  with socket.socket() as s:  # a free port can be bound
    s.bind(("127.0.0.1", local_launcher.free_port()))


def test_multihost_dataset_embedding_is_split_over_processes(tmp_path):
  """Each process embeds the shards `k % count == index`; together they give what one
  process gives."""
  embedder = embedder_lib.RandomProjectionEmbedder(16)
  split = synthetic.write_episodes(str(tmp_path / "split"), num=5, length=12,
                                   episodes_per_shard=1)
  whole = synthetic.write_episodes(str(tmp_path / "whole"), num=5, length=12,
                                   episodes_per_shard=1)
  done = [embed_lib.embed_dataset(split, embedder, 8, progress=False, process_index=i,
                                  process_count=2)["shards"] for i in (0, 1)]
  assert done == [3, 2]
  embed_lib.embed_dataset(whole, embedder, 8, progress=False)
  a = dataset_reader.open_dataset(split, embedder.identifier)
  b = dataset_reader.open_dataset(whole, embedder.identifier)
  for i in range(5):
    np.testing.assert_array_equal(a.read_episode(i)["vlm_embedding"],
                                  b.read_episode(i)["vlm_embedding"])
  with pytest.raises(ValueError, match="process_index=2 with process_count=2"):
    embed_lib.embed_dataset(split, embedder, 8, progress=False, process_index=2,
                            process_count=2)
