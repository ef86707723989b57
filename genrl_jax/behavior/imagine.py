"""Imagined rollouts of the policy in the frozen world model (method.md §4.3), as one `lax.scan`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from genrl_jax import dists, rssm
from genrl_jax.behavior.actor_critic import Actor

Params = Any


def imagine(rssm_def: rssm.RSSM, rssm_params: Params, actor: Actor, actor_params: Params,
            start: rssm.State, horizon: int, key: jax.Array | None,
            action_eps: jax.Array | None = None, recorded_stoch: jax.Array | None = None
            ) -> dict[str, jax.Array]:
  """Rolls the actor out for `horizon` steps from `start` `(N, ...)`.

  Step h samples `a_h = mean + std * eps` from the actor on `sg(feat_{h-1})` and a prior
  stoch (straight-through), so gradients reach the actor through the dynamics. The world
  model's parameters are used as given (the caller keeps them out of the gradient).
  `action_eps (H, N, A)` and `recorded_stoch (H, N, S, K)` replay given draws.
  Returns time-major `(H + 1, N, ...)`: `stoch, deter, logit, feat, action` (action 0 is
  zeros, the start state's) and `actor_mean`, `actor_std`: entry h is the actor's output
  on `sg(feat_{h-1})` that drew action h (zeros at h = 0).
  """
  num = start["deter"].shape[0]
  k_act, k_stoch = (None, None) if key is None else jax.random.split(key)
  if action_eps is None:
    if k_act is None:
      raise ValueError("imagine needs a key or recorded action noise")
    action_eps = jax.random.normal(k_act, (horizon, num, actor.action_dim))
  xs = {"eps": action_eps,
        "key": None if k_stoch is None else jax.random.split(k_stoch, horizon),
        "rec": recorded_stoch}

  def step(state, x):
    mean, std = actor.apply({"params": actor_params},
                            jax.lax.stop_gradient(rssm.feature(state)))
    action = mean + std * x["eps"]
    apply = lambda method, *a: rssm_def.apply({"params": rssm_params}, *a, method=method)
    deter = apply(rssm.RSSM.prior_deter, state["stoch"], state["deter"], action)
    logit = apply(rssm.RSSM.prior_logit, deter)
    if x["rec"] is not None:
      stoch = dists.straight_through(x["rec"], dists.unimix_probs(logit))
    else:
      stoch = rssm.draw(logit, x["key"])
    new = {"deter": deter, "stoch": stoch, "logit": logit}
    return new, dict(new, action=action, actor_mean=mean, actor_std=std)

  _, seq = jax.lax.scan(step, start, xs)
  zeros = jnp.zeros((num, actor.action_dim), jnp.float32)
  first = dict(start, action=zeros, actor_mean=zeros, actor_std=zeros)
  seq = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b], 0), first, seq)
  seq["feat"] = rssm.feature(seq)
  return seq
