"""One actor-critic update in imagination (method.md §4.3-4.4), whatever the reward: the update
of both the GenRL behaviour learner (`learner.py`, reward: matching the prompt's target
latents) and the collection agents (`collect/task_agent.py`, reward: the world model's
reward head or Plan2Explore's disagreement).

`imagination_loss`: start states `(N, ...)` -> imagined rollout of the actor in the frozen
world model -> reward of every imagined state -> lambda returns of the slow critic ->
actor loss (dynamics backpropagation) + critic loss. `apply_update`: one gradient of such a
loss, separate clipped steps of the actor's and critic's optimizers, the first non-finite
update recorded, the slow critic mixed towards the critic every `slow_target_every` updates.

`config` holds `horizon, discount, lambda_, actor_entropy, slow_target_every,
slow_target_fraction` (the learner's `config.behavior`, or the agent's settings).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from genrl_jax import dists, rssm
from genrl_jax import world_model as wm_lib
from genrl_jax.behavior.actor_critic import Actor, Critic, actor_critic_losses
from genrl_jax.behavior.imagine import imagine
from genrl_jax.train import steps

Params = Any
Metrics = dict[str, jax.Array]
# seq (time-major `(H + 1, N, ...)`) -> (reward (H + 1, N) of every state, aux pytree).
RewardFn = Callable[[dict[str, jax.Array]], tuple[jax.Array, Any]]
# params {'actor', 'critic'} -> (loss, (new return EMA (2,), metrics, extra)).
LossFn = Callable[[Params], tuple[jax.Array, tuple[jax.Array, Metrics, Any]]]


class ActorCritic(NamedTuple):
  """What one update reads and writes: `params = {'actor', 'critic'}`, their optimizer
  state, the slow critic's params, the return EMA `(2,)` and the first update whose loss
  or gradient was not finite (-1 while all were)."""
  params: Params
  opt_state: optax.OptState
  target_critic: Params
  return_ema: jax.Array
  nonfinite_step: jax.Array


def imagination_loss(params: Params, target_critic: Params, return_ema: jax.Array,
                     starts: rssm.State, key: jax.Array | None, *,
                     model: wm_lib.WorldModel, wm_params: Params, actor: Actor,
                     critic: Critic, reward_fn: RewardFn, config: ml_collections.ConfigDict,
                     replay: dict[str, jax.Array] | None = None,
                     losses: Callable[..., Any] = actor_critic_losses
                     ) -> tuple[jax.Array, tuple[jax.Array, Metrics, dict[str, jax.Array],
                                                 Any]]:
  """Actor loss + critic loss of `params = {'actor', 'critic'}` from starts `(N, ...)`.

  The two terms touch disjoint parameters (the critic sees stopped features and targets,
  the actor's return goes through the frozen slow critic), so one gradient of the sum
  gives each network its own loss's gradient. `replay` (tests) gives the imagination's
  draws: `action_eps (H, N, A)`, `stoch (H, N, S, K)`. `losses` is
  `actor_critic.actor_critic_losses` (a caller may pass its own module's name for it).
  Returns `(loss, (new_return_ema, metrics, seq, aux))`: `seq` is the imagined sequence
  (time-major `(H + 1, N, ...)`) with its `reward` and `slow_value`, `aux` the reward's.
  """
  replay = replay or {}
  sg = jax.lax.stop_gradient
  apply = lambda p, x: critic.apply({"params": p}, x)
  seq = imagine(model.rssm_def(), wm_params["rssm"], actor, params["actor"], starts,
                config.horizon, key, replay.get("action_eps"), replay.get("stoch"))
  reward, aux = reward_fn(seq)
  # The slow critic's values on the non-detached features: the actor's gradient flows
  # through them into the imagined dynamics (method.md §4.4, fixture README).
  slow_value = dists.twohot_mean(apply(target_critic, seq["feat"]))
  # The policy on sg(feat[:-2]) (states 0..H-2) is what drew actions 1..H-1.
  actor_out = (seq["actor_mean"][1:-1], seq["actor_std"][1:-1])
  critic_logits = apply(params["critic"], sg(seq["feat"][:-1]))
  actor_loss, critic_loss, ema, metrics = losses(
      seq, reward, slow_value, actor_out, critic_logits, return_ema,
      discount=config.discount, lambda_=config.lambda_, actor_entropy=config.actor_entropy)
  seq = dict(seq, reward=reward, slow_value=slow_value)
  return actor_loss + critic_loss, (ema, metrics, jax.tree.map(sg, seq), jax.tree.map(sg, aux))


def apply_update(ac: ActorCritic, step: jax.Array, loss_fn: LossFn,
                 optimizer: optax.GradientTransformation, config: ml_collections.ConfigDict
                 ) -> tuple[ActorCritic, Metrics, Any]:
  """One update of `ac` by the gradient of `loss_fn(params) -> (loss, (new return EMA,
  metrics, extra))`; `step` is the number of updates before this one.

  The slow critic becomes `fraction * critic + (1 - fraction) * slow` (the updated
  critic) when `step` is a multiple of `slow_target_every` (the first update included).
  Returns the new `ac`, the metrics with the actor's and critic's gradient norms, and
  `extra`.
  """
  (loss, (ema, metrics, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(ac.params)
  params, opt_state = steps.apply_updates(optimizer, grads, ac.opt_state, ac.params)
  copy = (step % config.slow_target_every) == 0
  mix = config.slow_target_fraction
  slow = jax.tree.map(lambda c, t: jnp.where(copy, mix * c + (1.0 - mix) * t, t),
                      params["critic"], ac.target_critic)
  nonfinite = steps.first_nonfinite(ac.nonfinite_step, step, loss, optax.tree.norm(grads))
  metrics = dict(metrics, imag_actor_grad_norm=optax.tree.norm(grads["actor"]),
                 imag_critic_grad_norm=optax.tree.norm(grads["critic"]))
  return ActorCritic(params, opt_state, slow, ema, nonfinite), metrics, extra
