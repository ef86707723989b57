"""Test session set-up: 8 simulated CPU devices and headless rendering.

Both must be set before JAX or MuJoCo is imported, so they live here.
"""

import os

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


import pytest  # noqa: E402  (after the environment set-up above)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
  """A tiny random CLIP with its tokenizer, saved locally (`tests/tiny_clip.py`)."""
  import tiny_clip  # pylint: disable=g-import-not-at-top
  directory = str(tmp_path_factory.mktemp("models") / "tiny-clip")
  tiny_clip.write_tiny_clip(directory, seed=0)
  return directory
