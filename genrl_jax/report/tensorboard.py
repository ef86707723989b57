"""TensorBoard event files: scalars and videos (animated GIFs), and a reader for tests.

Each stage writes under `<workdir>/tensorboard/<stage>/`, so TensorBoard shows one run
per stage (`tensorboard --logdir <workdir>/tensorboard`). Every writer opens its own event
file, named with the host and process id and a per-process counter: several jobs of a
sweep sharing a workdir, or two writers of one stage in one job, never append to the same
file. Only process 0 writes.

Videos are animated GIFs in `Summary.Image` protos, shown in TensorBoard's Images tab:
what `tensorboardX.SummaryWriter.add_video` writes, without its moviepy dependency.
"""

from __future__ import annotations

import glob
import io
import itertools
import os
import re
import struct
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging

from genrl_jax import files

_FILE_COUNTER = itertools.count()
_warned_missing = False


def sanitize(name: str) -> str:
  """A file-name-safe version of a stage name (`behavior/walk` -> `behavior_walk`)."""
  return re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".") or "_"


def encode_gif(frames: np.ndarray, duration_ms: int = 100) -> bytes:
  """uint8 `(T, H, W, 3)` frames -> an animated GIF (looping) of `duration_ms` per frame."""
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
    raise ValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
  return iio.imwrite("<bytes>", frames, extension=".gif", duration=duration_ms, loop=0)


def write_gif(path: str, frames: np.ndarray, duration_ms: int = 100) -> bytes:
  """Writes `encode_gif(frames)` to `path` atomically (`files.write_bytes`); returns it."""
  data = encode_gif(frames, duration_ms)
  files.write_bytes(path, data)
  return data


class TensorBoardWriter:
  """Writes scalars and videos of one stage to `<workdir>/tensorboard/<stage>/`.

  The event file is opened on the first write (a writer that logs nothing leaves no file)
  and closed by `close()`; writing again afterwards opens a new file. Without tensorboardX
  installed it logs one warning and writes nothing.
  """

  def __init__(self, workdir: str, stage: str):
    self.logdir = os.path.join(workdir, "tensorboard", sanitize(stage))
    self._active = jax.process_index() == 0
    self._writer = None

  def _file_writer(self):
    global _warned_missing
    if not self._active:
      return None
    if self._writer is None:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      except ImportError:
        if not _warned_missing:
          logging.warning("tensorboardX is not installed: no TensorBoard logs are written "
                          "(pip install tensorboardX)")
          _warned_missing = True
        self._active = False
        return None
      suffix = f".{os.getpid()}.{next(_FILE_COUNTER)}"
      self._writer = SummaryWriter(self.logdir, filename_suffix=suffix, flush_secs=30)
    return self._writer

  def scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """One scalar summary per key (the tag), at `step`."""
    writer = self._file_writer()
    if writer is not None:
      for tag, value in scalars.items():
        writer.add_scalar(tag, float(value), int(step))

  def video(self, tag: str, step: int, frames: np.ndarray, duration_ms: int = 100) -> None:
    """uint8 `frames (T, H, W, 3)` as an animated GIF at `step`."""
    if self._file_writer() is not None:
      frames = np.asarray(frames)
      self.gif(tag, step, encode_gif(frames, duration_ms), frames.shape[1], frames.shape[2])

  def gif(self, tag: str, step: int, data: bytes, height: int, width: int) -> None:
    """An already encoded GIF (`encode_gif`) of frames `(height, width)` at `step`."""
    writer = self._file_writer()
    if writer is None:
      return
    from tensorboardX.proto import summary_pb2  # pylint: disable=g-import-not-at-top
    image = summary_pb2.Summary.Image(height=int(height), width=int(width), colorspace=3,
                                      encoded_image_string=data)
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=image)])
    writer._get_file_writer().add_summary(summary, int(step))  # pylint: disable=protected-access

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def __enter__(self) -> "TensorBoardWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _records(path: str):
  """The records of a TFRecord file: uint64 length, uint32 masked CRC of the length, the
  data, uint32 masked CRC of the data (all little-endian)."""
  # pylint: disable-next=g-import-not-at-top
  from tensorboardX.record_writer import masked_crc32c as masked
  with open(path, "rb") as f:
    while header := f.read(12):
      if len(header) < 12:
        raise ValueError(f"{path}: truncated record header")
      length, length_crc = struct.unpack("<QI", header)
      if masked(header[:8]) != length_crc:
        raise ValueError(f"{path}: bad length checksum")
      data, footer = f.read(length), f.read(4)
      if len(data) < length or len(footer) < 4:
        raise ValueError(f"{path}: truncated record")
      if masked(data) != struct.unpack("<I", footer)[0]:
        raise ValueError(f"{path}: bad data checksum")
      yield data


def read_events(logdir: str) -> dict[str, dict[str, list[tuple[int, Any]]]]:
  """Every event file of `logdir`, in name order -> `{"scalars": {tag: [(step, value)]},
  "images": {tag: [(step, {"height", "width", "data"})]}}` (`data`: the encoded bytes)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  out: dict[str, dict[str, list]] = {"scalars": {}, "images": {}}
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    for record in _records(path):
      event = event_pb2.Event.FromString(record)
      if not event.HasField("summary"):
        continue
      for value in event.summary.value:
        if value.HasField("simple_value"):
          out["scalars"].setdefault(value.tag, []).append((event.step, value.simple_value))
        elif value.HasField("tensor") and value.tensor.float_val:
          out["scalars"].setdefault(value.tag, []).append(
              (event.step, value.tensor.float_val[0]))
        elif value.HasField("image"):
          image = value.image
          out["images"].setdefault(value.tag, []).append(
              (event.step, {"height": image.height, "width": image.width,
                            "data": image.encoded_image_string}))
  return out


def decode_gif(data: bytes) -> np.ndarray:
  """An encoded GIF -> uint8 `(T, H, W, C)` frames."""
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
  return iio.imread(io.BytesIO(data), index=None, extension=".gif")
