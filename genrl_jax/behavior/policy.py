"""Acting in an environment with a learned behaviour (method.md §4.5).

The policy filters observations with the world model's posterior and feeds the latent
feature to the actor. Its carry is `{'latent': {deter, stoch, logit} (N, ...), 'action'
(N, A)}`, all zeros at the start; `is_first` resets a row, so one batched call serves
several environments that start episodes at different times.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from genrl_jax import rssm
from genrl_jax import world_model as wm_lib
from genrl_jax.behavior.actor_critic import Actor

Params = Any
Carry = dict[str, Any]


def initial_carry(model: wm_lib.WorldModel, num: int) -> Carry:
  return {"latent": rssm.initial_state(model.rssm_def(), (num,)),
          "action": jnp.zeros((num, model.action_dim), jnp.float32)}


def act(params: Params, obs: dict[str, jax.Array], carry: Carry, rng: jax.Array,
        eval_mode: bool, *, model: wm_lib.WorldModel, actor: Actor,
        sample_state: bool = True) -> tuple[jax.Array, Carry]:
  """One action per environment.

  params `{'world_model', 'actor'}`; obs `observation (N, 64, 64, 3)` uint8 and
  `is_first (N,)`. The posterior is sampled (also in evaluation, as the reference) unless
  `sample_state` is False. Training draws `mean + std * eps`; evaluation takes the mean.
  Actions are not clipped here (the environment wrapper clips to [-1, 1]).
  Returns `(action (N, A), new carry)`.
  """
  k_state, k_action = jax.random.split(rng)
  wm_params = params["world_model"]
  embed = model.apply({"params": wm_params}, obs["observation"], method=wm_lib.WorldModel.encode)
  latent, _ = model.rssm_def().apply(
      {"params": wm_params["rssm"]}, carry["latent"], carry["action"], embed,
      obs["is_first"].astype(jnp.float32), k_state if sample_state else None,
      method=rssm.RSSM.obs_step)
  mean, std = actor.apply({"params": params["actor"]}, rssm.feature(latent))
  if eval_mode:
    action = mean
  else:
    action = mean + std * jax.random.normal(k_action, mean.shape)
  return action, {"latent": latent, "action": action}


def make_act_fn(model: wm_lib.WorldModel, actor: Actor, sample_state: bool = True
                ) -> Callable[..., tuple[jax.Array, Carry]]:
  """`act(params, obs, carry, rng, eval_mode)` jitted (eval_mode static)."""
  fn = functools.partial(act, model=model, actor=actor, sample_state=sample_state)
  return jax.jit(fn, static_argnums=(4,))


class BehaviorPolicy:
  """A learned behaviour as an environment policy (`genrl_jax.envs.evaluate.Policy`).

  params `{'world_model', 'actor'}`; the key of step `n` is folded from `(seed, n)`.
  """

  def __init__(self, model: wm_lib.WorldModel, actor: Actor, params: Params, seed: int,
               eval_mode: bool = True, sample_state: bool = True):
    self._model = model
    self._act = make_act_fn(model, actor, sample_state)
    self._params = params
    self._key = jax.random.key(seed)
    self._eval_mode = eval_mode

  def initial_carry(self, num: int) -> Carry:
    return initial_carry(self._model, num)

  def __call__(self, obs: dict[str, Any], carry: Carry, step: int
               ) -> tuple[np.ndarray, Carry]:
    action, carry = self._act(self._params, obs, carry, jax.random.fold_in(self._key, step),
                              self._eval_mode)
    return np.asarray(action), carry
