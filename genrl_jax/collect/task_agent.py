"""The online model-based learner of the collection agents: state, modules and train step.

`data.collector='dreamer'` (method.md §8): a DreamerV3-style agent trained on the environment's
reward. One update on a replay batch `(B, T)`:

1. World model: `world_model_loss` on the batch. The reward loss also trains the encoder
   and RSSM (the reference's `grad_heads [decoder, reward]`). One clipped Adam step.
2. Actor-critic: every posterior state of the batch (detached, `B * T` starts) is rolled
   out `horizon` (15) steps by the actor in the updated, frozen world model
   (`behavior.imagine.imagine`); the reward of imagined state t is the reward head's mean
   on its feature; lambda returns of the slow critic, actor loss by dynamics
   backpropagation with entropy bonus 3e-4, twohot critic loss
   (`behavior.actor_critic_update`, the GenRL learner's update with another reward);
   separate actor and critic Adam steps; the slow critic is a hard copy every
   `slow_target_every` updates.

`data.collector='plan2explore'` uses the same update with the exploration ensemble
(`plan2explore.py`) trained next to the world model in step 1 and its normalised
disagreement as the reward in step 2 (the reward head still learns, from detached
features, as in the reference's DreamerV2 config).

Deviation from the reference: both agents use this repository's DreamerV3-style world
model (`world_model.WorldModel`, sizes from `config.world_model`, the posterior seeing
`[deter, embed]` unless `agent.single_obs_posterior`) and the behaviour learner's actor and
critic (sizes from `config.behavior.actor/critic`) instead of the reference's separate
DreamerV3 (512 units) and DreamerV2 (Plan2Explore) configurations. Settings: `config.agent`.

    python experiments/main.py --config=configs/walker.py --mode=collect \\
        --config.data.collector=dreamer

The state is one pytree (`AgentState`); `train_step(state, batch, rng, *, settings,
action_dim)` is a pure function whose static arguments are hashable, so equal settings
share one compilation (`jit_train_step`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from genrl_jax import dists, rssm
from genrl_jax import world_model as wm_lib
from genrl_jax.collect import plan2explore as p2e
from genrl_jax.behavior import learner as learner_lib
from genrl_jax.behavior import starts as starts_lib
from genrl_jax.behavior import actor_critic_update as ac_update
from genrl_jax.behavior.actor_critic import Actor, Critic
from genrl_jax.train import optimizer as optimizer_lib
from genrl_jax.train import steps

Params = Any
Metrics = dict[str, jax.Array]
COLLECTORS = ("dreamer", "plan2explore")
# Parameter groups of the model step and of the behaviour step.
MODEL_KEYS = ("world_model", "ensemble")
BEHAVIOR_KEYS = ("actor", "critic")
# (reward (H + 1, N), new normaliser magnitude, metrics) of an imagined sequence.
RewardFn = Callable[[dict[str, jax.Array]], tuple[jax.Array, jax.Array, Metrics]]


@flax.struct.dataclass
class AgentState:
  """Everything a collection agent learns and counts.

  `params = {'world_model', 'actor', 'critic'}` (+ `'ensemble'` for Plan2Explore);
  `step`: updates applied; `agent_steps`: environment (agent) steps the collection has
  taken (written by the collection loop before each save); `return_ema (2,)`: the return
  percentiles' EMA (method.md §1.11); `reward_magnitude`: the intrinsic reward normaliser
  (Plan2Explore; unused by the task agent); `nonfinite_step`: the first update whose loss
  was not finite (-1 while all were).
  """
  step: jax.Array
  agent_steps: jax.Array
  params: Params
  target_critic: Params
  model_opt_state: optax.OptState
  behavior_opt_state: optax.OptState
  return_ema: jax.Array
  reward_magnitude: jax.Array
  nonfinite_step: jax.Array


@dataclasses.dataclass(frozen=True)
class Modules:
  """The agent's linen modules (hashable: equal sizes give equal, cache-sharing modules)."""
  model: wm_lib.WorldModel
  actor: Actor
  critic: Critic
  ensemble: p2e.Ensemble | None


