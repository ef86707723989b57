"""Open-loop predictions of the world model (spec 2.9): truth / model / error videos.

The first `context` frames of each sequence are filtered (posterior), the rest are imagined
with the dataset's actions and decoded. The video puts, side by side, the true frames, the
model's frames (reconstructions, then predictions) and the absolute error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from genrl_jax import rssm
from genrl_jax import world_model as wm_lib

Params = dict


def _to_uint8(image: jax.Array) -> jax.Array:
  """Decoder output (centred at 0, range ~[-0.5, 0.5]) -> uint8."""
  return jnp.clip((image + 0.5) * 255.0, 0, 255).round().astype(jnp.uint8)


def open_loop_video(model: wm_lib.WorldModel, params: Params, batch: dict[str, jax.Array],
                    key: jax.Array | None, context: int = 5) -> jax.Array:
  """`batch` with `observation (B, T, 64, 64, 3)` uint8, `action (B, T, A)`, `is_first
  (B, T)` -> uint8 `(B, T, 64, 192, 3)`: truth | model | |truth - model|.

  `key=None` filters and imagines with the latent modes.
  """
  obs = batch["observation"]
  length = obs.shape[1]
  if not 0 < context < length:
    raise ValueError(f"context={context} must be in [1, {length - 1}] for {length}-step "
                     "sequences")
  keys = (None, None) if key is None else tuple(jax.random.split(key))
  apply = lambda method, *args: model.apply({"params": params}, *args, method=method)
  embed = apply(wm_lib.WorldModel.encode, obs[:, :context])
  post, _ = rssm.observe(model.rssm_def(), params["rssm"], embed, batch["action"][:, :context],
                         batch["is_first"][:, :context], keys[0])
  last = jax.tree.map(lambda x: x[:, -1], post)
  prior = rssm.imagine_with_actions(model.rssm_def(), params["rssm"],
                                    batch["action"][:, context:], last, keys[1])
  states = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=1), post, prior)
  predicted = _to_uint8(apply(wm_lib.WorldModel.decode, rssm.flat_stoch(states)))
  error = jnp.abs(predicted.astype(jnp.int16) - obs.astype(jnp.int16)).astype(jnp.uint8)
  return jnp.concatenate([obs, predicted, error], axis=3)
