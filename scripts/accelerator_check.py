r"""Accelerator check: throughput, compile time, memory, input pipeline, recompilation and a
short training run on one accelerator, within about 8 minutes, into one JSON and a report.

  python scripts/accelerator_check.py OUT            # one H100/H200: about 8 minutes
  python scripts/accelerator_check.py --smoke OUT    # tiny sizes on the CPU: 1-3 minutes
  bash scripts/accelerator_check.sh OUT              # installs carried wheels (.whl/) first

Sections, each in its own process with its own time budget (a section that fails, crashes
or runs out of time is recorded with its error and the others go on):

* `device`: device kind and count, backend, CPU, package versions, numerics fingerprint
  (`genrl_jax.train.host_info`); beside it, from the parent process, `nvidia-smi`'s GPU
  name and driver.
* `world_model_<size>_<dtype>`: `benchmarks/world_model_step.py`'s MFWM update (world model +
  connector + aligner) at `small` and `paper`, bfloat16 and float32: updates/s, compile
  time, peak device memory, conv implementation chosen, recompilations.
* `behavior_<size>_offline`, `behavior_<size>_data_free`: `benchmarks/behavior_step.py` at
  `paper`, offline starts (one update per call) and data-free starts with
  `behavior.updates_per_call` updates per call.
* `input_pipeline`: `benchmarks/input_pipeline.py` on a dataset of random uint8 frames
  written by the project's dataset writer into a temporary folder, at the paper's batch
  (48 x 48) with as many reader threads as the machine has cores: batches/s, set beside the
  paper bfloat16 MFWM update rate. Skipped, with the reason, where `grain` is missing.
* `train_<size>`: a `:small` MFWM trained for the minutes left on procedurally generated
  episodes (a square on a gradient, moved by the actions; no simulator), then scored with
  the project's open-loop scorer (`genrl_jax.report.open_loop.write_mfwm_open_loop`): the
  open-loop ratio against the training episodes' mean frame (about 1: the model draws the
  background only; below 1: it draws the square where it is).

Checks (`results.json["checks"]`): no recompilation after the first call of any timed
step (JAX's compilation events, `benchmarks/bench_lib.py`), and the targets of a full run
on one H100/H200: paper MFWM update >= 25 updates/s in bfloat16, paper behaviour update
>= 50 updates/s, the input pipeline at least as fast as the paper bfloat16 MFWM update.
`--smoke` runs the same sections at `tiny` sizes on the CPU (JAX_PLATFORMS=cpu), with
fewer iterations, two sections at a time and a short training; its targets are reported
as not applicable.

Writes OUT/results.json, OUT/report.txt and OUT/sections.log (every section's output).
Imports nothing beyond the accelerator image's packages and the carried wheels
(`ml_collections`, and `grain` for the input pipeline): no simulator, TensorFlow or
transformers (docs/benchmarks.md). Exits 0 when every section ran, 1 otherwise.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "numpy",
            "ml_collections", "grain", "tensorstore")
TARGET_MFWM_UPDATES_PER_S = 25.0  # paper MFWM update, bfloat16, one H100/H200
TARGET_BEHAVIOR_UPDATES_PER_S = 50.0  # paper behaviour update
FULL_SECONDS = 465  # under the 8 minutes the check is given
SMOKE_SECONDS = 170  # under 3 minutes
ACTION_DIM = 6  # walker's, the benchmarks' and the procedural episodes'


# ---------------------------------------------------------------------------------------
# Sections: functions run in a child process (`--child NAME`), each returning a JSON-able
# dict. They import JAX and the project lazily, so that the parent never initialises the
# accelerator (a child could then not get its memory).
# ---------------------------------------------------------------------------------------


def section_device() -> dict[str, Any]:
  """The devices as JAX sees them, and `host_info.describe_host()` without CPU flags."""
  import jax  # pylint: disable=g-import-not-at-top
  from genrl_jax.train import host_info  # pylint: disable=g-import-not-at-top
  info = dict(host_info.describe_host())
  info.pop("cpu_flags", None)
  stats = jax.local_devices()[0].memory_stats() or {}
  info["devices"] = [str(d) for d in jax.devices()]
  info["device_memory_limit_mib"] = (stats["bytes_limit"] / 2**20 if "bytes_limit" in stats
                                     else None)
  return info


def section_world_model(size: str, dtype: str, iters: int) -> dict[str, Any]:
  """`world_model_step.bench` of the MFWM update."""
  from benchmarks import world_model_step  # pylint: disable=g-import-not-at-top
  print(f"world model {size} {dtype}: building, compiling, timing", flush=True)
  result = world_model_step.bench(size, "mfwm", iters, dtype)
  print(world_model_step.result_text(result), flush=True)
  return result


def section_behavior(size: str, start: str, iters: int, updates_per_call: int
                     ) -> dict[str, Any]:
  """`behavior_step.bench`: offline starts one update per call; data-free starts
  `updates_per_call` per call only (as training runs them)."""
  from benchmarks import behavior_step  # pylint: disable=g-import-not-at-top
  print(f"behaviour {size} {start}: building, compiling, timing", flush=True)
  results = behavior_step.bench(size, start, iters=iters, warmup=1, action_dim=ACTION_DIM,
                                updates_per_call=updates_per_call,
                                single_call=start == "offline")
  for r in results:
    print(behavior_step.result_text(r), flush=True)
  return results[-1]


def grain_missing() -> str | None:
  """Why the project's reader (`SequenceSampler.batches`, through grain) cannot run here,
  or None when it can. Imported, not just looked up: a carried grain wheel whose own
  dependencies are missing fails only then."""
  try:
    import grain  # pylint: disable=g-import-not-at-top,unused-import
  except Exception as e:  # pylint: disable=broad-except
    return (f"grain cannot be imported ({type(e).__name__}: {e}); "
            "SequenceSampler.batches reads through it")
  return None


def section_input_pipeline(episodes: int, episode_length: int, batch_size: int, length: int,
                           batches: int, workers: list[int]) -> dict[str, Any]:
  """`input_pipeline.measure` on random uint8 frames, `os.cpu_count()` reader threads."""
  reason = grain_missing()
  if reason:
    return {"skipped": reason}
  from benchmarks import input_pipeline  # pylint: disable=g-import-not-at-top
  tmp = tempfile.mkdtemp(prefix="genrl_accel_pipeline_")
  try:
    root = os.path.join(tmp, "dataset")
    write_s = input_pipeline.write_dataset(root, episodes, episode_length, frames="random")
    dataset = input_pipeline.open_with_embeddings(root)
    threads = os.cpu_count() or 1
    settings = []
    for w in workers:
      r = input_pipeline.measure(dataset, batch_size, length, batches, threads, w)
      print(f"input pipeline threads {threads} workers {w}: {r['batches_per_s']:.2f} "
            f"batches/s ({r['ms_per_batch']:.1f} ms/batch)", flush=True)
      settings.append(r)
    best = max(settings, key=lambda r: r["batches_per_s"])
    return {"frames": "random uint8", "episodes": episodes, "episode_length": episode_length,
            "write_s": write_s, "dataset_mib": input_pipeline.dataset_size_mib(root),
            "cpu_count": os.cpu_count(), "settings": settings,
            "batches_per_s": best["batches_per_s"], "batch": [batch_size, length]}
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def procedural_episode(rng: Any, length: int, codes: Any, n_frames: int) -> dict[str, Any]:
  """A `(length, 64, 64, 3)` uint8 episode of a 12x12 square on a vertical gradient, moved
  3 px per step by the first two action dimensions (smooth random actions), stopped by the
  walls; `vlm_embedding (length, E)`: the unit code of the square's 8x8-grid cell (a
  function of the frame), zero for the first `n_frames - 1` steps as VLM clips start."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  t = np.arange(length)
  action = np.zeros((length, ACTION_DIM), np.float32)
  for i in range(1, length):  # action[i] moves the square into frame i
    action[i] = np.clip(0.8 * action[i - 1] + 0.5 * rng.normal(size=ACTION_DIM), -1, 1)
  gradient = np.linspace(30, 110, 64).astype(np.uint8)[:, None, None]
  obs = np.broadcast_to(gradient, (length, 64, 64, 3)).copy()
  pos = rng.uniform(0, 52, 2)
  cells = np.zeros(length, np.int64)
  for i in range(length):
    pos = np.clip(pos + 3.0 * action[i, :2], 0, 52)
    y, x = int(round(pos[0])), int(round(pos[1]))
    obs[i, y:y + 12, x:x + 12] = (220, 140, 40)
    cells[i] = (y * 8 // 64) * 8 + x * 8 // 64
  embedding = codes[cells].astype(np.float32)
  embedding[:n_frames - 1] = 0.0
  return dict(observation=obs, action=action,
              reward=np.zeros(length, np.float32), discount=np.ones(length, np.float32),
              is_first=t == 0, is_last=t == length - 1, is_terminal=np.zeros(length, bool),
              vlm_embedding=embedding)


def _batches(sampler: Any, threads: int) -> tuple[Any, str]:
  """Training batches: the project's reader (grain); where grain is missing, the same
  `sampler.sample` calls in a thread pool, so that the check still trains."""
  if grain_missing() is None:
    return sampler.batches(0, 1 << 40, num_threads=threads), "grain"

  def threaded():
    import collections  # pylint: disable=g-import-not-at-top
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
      pending = collections.deque(pool.submit(sampler.sample, i) for i in range(4))
      i = len(pending)
      while True:
        yield pending.popleft().result()
        pending.append(pool.submit(sampler.sample, i))
        i += 1

  return threaded(), "thread pool (grain missing)"


def section_train(size: str, train_until: float, episodes: int, episode_length: int,
                  heldout: int, max_train_s: float | None = None, min_steps: int = 3
                  ) -> dict[str, Any]:
  """Trains a `size` walker MFWM on procedural episodes until the wall-clock time
  `train_until` (Unix seconds), or for `max_train_s` seconds after its first update when
  given, with at least `min_steps` updates; then scores it with the project's open-loop
  scorer on the held-out episodes."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from benchmarks import bench_lib  # pylint: disable=g-import-not-at-top
  from genrl_jax import experiment_config  # pylint: disable=g-import-not-at-top
  from genrl_jax import mfwm as mfwm_lib  # pylint: disable=g-import-not-at-top
  from genrl_jax import world_model as wm_lib  # pylint: disable=g-import-not-at-top
  from genrl_jax.data import dataset as dataset_lib  # pylint: disable=g-import-not-at-top
  from genrl_jax.data import dataset_reader  # pylint: disable=g-import-not-at-top
  from genrl_jax.data import dataset_writer  # pylint: disable=g-import-not-at-top
  from genrl_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from genrl_jax.report import open_loop  # pylint: disable=g-import-not-at-top
  from genrl_jax.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from genrl_jax.train.state import step_rng  # pylint: disable=g-import-not-at-top

  config = experiment_config.load_config(f"configs/walker.py:{size}")
  with config.unlocked():
    config.mfwm.heldout_episodes = heldout
  tmp = tempfile.mkdtemp(prefix="genrl_accel_train_")
  try:
    root = os.path.join(tmp, "dataset")
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(64, config.connector.embed_dim))
    codes /= np.linalg.norm(codes, axis=-1, keepdims=True)
    t0 = time.perf_counter()
    with dataset_writer.EpisodeWriter(root, dataset_lib.DatasetSpec("walker", ACTION_DIM), 8,
                                      vlm="procedural_codes",
                                      n_frames=config.connector.n_frames) as writer:
      for _ in range(episodes):
        writer.add(procedural_episode(rng, episode_length, codes, config.connector.n_frames))
    write_s = time.perf_counter() - t0
    dataset = dataset_reader.open_dataset(root, embedding="procedural_codes")
    train, _ = input_pipeline.heldout_split(dataset, heldout)
    mesh = mesh_lib.make_mesh()
    _, state, step_fn = mfwm_lib.build(config, ACTION_DIM, mesh, with_connector=True)
    sampler = input_pipeline.SequenceSampler(
        dataset, config.batch_size, config.batch_length, seed=config.seed * 1000,
        keys=wm_lib.BATCH_KEYS + ("vlm_embedding",), episodes=train, process_index=0,
        process_count=1)
    batches, reader = _batches(sampler, os.cpu_count() or 1)

    def update(state, step):
      batch = mesh_lib.shard_batch(next(batches), mesh)
      return step_fn(state, batch, step_rng(config.seed, step))

    with bench_lib.compile_events() as first:
      t0 = time.perf_counter()
      state, metrics = update(state, 0)
      jax.block_until_ready(metrics)
      first_step_s = time.perf_counter() - t0
    steps = 1
    t0 = time.perf_counter()
    if max_train_s is not None:
      train_until = min(train_until, time.time() + max_train_s)
    with bench_lib.compile_events() as later:
      while steps < min_steps or time.time() < train_until:
        state, metrics = update(state, steps)
        steps += 1
        if steps % 10 == 0:  # bound how far dispatch runs ahead of the clock
          jax.block_until_ready(metrics)
      jax.block_until_ready(metrics)
    loop_s = time.perf_counter() - t0
    final = {k: float(np.asarray(v)) for k, v in metrics.items() if np.ndim(v) == 0}
    t0 = time.perf_counter()
    workdir = os.path.join(tmp, "workdir")
    params = open_loop.host_copy(state.params)
    open_loop.write_mfwm_open_loop(config, dataset, params["world_model"], workdir, steps)
    errors = open_loop.read_open_loop_errors(workdir)
    score_s = time.perf_counter() - t0
    print(f"trained {steps} updates in {loop_s:.0f} s ({reader}); open-loop ratio "
          f"{errors.get('open_loop_ratio')}", flush=True)
    return {
        "size": size, "batch": [config.batch_size, config.batch_length],
        "dtype": jax.numpy.dtype(wm_lib.compute_dtype(config.compute_dtype)).name,
        "episodes": episodes,
        "episode_length": episode_length, "heldout_episodes": heldout,
        "write_s": write_s, "reader": reader, "steps": steps,
        "first_step_s": first_step_s, "compile_s": first.seconds,
        "compiles_first": first.compiles, "loop_s": loop_s,
        "updates_per_s": (steps - 1) / loop_s if loop_s > 0 else None,
        "recompiles": later.compiles, "final_metrics": final, "score_s": score_s,
        "open_loop_ratio": errors.get("open_loop_ratio"),
        "last_frame_ratio": errors.get("last_frame_ratio"),
        "open_loop": {k: v for k, v in errors.items() if not isinstance(v, list)},
    }
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


SECTION_FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "device": section_device,
    "world_model": section_world_model,
    "behavior": section_behavior,
    "input_pipeline": section_input_pipeline,
    "train": section_train,
}


def import_section_modules() -> list[str]:
  """Imports every module the sections import (what a device without a simulator must
  hold) and loads the configs they load; returns the modules' names."""
  import importlib  # pylint: disable=g-import-not-at-top
  names = ["benchmarks.bench_lib", "benchmarks.original_reference",
           "benchmarks.world_model_step", "benchmarks.behavior_step",
           "benchmarks.input_pipeline", "genrl_jax.report.open_loop",
           "genrl_jax.train.host_info", "genrl_jax.data.dataset_writer",
           "genrl_jax.data.dataset_reader", "genrl_jax.data.input_pipeline",
           "genrl_jax.mfwm", "genrl_jax.behavior.learner"]
  for name in names:
    importlib.import_module(name)
  from genrl_jax import experiment_config  # pylint: disable=g-import-not-at-top
  for spec in ("configs/walker.py:tiny", "configs/walker.py:small", "configs/walker.py:paper",
               "configs/stickman.py:paper"):
    experiment_config.load_config(spec)
  return names


def _json_safe(value: Any) -> Any:
  """numpy scalars and arrays -> Python numbers and lists; NaN/inf -> strings."""
  if isinstance(value, dict):
    return {str(k): _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  if hasattr(value, "tolist"):
    return _json_safe(value.tolist())
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def run_child(name: str, kwargs_json: str, result_path: str) -> int:
  """The child process: runs one section function and writes its result (or the error
  with its traceback) as JSON to `result_path`."""
  try:
    result = {"ok": True, "result": SECTION_FUNCTIONS[name](**json.loads(kwargs_json))}
  except BaseException as e:  # pylint: disable=broad-except
    traceback.print_exc()
    result = {"ok": False, "error": f"{type(e).__name__}: {e}",
              "traceback": traceback.format_exc()[-4000:]}
  with open(result_path, "w") as f:
    json.dump(_json_safe(result), f)
  return 0 if result["ok"] else 1


# ---------------------------------------------------------------------------------------
# The parent: plans the sections, runs each in a child process under its time budget,
# checks the results and writes results.json and report.txt.
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Section:
  name: str  # key in results.json["sections"]
  function: str  # SECTION_FUNCTIONS key
  kwargs: dict[str, Any]
  budget_s: float  # at most this long (less when the deadline is nearer)


def plan(smoke: bool) -> tuple[list[Section], dict[str, Any]]:
  """The sections before training, and the training's settings. Budgets are caps: each
  section also stops in time to leave the training its minimum before the deadline."""
  if smoke:
    # No caps of their own: on a busy 2-core machine compiling alone can take a minute.
    sizes, wm_iters, b_iters, k = ("tiny",), 2, 2, 2
    pipeline = dict(episodes=4, episode_length=100, batch_size=8, length=32, batches=4,
                    workers=[0])
    train = dict(size="tiny", episodes=6, episode_length=64, heldout=2, reserve_s=30,
                 min_s=40, max_train_s=15)
    budgets = dict(device=math.inf, wm_small=math.inf, wm_paper=math.inf,
                   behavior=math.inf, pipeline=math.inf)
    b_size = "tiny"
  else:
    sizes, wm_iters, b_iters, k = ("small", "paper"), 10, 5, 10
    pipeline = dict(episodes=24, episode_length=501, batch_size=48, length=48, batches=30,
                    workers=[0, 4])
    train = dict(size="small", episodes=32, episode_length=256, heldout=4, reserve_s=45,
                 min_s=75, max_train_s=None)  # the minutes left
    budgets = dict(device=60, wm_small=90, wm_paper=150, behavior=120, pipeline=60)
    b_size = "paper"
  wm_budget = {"tiny": budgets["wm_small"], "small": budgets["wm_small"],
               "paper": budgets["wm_paper"]}
  sections = [Section("device", "device", {}, budgets["device"])]
  world_models = {dtype: [Section(f"world_model_{s}_{dtype}", "world_model",
                                  dict(size=s, dtype=dtype, iters=wm_iters), wm_budget[s])
                          for s in sizes] for dtype in ("bfloat16", "float32")}
  # The training's dtype (`auto`: bfloat16 on accelerators, float32 on the CPU) first: its
  # update is then in the compilation cache when the training starts. In a full run that
  # is bfloat16, the targets' dtype, and float32 comes after the behaviour and the
  # pipeline, so that a short budget drops float32 figures rather than the targets'.
  first, last = ("float32", "bfloat16") if smoke else ("bfloat16", "float32")
  sections += world_models[first]
  sections += [Section(f"behavior_{b_size}_{start}", "behavior",
                       dict(size=b_size, start=start, iters=b_iters, updates_per_call=k),
                       budgets["behavior"]) for start in ("offline", "data_free")]
  sections.append(Section("input_pipeline", "input_pipeline", pipeline, budgets["pipeline"]))
  sections += world_models[last]
  return sections, train


def versions() -> dict[str, str | None]:
  out = {}
  for package in PACKAGES:
    try:
      out[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      out[package] = None
  return out


def nvidia_smi() -> dict[str, Any] | None:
  """GPU name, driver and memory from `nvidia-smi` (None where it is not installed)."""
  if shutil.which("nvidia-smi") is None:
    return None
  query = "name,driver_version,memory.total"
  try:
    out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
  except (subprocess.SubprocessError, OSError) as e:
    return {"error": str(e)}
  gpus = [dict(zip(query.split(","), (f.strip() for f in line.split(","))))
          for line in out.strip().splitlines()]
  return {"gpus": gpus}


class Runner:
  """Runs sections in child processes under a shared deadline."""

  def __init__(self, out_dir: str, deadline: float, smoke: bool):
    self.out_dir, self.deadline, self.smoke = out_dir, deadline, smoke
    self.log_dir = tempfile.mkdtemp(prefix="genrl_accel_logs_")
    self.env = dict(os.environ, PYTHONUNBUFFERED="1")
    if smoke:
      self.env["JAX_PLATFORMS"] = "cpu"
    # One persistent compilation cache for the sections (fresh unless the caller set one):
    # the training's update is the program a world-model section compiled (the same size
    # and dtype), and compiling it again would cost the training's minutes. Compile times
    # are still measured where a program is first compiled; recompilations are counted
    # from lowerings, which happen on cache hits too.
    if not self.env.get("JAX_COMPILATION_CACHE_DIR"):
      self.env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(self.log_dir, "xla_cache")
      self.env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
      self.env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"

  def run(self, section: Section, budget_s: float) -> dict[str, Any]:
    """Runs `section` for at most `budget_s` seconds; its record for results.json."""
    record: dict[str, Any] = {"function": section.function, "kwargs": section.kwargs,
                              "budget_s": round(budget_s, 1)}
    if budget_s < 5:
      return dict(record, ok=False, error="skipped: no time left before the deadline")
    result_path = os.path.join(self.log_dir, f"{section.name}.json")
    log_path = os.path.join(self.log_dir, f"{section.name}.log")
    command = [sys.executable, os.path.abspath(__file__), "--child", section.function,
               "--child_kwargs", json.dumps(section.kwargs), "--child_result", result_path]
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
      # A session of its own: on time-out the whole group (reader workers too) is killed.
      proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                              cwd=REPO, start_new_session=True)
      try:
        proc.wait(timeout=budget_s)
        timed_out = False
      except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        timed_out = True
    record["seconds"] = round(time.perf_counter() - t0, 1)
    if timed_out:
      record.update(ok=False, error=f"timed out after {budget_s:.0f} s (its budget)")
    elif os.path.exists(result_path):
      with open(result_path) as f:
        record.update(json.load(f))
    else:
      record.update(ok=False, error=f"the section's process exited with {proc.returncode} "
                    "without a result (killed for memory? see sections.log)")
    if not record.get("ok"):
      with open(log_path, errors="replace") as f:
        record["log_tail"] = f.read()[-3000:]
    print(f"[{section.name}] {'ok' if record.get('ok') else 'FAILED'} in "
          f"{record['seconds']:.0f} s" + ("" if record.get("ok") else
                                          f": {record.get('error')}"), flush=True)
    return record

  def collect_logs(self, names: list[str]) -> None:
    with open(os.path.join(self.out_dir, "sections.log"), "w") as out:
      for name in names:
        path = os.path.join(self.log_dir, f"{name}.log")
        if os.path.exists(path):
          out.write(f"===== {name}\n")
          with open(path, errors="replace") as f:
            out.write(f.read())
    shutil.rmtree(self.log_dir, ignore_errors=True)


def _result(sections: dict[str, Any], name: str) -> dict[str, Any] | None:
  record = sections.get(name) or {}
  return record.get("result") if record.get("ok") else None


def evaluate(sections: dict[str, Any], smoke: bool) -> dict[str, Any]:
  """The checks: recompilation after the first call, and the full run's targets."""
  recompiles = {}
  for name, record in sections.items():
    result = record.get("result") if record.get("ok") else None
    if isinstance(result, dict) and "recompiles" in result:
      entries = result.get("jit_cache_entries")
      recompiles[name] = {
          "recompiles": result["recompiles"], "compiles_first": result.get("compiles_first", 0),
          "jit_cache_entries": entries,
          # A first call that compiled nothing means the compilation events went unseen
          # (renamed in a JAX release?): then zero recompilations proves nothing.
          "ok": (result["recompiles"] == 0 and result.get("compiles_first", 0) >= 1
                 and (entries is None or entries == 1))}
  checks: dict[str, Any] = {"no_recompilation": {
      "ok": bool(recompiles) and all(v["ok"] for v in recompiles.values()),
      "recompiles_after_first_call": {k: v["recompiles"] for k, v in recompiles.items()},
      "sections": recompiles}}
  size = "tiny" if smoke else "paper"
  mfwm = _result(sections, f"world_model_{size}_bfloat16")
  offline = _result(sections, f"behavior_{size}_offline")
  data_free = _result(sections, f"behavior_{size}_data_free")
  pipeline = _result(sections, "input_pipeline")
  mfwm_rate = mfwm["updates_per_s"] if mfwm else None

  def target(value, threshold, what):
    met = None if value is None else value >= threshold
    return {"what": what, "value": value, "threshold": threshold, "met": met}

  targets = {
      "mfwm_bfloat16_updates_per_s": target(mfwm_rate, TARGET_MFWM_UPDATES_PER_S,
                                            f"{size} MFWM update, bfloat16"),
      "behavior_offline_updates_per_s": target(
          offline and offline["updates_per_s"], TARGET_BEHAVIOR_UPDATES_PER_S,
          f"{size} behaviour update, offline starts"),
      "behavior_data_free_updates_per_s": target(
          data_free and data_free["updates_per_s"], TARGET_BEHAVIOR_UPDATES_PER_S,
          f"{size} behaviour update, data-free starts, "
          f"{data_free and data_free['updates_per_call']} per call"),
  }
  if pipeline and "batches_per_s" in pipeline and mfwm_rate:
    targets["input_pipeline_keeps_up"] = {
        "what": "input pipeline batches/s >= MFWM bfloat16 updates/s (same batch size: "
                f"{pipeline['batch']} vs {mfwm['batch']})",
        "value": pipeline["batches_per_s"], "threshold": mfwm_rate,
        "met": pipeline["batches_per_s"] >= mfwm_rate}
  else:
    targets["input_pipeline_keeps_up"] = {
        "what": "input pipeline batches/s >= MFWM bfloat16 updates/s", "met": None,
        "value": None, "threshold": mfwm_rate,
        "reason": (pipeline or {}).get("skipped", "a figure is missing")}
  checks["targets"] = {"applicable": not smoke, **targets}
  if smoke:
    checks["targets"]["note"] = ("smoke run: tiny sizes on the CPU; the targets apply to "
                                 "the full run on one H100/H200")
  return checks


def report_text(results: dict[str, Any]) -> str:
  """A short human-readable summary of results.json."""
  lines = [f"accelerator check ({results['mode']}), {results['wall_s']:.0f} s, "
           f"python {results['environment']['python']}"]
  env = results["environment"]
  smi = env.get("nvidia_smi")
  if smi and smi.get("gpus"):
    g = smi["gpus"][0]
    lines.append(f"GPU {g.get('name')} driver {g.get('driver_version')} memory "
                 f"{g.get('memory.total')} (nvidia-smi)")
  else:
    lines.append("nvidia-smi: not present")
  lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()))
  for name, record in results["sections"].items():
    r = record.get("result")
    if not record.get("ok"):
      lines.append(f"{name}: FAILED ({record.get('error')})")
    elif name == "device":
      lines.append(f"device: {r['device_count']}x {r['device_kind']} ({r['backend']}), "
                   f"{r['cpu_count']} CPUs, {r['cpu']}")
    elif "skipped" in r:
      lines.append(f"{name}: skipped ({r['skipped']})")
    elif record["function"] in ("world_model", "behavior"):
      mem = r["memory"]
      memory = (f"device peak {mem['device_peak_mib']:.0f} MiB"
                if mem["device_peak_mib"] is not None
                else f"host peak RSS {mem['host_peak_rss_mib']:.0f} MiB")
      per_call = (f", {r['updates_per_call']} per call" if r.get("updates_per_call", 1) > 1
                  else "")
      lines.append(f"{name}: {r['updates_per_s']:.2f} updates/s{per_call} ({r['dtype']}, "
                   f"conv {r['conv_impl']}), compile {r['compile_s']:.1f} s, {memory}, "
                   f"recompiles {r['recompiles']}")
    elif name == "input_pipeline":
      lines.append(f"input_pipeline: {r['batches_per_s']:.2f} batches/s of {r['batch']} "
                   f"({r['cpu_count']} reader threads, random uint8 frames)")
    elif record["function"] == "train":
      lines.append(f"{name}: {r['steps']} updates in {r['loop_s']:.0f} s "
                   f"({r['updates_per_s'] or 0:.2f}/s, {r['reader']}), open-loop ratio "
                   f"{r['open_loop_ratio']} (last-frame baseline {r['last_frame_ratio']}), "
                   f"recompiles {r['recompiles']}")
  checks = results["checks"]
  rc = checks["no_recompilation"]
  lines.append(f"no recompilation after the first call: {'OK' if rc['ok'] else 'NO'} "
               f"{rc['recompiles_after_first_call']}")
  targets = checks["targets"]
  lines.append("targets" + ("" if targets["applicable"] else f" ({targets['note']})") + ":")
  for key, t in targets.items():
    if isinstance(t, dict):
      verdict = {True: "met", False: "NOT met", None: "no figure"}[t["met"]]
      value = "n/a" if t["value"] is None else f"{t['value']:.2f}"
      threshold = "n/a" if t["threshold"] is None else f"{t['threshold']:.2f}"
      lines.append(f"  {t['what']}: {value} (>= {threshold}) {verdict}")
  return "\n".join(lines) + "\n"