def agent_settings(config: ml_collections.ConfigDict, collector: str
                   ) -> ml_collections.FrozenConfigDict:
  """What the agent's modules and updates read, gathered from the run's config.

  Hashable (a static argument of the jitted step) and free of paths and counts, so runs
  that differ only in those share compilations.
  """
  if collector not in COLLECTORS:
    raise ValueError(f"collector {collector!r}: expected one of {COLLECTORS}")
  a = config.agent
  own = a[collector]
  wm = config.world_model.to_dict()
  wm["single_obs_posterior"] = a.single_obs_posterior
  settings = dict(
      collector=collector, compute_dtype=config.compute_dtype, world_model=wm,
      behavior=dict(actor=config.behavior.actor.to_dict(),
                    critic=config.behavior.critic.to_dict(),
                    actor_optimizer=dict(a.actor_optimizer.to_dict(), lr=own.actor_lr),
                    critic_optimizer=dict(a.critic_optimizer.to_dict(), lr=own.critic_lr)),
      model_optimizer=dict(a.model_optimizer.to_dict(), lr=own.model_lr),
      horizon=a.horizon, discount=a.discount, lambda_=a.lambda_,
      actor_entropy=own.actor_entropy, reward_grad=own.reward_grad,
      slow_target_every=a.slow_target_every, slow_target_fraction=a.slow_target_fraction)
  if collector == "plan2explore":
    settings["ensemble"] = dict(
        size=own.ensemble_size, units=own.ensemble_units, loss_scale=own.ensemble_loss_scale,
        reward_norm_momentum=own.reward_norm_momentum, reward_norm_scale=own.reward_norm_scale)
  return ml_collections.FrozenConfigDict(settings)


def build_modules(settings: ml_collections.FrozenConfigDict, action_dim: int) -> Modules:
  model = wm_lib.make_world_model(settings, action_dim)
  behavior = learner_lib.make_behavior(settings, action_dim)
  ensemble = None
  if "ensemble" in settings:
    e = settings.ensemble
    embed_dim = 32 * model.cnn_depth  # the encoder's output size
    ensemble = p2e.Ensemble(e.size, e.units, embed_dim,
                            dtype=wm_lib.compute_dtype(settings.compute_dtype))
  return Modules(model, behavior.actor, behavior.critic, ensemble)


def model_optimizer(settings: ml_collections.FrozenConfigDict) -> optax.GradientTransformation:
  """The world model's optimizer; the ensemble gets its own with the same settings."""
  return optimizer_lib.per_group({k: optimizer_lib.make_optimizer(settings.model_optimizer)
                                  for k in MODEL_KEYS})


def behavior_optimizer(settings: ml_collections.FrozenConfigDict
                       ) -> optax.GradientTransformation:
  return learner_lib.make_optimizer(settings.behavior)


def init_key(seed: int) -> jax.Array:
  """The key of `init_state`: an 'rbg' key (XLA's RngBitGenerator). Initialising ~100
  parameter arrays with threefry keys makes a program that compiles ~4x slower on CPU."""
  return jax.random.key(seed, impl="rbg")


def init_state(settings: ml_collections.FrozenConfigDict, action_dim: int, key: jax.Array
               ) -> AgentState:
  """A fresh state; the slow critic starts as a copy of the critic (method.md §4.1).

  Each part is initialised by one jitted program keyed by its modules, so that agents with
  the same world model and actor-critic (both collectors) share the compilation.
  """
  modules = build_modules(settings, action_dim)
  k_core, k_ensemble = jax.random.split(key)
  params = _init_core(k_core, model=modules.model, actor=modules.actor, critic=modules.critic)
  if modules.ensemble is not None:
    params["ensemble"] = _init_ensemble(key=k_ensemble, ensemble=modules.ensemble,
                                        feat_dim=learner_lib.feature_dim(modules.model),
                                        action_dim=action_dim)
  model_opt_state, behavior_opt_state = _init_optimizers(params, settings=settings)
  return AgentState(
      step=jnp.zeros((), jnp.int32), agent_steps=jnp.zeros((), jnp.int32), params=params,
      target_critic=jax.tree.map(jnp.array, params["critic"]),
      model_opt_state=model_opt_state, behavior_opt_state=behavior_opt_state,
      return_ema=jnp.zeros((2,), jnp.float32), reward_magnitude=jnp.ones((), jnp.float32),
      nonfinite_step=jnp.full((), -1, jnp.int32))


