"""Headless OpenGL backend selection for MuJoCo (``MUJOCO_GL``).

MuJoCo and dm_control read ``MUJOCO_GL`` once, when they are first imported, so
:func:`select_gl_backend` must run before ``import mujoco``; ``genrl_jax.envs``
calls it at import time. A value the user already set is always respected.

Without a value we take EGL when ``libEGL`` loads and reports at least one
device (Mesa's llvmpipe counts), else OSMesa when ``libOSMesa`` loads. GLFW is
never chosen: it needs a display. When neither works nothing is set and
:func:`require_gl_backend` (called by ``make_env``) raises an error naming the
Debian packages to install.
"""

from __future__ import annotations

import ctypes
import os
import sys
import warnings

_EGL_LIBRARIES = ("libEGL.so.1", "libEGL.so")
_OSMESA_LIBRARIES = ("libOSMesa.so.8", "libOSMesa.so.6", "libOSMesa.so")

MISSING_GL_MESSAGE = ("No headless OpenGL backend for MuJoCo rendering was found: libEGL could not "
                      "be loaded (or has no device) and libOSMesa could not be loaded. On Debian/"
                      "Ubuntu install EGL with `apt-get install -y libegl1 libegl-mesa0 "
                      "libgl1-mesa-dri` (then MUJOCO_GL=egl), or OSMesa with `apt-get install -y "
                      "libosmesa6` (then MUJOCO_GL=osmesa).")

_selected: str | None = None
_error: str | None = None


def _load_first(names):
  for name in names:
    try:
      return ctypes.CDLL(name)
    except OSError:
      continue
  return None


def egl_available() -> bool:
  """True when libEGL loads and enumerates at least one device."""
  lib = _load_first(_EGL_LIBRARIES)
  if lib is None:
    return False
  try:
    lib.eglGetProcAddress.restype = ctypes.c_void_p
    lib.eglGetProcAddress.argtypes = [ctypes.c_char_p]
    address = lib.eglGetProcAddress(b"eglQueryDevicesEXT")
    if not address:
      # No device extension: loading alone is the best evidence we have.
      return True
    query = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_int, ctypes.c_void_p,
                             ctypes.POINTER(ctypes.c_int))(address)
    count = ctypes.c_int(0)
    ok = query(0, None, ctypes.byref(count))
    return bool(ok) and count.value > 0
  except Exception:  # pragma: no cover - exotic EGL builds
    return True


def osmesa_available() -> bool:
  return _load_first(_OSMESA_LIBRARIES) is not None


def select_gl_backend() -> str | None:
  """Sets ``MUJOCO_GL`` if unset; returns the backend in use (None if none works)."""
  global _selected, _error
  current = os.environ.get("MUJOCO_GL", "").strip()
  if current:
    _selected, _error = current, None
    return current
  if "mujoco" in sys.modules or "dm_control.mujoco" in sys.modules:
    warnings.warn(
        "mujoco was imported before genrl_jax.envs and MUJOCO_GL is unset; "
        "set MUJOCO_GL=egl (or osmesa) before importing mujoco for headless "
        "rendering.",
        RuntimeWarning,
        stacklevel=2,
    )
  if egl_available():
    backend = "egl"
  elif osmesa_available():
    backend = "osmesa"
  else:
    _selected, _error = None, MISSING_GL_MESSAGE
    return None
  os.environ["MUJOCO_GL"] = backend
  _selected, _error = backend, None
  return backend


def require_gl_backend() -> str:
  """Returns the selected backend or raises a RuntimeError with install hints."""
  if _selected is None and _error is None:
    select_gl_backend()
  if _selected is None:
    raise RuntimeError(_error or MISSING_GL_MESSAGE)
  return _selected


def apply_fast_render(model, size: int = 64) -> None:
  """Cheap offscreen rendering (platform notes): no shadows, small buffer, no MSAA.

    Must be applied to the ``mujoco.MjModel`` before the first render (the
    rendering context copies the buffer size and sample count when created).
    """
  model.light_castshadow[:] = 0
  model.vis.global_.offwidth = max(int(size), 1)
  model.vis.global_.offheight = max(int(size), 1)
  model.vis.quality.offsamples = 0