def run_check(out_dir: str, smoke: bool, seconds: float, parallel: int) -> dict[str, Any]:
  """Runs every section within `seconds`; writes and returns results.json's content."""
  os.makedirs(out_dir, exist_ok=True)
  start_wall, t0 = time.time(), time.perf_counter()
  deadline = start_wall + seconds
  sections, train = plan(smoke)
  runner = Runner(out_dir, deadline, smoke)
  results: dict[str, Any] = {
      "mode": "smoke" if smoke else "full", "budget_s": seconds,
      "started_unix": start_wall,
      "environment": {"python": platform.python_version(), "platform": platform.platform(),
                      "cpu_count": os.cpu_count(), "versions": versions(),
                      "nvidia_smi": nvidia_smi(),
                      "jax_platforms": runner.env.get("JAX_PLATFORMS", ""),
                      "compilation_cache": runner.env["JAX_COMPILATION_CACHE_DIR"]},
      "sections": {},
  }
  missing = [p for p in ("jax", "flax", "optax", "ml_collections") if
             results["environment"]["versions"].get(p) is None]
  if missing:
    results["environment"]["missing"] = missing  # every section will say why it failed

  def budget(section: Section) -> float:
    # Whatever the section's own budget, leave the training its minimum.
    return min(section.budget_s, deadline - time.time() - train["min_s"])

  records: dict[str, Any] = {}
  with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
    futures = {s.name: pool.submit(lambda s=s: runner.run(s, budget(s))) for s in sections}
    for s in sections:
      records[s.name] = futures[s.name].result()
  results["sections"] = records
  train_until = deadline - train["reserve_s"]
  train_section = Section(f"train_{train['size']}", "train",
                          dict(size=train["size"], train_until=train_until,
                               episodes=train["episodes"],
                               episode_length=train["episode_length"],
                               heldout=train["heldout"],
                               max_train_s=train["max_train_s"]), 0)
  records[train_section.name] = runner.run(train_section, max(deadline - time.time(),
                                                              train["min_s"]))
  runner.collect_logs([s.name for s in sections] + [train_section.name])
  results["wall_s"] = time.perf_counter() - t0
  results["checks"] = evaluate(records, smoke)
  results["all_sections_ok"] = all(r.get("ok") for r in records.values())
  with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump(_json_safe(results), f, indent=1)
  with open(os.path.join(out_dir, "report.txt"), "w") as f:
    f.write(report_text(results))
  return results


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
  parser.add_argument("out_dir", nargs="?", help="folder for results.json, report.txt")
  parser.add_argument("--smoke", action="store_true",
                      help="tiny sizes on the CPU, fewer iterations, a short training")
  parser.add_argument("--seconds", type=float, default=0,
                      help=f"total budget; 0: {FULL_SECONDS} ({SMOKE_SECONDS} with --smoke)")
  parser.add_argument("--parallel", type=int, default=0,
                      help="sections at a time before the training; 0: 1 (2 with --smoke: "
                      "compiling dominates there, and timings are not the point)")
  parser.add_argument("--child", default="", help=argparse.SUPPRESS)
  parser.add_argument("--child_kwargs", default="{}", help=argparse.SUPPRESS)
  parser.add_argument("--child_result", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    return run_child(args.child, args.child_kwargs, args.child_result)
  if not args.out_dir:
    parser.error("give the output folder")
  seconds = args.seconds or (SMOKE_SECONDS if args.smoke else FULL_SECONDS)
  parallel = args.parallel or (2 if args.smoke else 1)
  results = run_check(args.out_dir, args.smoke, seconds, parallel)
  print(report_text(results), end="")
  return 0 if results["all_sections_ok"] else 1


if __name__ == "__main__":
  from genrl_jax import host_allocator  # pylint: disable=g-import-not-at-top
  host_allocator.reexec_with_tcmalloc()  # before JAX starts in the children
  sys.exit(main())