@functools.partial(jax.jit, static_argnames=("model", "actor", "critic"))
def _init_core(key: jax.Array, *, model: wm_lib.WorldModel, actor: Actor, critic: Critic
               ) -> Params:
  k_wm, k_behavior = jax.random.split(key)
  return {"world_model": wm_lib.init_world_model(model, k_wm),
          **learner_lib.init_params(learner_lib.Behavior(actor, critic),
                                    learner_lib.feature_dim(model), k_behavior)}


_init_ensemble = jax.jit(p2e.init_ensemble, static_argnames=("ensemble", "feat_dim",
                                                             "action_dim"))


@functools.partial(jax.jit, static_argnames=("settings",))
def _init_optimizers(params: Params, *, settings: ml_collections.FrozenConfigDict
                     ) -> tuple[optax.OptState, optax.OptState]:
  model_params, behavior_params = _split(params)
  return (model_optimizer(settings).init(model_params),
          behavior_optimizer(settings).init(behavior_params))


def _split(params: Params) -> tuple[Params, Params]:
  return ({k: v for k, v in params.items() if k in MODEL_KEYS},
          {k: v for k, v in params.items() if k in BEHAVIOR_KEYS})


def reward_head_reward(model: wm_lib.WorldModel, wm_params: Params, feat: jax.Array
                       ) -> jax.Array:
  """The reward head's mean on features `(..., F)` -> `(...)`. Not detached: the actor's
  gradient flows through the frozen head into the imagined dynamics."""
  logits = model.apply({"params": wm_params}, feat, method=wm_lib.WorldModel.reward_logits)
  return dists.twohot_mean(logits)


def model_loss(params: Params, batch: dict[str, jax.Array], key: jax.Array, *,
               modules: Modules, settings: ml_collections.FrozenConfigDict
               ) -> tuple[jax.Array, tuple[Metrics, rssm.State]]:
  """World-model loss (+ the ensemble's prediction loss) of `params = {'world_model',
  ('ensemble')}` on a batch `(B, T, ...)`. The two act on disjoint parameters (the ensemble
  sees detached inputs and targets), so one gradient of the sum trains each by its own.
  Returns `(loss, (metrics, posterior (B, T, ...)))`."""
  loss, (metrics, post) = wm_lib.world_model_loss(
      modules.model, params["world_model"], batch, key, settings.world_model,
      reward_grad=settings.reward_grad)
  if modules.ensemble is not None:
    # The target: the encoder's embedding of the next frame (XLA shares this encoder pass
    # with the world-model loss's).
    embed = modules.model.apply({"params": params["world_model"]}, batch["observation"],
                                method=wm_lib.WorldModel.encode)
    e_loss, e_metrics = p2e.ensemble_loss(modules.ensemble, params["ensemble"],
                                          rssm.feature(post), batch["action"], embed,
                                          settings.ensemble.loss_scale)
    loss = loss + e_loss
    metrics = {**metrics, **e_metrics}
  return loss, (metrics, post)


