"""Import of the reference's episode files (`*.npz`, method.md §6.1) into a dataset.

The reference stores one compressed `.npz` per episode with `observation (T, 3, 64, 64)`
uint8 (CHW), `action (T, A)`, `reward (T, 1)` or `(T,)`, `discount` (optional: then
`1 - is_terminal`), `is_first/is_last/is_terminal (T,)` and `clip_video (T, 512)`, the
InternVideo2 embedding of the 8 frames ending at each step; other keys (`clip_img`, ...)
are ignored. Files are taken in sorted path order (the reference names start with the
episode index) and episode `i` gets id `i`, so an interrupted import resumes where it
stopped. Stored embeddings are kept, recorded as made by the VLM `vlm`.
"""

from __future__ import annotations

import glob
import os
import zipfile

import numpy as np
import tqdm

from genrl_jax.data import dataset as dataset_lib
from genrl_jax.data import dataset_writer
from genrl_jax.data import episodes as episodes_lib
from genrl_jax.data.episodes import DatasetError, Episode

REFERENCE_VLM = "internvideo2:InternVideo2-stage2_1b-224p-f4"
REFERENCE_EMBEDDING_KEY = "clip_video"
_REQUIRED = ("observation", "action", "reward", "is_first", "is_last", "is_terminal")


def find_npz(source: str) -> list[str]:
  """The `.npz` files under `source` (recursively), sorted; refuses an empty folder."""
  if not os.path.isdir(source):
    raise FileNotFoundError(f"{source} is not a directory")
  paths = sorted(glob.glob(os.path.join(source, "**", "*.npz"), recursive=True))
  if not paths:
    raise DatasetError(f"no episode files (*.npz) under {source}")
  return paths


def read_reference_episode(path: str, with_embedding: bool = True) -> Episode:
  """One reference episode file in our layout (HWC frames, 1-D scalars per step)."""
  try:
    with np.load(path, allow_pickle=False) as data:
      raw = {k: data[k] for k in data.files}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise DatasetError(f"{path}: cannot be read as an .npz episode file ({e})") from e
  missing = [k for k in _REQUIRED if k not in raw]
  if missing:
    raise DatasetError(f"{path}: missing keys {missing}; a reference episode has "
                       f"{list(_REQUIRED)} (+ discount, clip_video)")
  obs = raw["observation"]
  if obs.ndim == 4 and obs.shape[1] == 3 and obs.shape[-1] != 3:
    obs = obs.transpose(0, 2, 3, 1)  # CHW (reference) -> HWC
  episode = {"observation": obs, "action": raw["action"]}
  for key in ("reward", "discount"):
    if key in raw:
      value = raw[key]
      if value.ndim == 2 and value.shape[1] == 1:
        value = value[:, 0]
      episode[key] = value
  if "discount" not in episode:
    episode["discount"] = 1.0 - raw["is_terminal"].astype(np.float32)
  for key in ("is_first", "is_last", "is_terminal"):
    episode[key] = raw[key]
  if with_embedding:
    if REFERENCE_EMBEDDING_KEY not in raw:
      raise DatasetError(f"{path}: no {REFERENCE_EMBEDDING_KEY!r} embeddings; import "
                         "without embeddings (--no-embeddings) or embed the dataset later")
    episode[episodes_lib.EMBEDDING_KEY] = raw[REFERENCE_EMBEDDING_KEY]
  episodes_lib.check_episode(episode, path)
  return episodes_lib.cast_episode(episode)


def import_npz(source: str, out: str, domain: str, *, with_embeddings: bool | None = None,
               vlm: str | None = None, n_frames: int = 8, episodes_per_shard: int = 16,
               progress: bool = True) -> int:
  """Converts every reference episode file under `source` into the dataset `out`.

  `with_embeddings`: keep `clip_video` (default: when the first file has it; then every
  file must). Returns the number of episodes imported by this call; episodes already in
  `out` (an interrupted import) are skipped. `vlm`: who made the embeddings (default:
  the reference's InternVideo2).
  """
  vlm = vlm or REFERENCE_VLM
  paths = find_npz(source)
  first = read_reference_episode(paths[0], with_embedding=False)
  if with_embeddings is None:
    with np.load(paths[0]) as data:
      with_embeddings = REFERENCE_EMBEDDING_KEY in data.files
  spec = dataset_lib.DatasetSpec(domain=domain, action_dim=first["action"].shape[1],
                                 image_size=first["observation"].shape[1])
  writer = dataset_writer.EpisodeWriter(
      out, spec, episodes_per_shard, source={"import": os.path.abspath(source)},
      vlm=vlm if with_embeddings else None, n_frames=n_frames)
  done = 0
  with writer:
    todo = [(i, p) for i, p in enumerate(paths) if i not in writer.episode_ids]
    for i, path in tqdm.tqdm(todo, desc="import npz", disable=not progress,
                             dynamic_ncols=True):
      writer.add(read_reference_episode(path, with_embeddings), episode_id=i, where=path)
      done += 1
  return done

