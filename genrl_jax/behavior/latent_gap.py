"""The imagination gap: GenRL's reward of what a behaviour does in the environment, as the
world model sees it, next to what the same behaviour does in imagination from the same
states.

A behaviour is trained on rewards it earns in imagination; the environment's return tells
whether it learned the task, but not, when it did not, whether the imagined rollouts were
wrong (a policy that exploits the model) or the prompt target was. Both sides are scored
here on one scale, the reward the behaviour was trained on:

* realized: the episodes (frames and actions) are filtered through the world model (the
  sampled posterior, as the acting policy filters), every window of `horizon + 1`
  consecutive posterior states (one every `stride` steps) is scored against the prompt
  target with the training's reward (same score and alignment), and the scores are
  averaged over steps and windows;
* replayed: from each window's first posterior state the episode's own next `horizon`
  actions are rolled out in the world model (its prior) and scored the same way: what the
  model predicts those actions do;
* imagined: from the same states the actor's mean action (what the acting policy plays) is
  rolled out for `horizon` steps and scored the same way.

All are means over `horizon + 1` steps, as the training's `imag_reward_mean` (whose
rollouts add the actor's noise). Imagined well above replayed: the actor acts differently
in imagination than in the environment (it sees prior states there, filtered frames
here). Replayed well above realized: the model's predictions of the real actions score
better than what happened, i.e. the model's errors flatter the behaviour. The realized
reward of random-policy episodes (`actor_params=None`) is the baseline on the same scale.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from genrl_jax import mfwm as mfwm_lib
from genrl_jax import rssm
from genrl_jax.behavior import learner
from genrl_jax.behavior import starts as starts_lib
from genrl_jax.behavior.actor_critic import Actor
from genrl_jax.behavior.imagine import imagine

Params = Any
Episode = dict[str, np.ndarray]


def windows(post: dict[str, jax.Array], length: int, stride: int) -> dict[str, jax.Array]:
  """Batch-major arrays (states, actions) `(B, T, ...)` -> every window of `length` steps
  starting at `0, stride, ...` (those that fit), time-major `(length, B * W, ...)`,
  column `b * W + w`."""
  total = jax.tree.leaves(post)[0].shape[1]
  if total < length:
    raise ValueError(f"episodes of {total} steps hold no window of {length} steps")
  index = jnp.arange(0, total - length + 1, stride)[:, None] + jnp.arange(length)[None]

  def cut(x):
    w = x[:, index]  # (B, W, length, ...)
    w = w.reshape((-1,) + w.shape[2:])
    return jnp.swapaxes(w, 0, 1)

  return jax.tree.map(cut, post)


def target_columns(target: dict[str, jax.Array], num: int) -> dict[str, jax.Array]:
  """The prompt target `(H + 1, N, ...)` with `num` columns: column j is target column
  `j mod N` (the columns differ only by their drawn initial state)."""
  columns = jnp.arange(num) % target["stoch"].shape[1]
  return jax.tree.map(lambda x: x[:, columns], target)


def _rewards(wm_params: Params, actor_params: Params | None, target: dict[str, jax.Array],
             batch: dict[str, jax.Array], key: jax.Array | None, *, mfwm: mfwm_lib.MFWM,
             actor: Actor | None, config: ml_collections.ConfigDict, stride: int
             ) -> tuple[jax.Array, jax.Array, jax.Array]:
  k_post, k_imagine = (None, None) if key is None else jax.random.split(key)
  model = mfwm.world_model
  post = starts_lib.offline_starts(model, wm_params, batch, k_post)
  post = jax.tree.map(lambda x: x.reshape(batch["is_first"].shape + x.shape[1:]), post)
  real = windows(post, config.horizon + 1, stride)
  num = real["deter"].shape[1]
  reward_fn = learner.genrl_reward_fn(target_columns(target, num), num, mfwm,
                                      {"world_model": wm_params}, config)
  realized = jnp.mean(reward_fn(real)[0])
  start = jax.tree.map(lambda x: x[0], real)
  # The episodes' own actions (action t led to frame t) rolled out from the same states.
  actions = windows({"a": batch["action"]}, config.horizon + 1, stride)["a"][1:]
  k_replay, k_imagine = (None, None) if k_imagine is None else jax.random.split(k_imagine)
  replay = rssm.imagine_with_actions(model.rssm_def(), wm_params["rssm"],
                                     jnp.swapaxes(actions, 0, 1), start, k_replay)
  replay = jax.tree.map(lambda s, r: jnp.concatenate([s[None], jnp.swapaxes(r, 0, 1)]),
                        start, replay)
  replayed = jnp.mean(reward_fn(replay)[0])
  if actor is None:
    return realized, replayed, jnp.full((), jnp.nan)
  eps = jnp.zeros((config.horizon, num, actor.action_dim), jnp.float32)  # the actor's mean
  seq = imagine(model.rssm_def(), wm_params["rssm"], actor, actor_params, start,
                config.horizon, k_imagine, action_eps=eps)
  return realized, replayed, jnp.mean(reward_fn(seq)[0])


def latent_rewards(mfwm: mfwm_lib.MFWM, wm_params: Params, target: dict[str, Any],
                   episodes: Sequence[Episode], key: jax.Array | None,
                   config: ml_collections.ConfigDict, *, actor: Actor | None = None,
                   actor_params: Params | None = None, stride: int = 4
                   ) -> dict[str, float | None]:
  """GenRL's reward of `episodes` (each `observation (T, H, W, 3)` uint8, `action (T, A)`,
  `is_first (T,)`) against the prompt `target` (the behaviour state's `prompt_target`,
  time-major `(H + 1, N, ...)`), as the module docstring says.

  `key` draws the posterior and prior samples (None: their modes). `config` is
  `config.behavior`. Returns `{'realized', 'replayed', 'imagined', 'windows'}`: the
  mean rewards over all windows of all episodes (`imagined` None without an actor) and
  the number of windows. Episodes of equal length are scored in one call.
  """
  if not episodes:
    raise ValueError("latent_rewards needs at least one episode")
  if (actor is None) != (actor_params is None):
    raise ValueError("give both actor and actor_params, or neither")
  fn = jax.jit(lambda wp, ap, t, b, k: _rewards(wp, ap, t, b, k, mfwm=mfwm, actor=actor,
                                                 config=config, stride=stride))
  target = {k: jnp.asarray(v) for k, v in target.items()}
  by_length: dict[int, list[Episode]] = {}
  for e in episodes:
    by_length.setdefault(len(e["is_first"]), []).append(e)
  sums = {"realized": 0.0, "replayed": 0.0, "imagined": 0.0}
  total = 0
  for i, (length, group) in enumerate(sorted(by_length.items())):
    batch = {k: np.stack([e[k] for e in group]) for k in ("observation", "action", "is_first")}
    k = None if key is None else jax.random.fold_in(key, i)
    values = fn(wm_params, actor_params, target, batch, k)
    count = len(group) * len(range(0, length - config.horizon, stride))
    for name, value in zip(("realized", "replayed", "imagined"), values):
      sums[name] += float(value) * count
    total += count
  out = {k: v / total for k, v in sums.items()}
  return dict(out, imagined=None if actor is None else out["imagined"], windows=total)