def actor_critic_update(state: AgentState, starts: rssm.State, key: jax.Array,
                        wm_params: Params, reward_fn: RewardFn, *, modules: Modules,
                        settings: ml_collections.FrozenConfigDict
                        ) -> tuple[AgentState, Metrics]:
  """One actor-critic update from start states `(N, ...)` in the frozen world model
  `wm_params` (`behavior.actor_critic_update`, the GenRL learner's update), with
  `reward_fn(seq) -> (reward (H + 1, N), magnitude, metrics)`.

  Updates actor, critic, slow critic (copied when the number of updates before this one
  is a multiple of `slow_target_every`), return EMA and reward normaliser; not `step`.
  """

  def reward_and_aux(seq):
    reward, magnitude, metrics = reward_fn(seq)
    return reward, (magnitude, metrics)

  def loss_fn(params):
    loss, (ema, metrics, _, (magnitude, reward_metrics)) = ac_update.imagination_loss(
        params, state.target_critic, state.return_ema, starts, key, model=modules.model,
        wm_params=wm_params, actor=modules.actor, critic=modules.critic,
        reward_fn=reward_and_aux, config=settings)
    return loss, (ema, {**metrics, **reward_metrics}, magnitude)

  _, params = _split(state.params)
  ac = ac_update.ActorCritic(params, state.behavior_opt_state, state.target_critic,
                             state.return_ema, state.nonfinite_step)
  ac, metrics, magnitude = ac_update.apply_update(ac, state.step, loss_fn,
                                                  behavior_optimizer(settings), settings)
  state = state.replace(params={**state.params, **ac.params}, behavior_opt_state=ac.opt_state,
                        target_critic=ac.target_critic, return_ema=ac.return_ema,
                        reward_magnitude=magnitude, nonfinite_step=ac.nonfinite_step)
  return state, metrics


def make_reward_fn(state: AgentState, wm_params: Params, modules: Modules,
                   settings: ml_collections.FrozenConfigDict) -> RewardFn:
  """The imagination reward of the collector: the reward head's mean (task agent) or the
  normalised ensemble disagreement (Plan2Explore)."""
  if modules.ensemble is None:
    return lambda seq: (reward_head_reward(modules.model, wm_params, seq["feat"]),
                        state.reward_magnitude, {})
  e = settings.ensemble
  return functools.partial(p2e.exploration_reward, modules.ensemble, state.params["ensemble"],
                           magnitude=state.reward_magnitude, first=state.step == 0,
                           momentum=e.reward_norm_momentum, scale=e.reward_norm_scale)


def train_step(state: AgentState, batch: dict[str, jax.Array], rng: jax.Array, *,
               settings: ml_collections.FrozenConfigDict, action_dim: int
               ) -> tuple[AgentState, Metrics]:
  """One update of the agent on a replay batch (see the module docstring).

  batch: `observation (B, T, 64, 64, 3) uint8`, `action (B, T, A)`, `reward (B, T)`,
  `is_first (B, T)`. Returns the new state (`step + 1`) and scalar metrics.
  """
  modules = build_modules(settings, action_dim)
  wm_lib.check_batch(batch, action_dim)
  batch = wm_lib.float_batch(batch)
  k_model, k_imag = jax.random.split(rng)

  model_params, _ = _split(state.params)
  loss_fn = functools.partial(model_loss, batch=batch, key=k_model, modules=modules,
                              settings=settings)
  (loss, (metrics, post)), grads = jax.value_and_grad(loss_fn, has_aux=True)(model_params)
  model_params, model_opt_state = steps.apply_updates(model_optimizer(settings), grads,
                                                      state.model_opt_state, model_params)
  metrics = {**metrics, "model_grad_norm": optax.tree.norm(grads["world_model"])}
  if "ensemble" in grads:
    metrics["ensemble_grad_norm"] = optax.tree.norm(grads["ensemble"])
  state = state.replace(params={**state.params, **model_params},
                        model_opt_state=model_opt_state,
                        nonfinite_step=steps.first_nonfinite(state.nonfinite_step, state.step,
                                                             loss, optax.tree.norm(grads)))

  # Every posterior state of the batch starts an imagined rollout (method.md §4.2); the
  # actor-critic sees the world model just updated, as the reference's in-place update.
  starts = starts_lib.flatten_starts(post)
  wm_params = state.params["world_model"]
  reward_fn = make_reward_fn(state, wm_params, modules, settings)
  state, ac_metrics = actor_critic_update(state, starts, k_imag, wm_params, reward_fn,
                                          modules=modules, settings=settings)
  return state.replace(step=state.step + 1), {**metrics, **ac_metrics}


# Static arguments are hashable (frozen settings, an int): equal settings share one
# compilation across collections in a process (tests, resumed runs).
jit_train_step = jax.jit(train_step, static_argnames=("settings", "action_dim"))
