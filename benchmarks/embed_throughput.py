r"""Throughput of an embedder's `embed_video` (clips/s) on the present devices.

  python benchmarks/embed_throughput.py                       # tiny random CLIP
  python benchmarks/embed_throughput.py --base --clips 16     # ViT-B/32-sized, random
  python benchmarks/embed_throughput.py --vlm=internvideo2 --clips 2 --iters 1
  python benchmarks/embed_throughput.py --vlm=internvideo2 --dtype=bfloat16 --clips 2 --iters 1

Nothing is downloaded. The tiny model is tests/tiny_clip.py's (width 32, 2 layers, 32 px
images, 8 px patches). `--base` builds a CLIP of the real ViT-B/32 configuration (the
`ClipConfig` defaults: vision width 768, 12 layers, 32 px patches, 224 px images; text width
512, 12 layers; projection 512) with random weights; the cost of a forward pass does not
depend on the values. Each model is saved to a temporary directory and loaded through
`ClipEmbedder`, as a real run would. Input: random uint8 clips of 8 frames of
`--frame_size` px (64 = the environments' frames, resized inside the jitted call).
`--vlm=internvideo2` builds the real 1B InternVideo2 stage-2 model (`internvideo2_model.SIZES
['1b']`: 40 blocks of width 1408 on 1 + 8*256 = 2049 tokens per clip, 224 px) with random
weights (the module's own initialisers, float32) and runs `InternVideo2Embedder.embed_video`
(resize of the 64 px frames to 224 px inside the jitted call) with `--dtype` matmuls; the
video tower alone is timed, as `embed_video` is what embeds datasets. It needs ~5.2 GB of
host/device memory for the weights (peak RSS 12.4 GB on the CPU).
Measured (2-core CPU shared with other jobs, load average 2-9, so only an order of
magnitude; `--clips 2 --iters 1`): float32 0.0085 clips/s (117 s per clip; first call
351 s), bfloat16 0.015 clips/s (65 s per clip, under a lighter load). No GPU was measured.
Prints the first call's time (compilation included) and the median clips/s of the rest.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download: random weights only

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))
from genrl_jax.vlm import clip  # pylint: disable=wrong-import-position
from genrl_jax.vlm import internvideo2  # pylint: disable=wrong-import-position
from genrl_jax.vlm import internvideo2_model  # pylint: disable=wrong-import-position
import tiny_clip  # pylint: disable=wrong-import-position


def write_base_clip(directory: str) -> None:
  """A random CLIP of the ViT-B/32 configuration, with the tiny tokenizer."""
  from genrl_jax.vlm import clip_model  # pylint: disable=g-import-not-at-top
  vocab_size = tiny_clip.write_tokenizer(directory)
  # The real vocabulary size (49408) is kept; only the special ids follow the tokenizer.
  text = clip_model.TextConfig(bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                               pad_token_id=vocab_size - 1)
  config = clip_model.ClipConfig(text_config=text)
  clip_model.save(directory, config, clip_model.init_params(config, seed=0))


def build_clip(args) -> tuple[object, str, str]:
  """`(embedder, name, size description)` of the tiny or ViT-B/32-sized random CLIP."""
  with tempfile.TemporaryDirectory() as directory:
    if args.base:
      write_base_clip(directory)
    else:
      tiny_clip.write_tiny_clip(directory)
    embedder = clip.ClipEmbedder(directory, batch_size=args.batch_size)
  name = "base (ViT-B/32 config)" if args.base else "tiny"
  return embedder, name, f"image {embedder.image_size} px"


def build_internvideo2(args) -> tuple[object, str, str]:
  """`(embedder, name, size description)` of the 1B InternVideo2 with random weights."""
  config = internvideo2_model.SIZES["1b"]
  init = jax.jit(internvideo2_model.init_params, static_argnums=0)
  params = jax.block_until_ready(init(config, jax.random.key(0)))
  embedder = internvideo2.InternVideo2Embedder.from_params(
      config, params, "internvideo2:random-1b", dtype=args.dtype, batch_size=args.batch_size)
  n = sum(x.size for x in jax.tree_util.tree_leaves(params))
  return embedder, f"internvideo2 1B ({n / 1e9:.2f}e9 params, {args.dtype} matmuls)", (
      f"image {config.img_size} px, {config.num_tokens} tokens per clip")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--base", action="store_true", help="ViT-B/32-sized random CLIP")
  parser.add_argument("--clips", type=int, default=256, help="clips per embed_video call")
  parser.add_argument("--frame_size", type=int, default=64)
  parser.add_argument("--batch_size", type=int, default=64, help="config.vlm.batch_size")
  parser.add_argument("--iters", type=int, default=3, help="timed calls after the first")
  parser.add_argument("--vlm", choices=("clip", "internvideo2"), default="clip")
  parser.add_argument("--dtype", choices=tuple(internvideo2_model.DTYPES), default="float32",
                      help="internvideo2: matmul dtype (config.vlm.internvideo2.dtype)")
  args = parser.parse_args()
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, "
        f"{jax.local_device_count()}x{jax.local_devices()[0].device_kind}", flush=True)
  t0 = time.perf_counter()
  build = build_internvideo2 if args.vlm == "internvideo2" else build_clip
  embedder, name, size = build(args)
  build_s = time.perf_counter() - t0
  frames = np.random.default_rng(0).integers(
      0, 256, (args.clips, 8, args.frame_size, args.frame_size, 3), dtype=np.uint8)
  t0 = time.perf_counter()
  embedder.embed_video(frames)
  first_s = time.perf_counter() - t0
  times = []
  for _ in range(args.iters):
    t0 = time.perf_counter()
    embedder.embed_video(frames)
    times.append(time.perf_counter() - t0)
  median = statistics.median(times)
  print(f"{name}: E={embedder.embed_dim}, {size}, "
        f"{args.clips} clips x 8 frames of {args.frame_size} px, "
        f"{embedder.batch_size} clips per device call: "
        f"{args.clips / median:.3g} clips/s ({median / args.clips:.3g} s per clip, "
        f"{8 * args.clips / median:.3g} frames/s, "
        f"median of {args.iters}); first call {first_s:.1f} s (compiles), "
        f"build + load (or init) {build_s:.1f} s", flush=True)


if __name__ == "__main__":
  main()
