"""scripts/accelerator_check.py: its smoke run writes every section with sane figures, and
its modules import on a machine without a simulator, TensorFlow Datasets or transformers
(the accelerator image), loading nothing beyond that image's packages and the wheels
docs/benchmarks.md says to carry."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "accelerator_check.py")
HIDDEN = ("dm_control", "mujoco", "tensorflow_datasets", "transformers", "tensorflow",
          "grain", "array_record")
# Import names of the accelerator image's packages that the check's modules load
# (docs/benchmarks.md lists the image), and of the wheels carried to it.
DEVICE_IMPORTS = {"absl", "chex", "cloudpickle", "etils", "filelock", "flax", "fsspec",
                  "google", "humanize", "imageio", "importlib_resources", "jax", "jaxlib",
                  "ml_dtypes", "msgpack", "numpy", "opt_einsum", "optax", "orbax",
                  "packaging", "PIL", "psutil", "pygments", "rich", "scipy", "simplejson",
                  "tensorstore", "toolz", "tqdm", "treescope", "typing_extensions", "uvloop",
                  "yaml", "zipp", "markdown_it", "mdurl", "nest_asyncio", "aiofiles"}
CARRIED = {"ml_collections"}
OWN = {"genrl_jax", "benchmarks", "configs", "accelerator_check"}
SMOKE_SECTIONS = {"device", "world_model_tiny_bfloat16", "world_model_tiny_float32",
                  "behavior_tiny_offline", "behavior_tiny_data_free", "input_pipeline",
                  "train_tiny"}


def test_modules_import_without_simulator_tfds_transformers_or_grain():
  code = textwrap.dedent(f"""
      import importlib.abc, importlib.util, json, sys
      HIDDEN = {HIDDEN!r}

      class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
          if name.partition(".")[0] in HIDDEN:
            raise ImportError(f"{{name}} is hidden (not on the accelerator image)")
          return None

      sys.meta_path.insert(0, Hide())
      for name in HIDDEN:
        try:
          __import__(name)
        except ImportError:
          pass
        else:
          raise SystemExit(f"{{name}} was not hidden")
      spec = importlib.util.spec_from_file_location("accelerator_check", {SCRIPT!r})
      check = sys.modules["accelerator_check"] = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(check)
      check.import_section_modules()
      skipped = check.section_input_pipeline(episodes=1, episode_length=40, batch_size=2,
                                             length=8, batches=1, workers=[0])
      top = {{m.partition(".")[0] for m in sys.modules}}
      third_party = sorted(m for m in top - set(sys.stdlib_module_names)
                           if not m.startswith("_") and m != "cython_runtime")
      print(json.dumps({{"modules": third_party, "pipeline": skipped}}))
      """)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        cwd=ROOT, env=env, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert {"jax", "flax", "optax", "ml_collections"} <= set(out["modules"])
  assert not set(out["modules"]) & set(HIDDEN)
  unexpected = set(out["modules"]) - DEVICE_IMPORTS - CARRIED - OWN
  assert not unexpected, f"modules the accelerator image lacks: {sorted(unexpected)}"
  assert "grain" in out["pipeline"]["skipped"]


def _finite_positive(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_smoke_run_writes_every_section(tmp_path):
  out = tmp_path / "out"
  # The smoke run's own budget is under 3 minutes; on a 2-core machine that other jobs
  # share, compiling alone can take longer, so the test gives it more.
  proc = subprocess.run([sys.executable, SCRIPT, "--smoke", "--seconds=420", str(out)],
                        capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
  assert (out / "results.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
  results = json.loads((out / "results.json").read_text())
  sections = results["sections"]
  failed = {k: v.get("error") for k, v in sections.items() if not v.get("ok")}
  assert not failed, (failed, (out / "sections.log").read_text()[-5000:])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert set(sections) == SMOKE_SECTIONS
  assert results["mode"] == "smoke"
  assert set(results["environment"]["versions"]) >= {"jax", "jaxlib", "flax", "optax",
                                                     "orbax-checkpoint"}

  device = sections["device"]["result"]
  assert device["backend"] == "cpu" and device["device_count"] >= 1
  for name in SMOKE_SECTIONS - {"device", "input_pipeline", "train_tiny"}:
    r = sections[name]["result"]
    assert _finite_positive(r["updates_per_s"]), (name, r)
    assert _finite_positive(r["compile_s"]), (name, r)
    assert r["recompiles"] == 0, (name, r)
    assert r["metrics_finite"], name
    assert r["memory"]["kind"] == "host_rss" and r["memory"]["host_peak_rss_mib"] > 0
    assert r["conv_impl"] == "im2col"  # what `auto` picks on the CPU
  assert sections["world_model_tiny_bfloat16"]["result"]["dtype"] == "bfloat16"
  assert sections["world_model_tiny_float32"]["result"]["dtype"] == "float32"
  assert sections["behavior_tiny_data_free"]["result"]["updates_per_call"] > 1

  pipeline = sections["input_pipeline"]["result"]
  assert _finite_positive(pipeline["batches_per_s"]), pipeline

  train = sections["train_tiny"]["result"]
  assert train["steps"] >= 3 and train["recompiles"] == 0, train
  ratio = train["open_loop_ratio"]
  assert isinstance(ratio, float) and math.isfinite(ratio) and ratio > 0, train

  checks = results["checks"]
  assert checks["no_recompilation"]["ok"], checks
  assert checks["targets"]["applicable"] is False
  assert checks["targets"]["input_pipeline_keeps_up"]["met"] in (True, False)
  report = (out / "report.txt").read_text()
  assert "open-loop ratio" in report and "no recompilation after the first call: OK" in report
