"""Behaviour learning in imagination (method.md §4): the learner's modules, state and update.

One update: start states (a dataset batch's posterior, or data-free) -> imagined rollout
of the actor in the frozen world model (`lax.scan`) -> GenRL reward against the prompt's
target latents -> lambda returns of the slow critic -> actor loss (dynamics
backpropagation) and critic loss -> separate clipped Adam steps -> hard copy of the critic
into the slow critic every `slow_target_every` updates.

The MFWM's parameters are an input of the step, never part of the behaviour state: one
pre-trained MFWM serves many tasks, each with its own small behaviour state/checkpoint.
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
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from genrl_jax import connector as connector_lib
from genrl_jax import mfwm as mfwm_lib
from genrl_jax import rssm
from genrl_jax import world_model as wm_lib
from genrl_jax.behavior import actor_critic_update as ac_update
from genrl_jax.behavior import reward as reward_lib
from genrl_jax.behavior import starts as starts_lib
from genrl_jax.behavior.actor_critic import Actor, Critic, actor_critic_losses
from genrl_jax.train import mesh as mesh_lib
from genrl_jax.train import optimizer as optimizer_lib

Params = Any
Metrics = dict[str, jax.Array]
START_MODES = ("offline", "data_free")
TARGET_KEYS = ("stoch", "logit")


@flax.struct.dataclass
class BehaviorState:
  """One task's actor-critic: `params = {'actor', 'critic'}`, the slow target critic, the
  return-normalisation EMA (2,) and the prompt's target latents (time-major, computed once
  per task from the frozen MFWM)."""
  step: jax.Array
  params: Params
  target_critic: Params
  opt_state: optax.OptState
  return_ema: jax.Array
  prompt_target: dict[str, jax.Array]
  nonfinite_step: jax.Array

  @classmethod
  def create(cls, params: Params, optimizer: optax.GradientTransformation,
             prompt_target: dict[str, jax.Array]) -> "BehaviorState":
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               target_critic=jax.tree.map(jnp.array, params["critic"]),
               opt_state=optimizer.init(params), return_ema=jnp.zeros((2,), jnp.float32),
               prompt_target=prompt_target, nonfinite_step=jnp.full((), -1, jnp.int32))


@dataclasses.dataclass(frozen=True)
class Behavior:
  actor: Actor
  critic: Critic

  @property
  def action_dim(self) -> int:
    return self.actor.action_dim


def make_behavior(config: ml_collections.ConfigDict, action_dim: int) -> Behavior:
  """Actor and critic from `config.behavior.{actor,critic}` and `config.compute_dtype`."""
  b, dtype = config.behavior, wm_lib.compute_dtype(config.compute_dtype)
  return Behavior(Actor(action_dim, b.actor.units, b.actor.layers, dtype=dtype),
                  Critic(b.critic.units, b.critic.layers, dtype=dtype))


def feature_dim(model: wm_lib.WorldModel) -> int:
  return model.stoch * model.discrete + model.deter


def init_params(behavior: Behavior, feat_dim: int, key: jax.Array) -> Params:
  """`{'actor', 'critic'}` for features of size `feat_dim` (S*K + deter)."""
  k_actor, k_critic = jax.random.split(key)
  feat = jnp.zeros((1, feat_dim), jnp.float32)
  return {"actor": behavior.actor.init(k_actor, feat)["params"],
          "critic": behavior.critic.init(k_critic, feat)["params"]}


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Separate actor and critic optimizers (each clipped to its own norm), as the reference's
  two `Optimizer`s; `config` is `config.behavior`."""
  return optimizer_lib.per_group({"actor": optimizer_lib.make_optimizer(config.actor_optimizer),
                                  "critic": optimizer_lib.make_optimizer(config.critic_optimizer)})


def check_prompt_embedding(embedding: Any, embed_dim: int) -> jax.Array:
  """A prompt embedding `(E,)` or `(1, E)` -> finite `(E,)`, or a clear error."""
  e = jnp.asarray(embedding, jnp.float32)
  if e.ndim == 2 and e.shape[0] == 1:
    e = e[0]
  if e.ndim != 1 or e.shape[0] != embed_dim:
    raise ValueError(f"prompt embedding has shape {tuple(e.shape)}; the MFWM's connector "
                     f"expects ({embed_dim},) (connector.embed_dim)")
  if not bool(jnp.all(jnp.isfinite(e))):
    raise ValueError("prompt embedding contains NaN or infinite values")
  return e


def prompt_target(mfwm: mfwm_lib.MFWM, params: Params, embedding: jax.Array, num: int,
                  length: int, key: jax.Array, config: ml_collections.ConfigDict,
                  denoise: bool = True) -> dict[str, jax.Array]:
  """The prompt's target latents, time-major `{stoch, logit}` `(length, num, S, K)`, and
  (unless the score is `neg_kl`) their projection `proj (length, num, D)`, computed here
  once instead of at every update.

  The embedding `(E,)` is repeated over `length (+1)` steps and every column, mapped by the
  aligner (unless `denoise` is False, see `prompts.behavior_prompt.prompt_denoise`) and
  rolled out by the connector from its learned initial state (method.md §4.6): with
  the mode when `config.target_sample` is False (the initial stoch is still drawn per
  column), and the first step dropped when `config.skip_first_target`. `config` is
  `config.behavior.reward`.
  """
  if not mfwm.has_connector:
    raise ValueError("prompt targets need an MFWM with a connector and aligner")
  embedding = check_prompt_embedding(embedding, mfwm.connector.embed_dim)
  steps = length + 1 if config.skip_first_target else length
  embed = jnp.broadcast_to(embedding, (num, steps, embedding.shape[0]))
  states = connector_lib.imagine(mfwm.connector, params, embed, key,
                                 sample=config.target_sample, denoise=denoise,
                                 aligner=mfwm.aligner)
  if config.skip_first_target:
    states = jax.tree.map(lambda x: x[:, 1:], states)
  target = {k: jnp.swapaxes(states[k], 0, 1) for k in TARGET_KEYS}
  if config.score_fn != "neg_kl":
    model, wm_params = mfwm.world_model, params["world_model"]
    project = lambda x: _apply(model, wm_params, x, method=wm_lib.WorldModel.project)
    target["proj"] = reward_lib.target_projection(target, project)
  return target


def create_state(behavior: Behavior, optimizer: optax.GradientTransformation, params: Params,
                 target: dict[str, jax.Array]) -> BehaviorState:
  """A fresh state; the slow critic starts as a copy of the critic (method.md §4.1)."""
  return BehaviorState.create(params, optimizer,
                              {k: v for k, v in target.items() if k in TARGET_KEYS + ("proj",)})


def num_starts(config: ml_collections.ConfigDict) -> int:
  return config.behavior.batch_size * config.behavior.batch_length


def _apply(module, params, *args, **kwargs):
  return module.apply({"params": params}, *args, **kwargs)


def behavior_loss(params: Params, state: BehaviorState, starts: rssm.State,
                  key: jax.Array | None, mfwm_params: Params, *, mfwm: mfwm_lib.MFWM,
                  behavior: Behavior, config: ml_collections.ConfigDict,
                  replay: dict[str, jax.Array] | None = None,
                  reward_fn: ac_update.RewardFn | None = None
                  ) -> tuple[jax.Array, tuple[jax.Array, Metrics, dict[str, jax.Array]]]:
  """Actor loss + critic loss of `params = {'actor', 'critic'}` from starts `(N, ...)`
  (`actor_critic_update.imagination_loss`) with the GenRL reward against the state's
  prompt target, or `reward_fn(seq) -> (reward (H + 1, N), info dict)` when given.

  `config` is `config.behavior`. `replay` (tests) gives the imagination's draws:
  `action_eps (H, N, A)`, `stoch (H, N, S, K)`. Returns `(loss, (new_return_ema, metrics,
  seq))`; `seq` is the imagined sequence (time-major `(H + 1, N, ...)`) with its `reward`,
  `slow_value` and the reward's info (alignment).
  """
  if reward_fn is None:
    reward_fn = genrl_reward_fn(state.prompt_target, starts["deter"].shape[0], mfwm,
                                mfwm_params, config)
  loss, (ema, metrics, seq, info) = ac_update.imagination_loss(
      params, state.target_critic, state.return_ema, starts, key, model=mfwm.world_model,
      wm_params=mfwm_params["world_model"], actor=behavior.actor, critic=behavior.critic,
      reward_fn=reward_fn, config=config, replay=replay,
      losses=actor_critic_losses)  # looked up here, so that a test can swap it
  if "best_index" in info:
    metrics["imag_align_offset"] = jnp.mean(info["best_index"].astype(jnp.float32))
  return loss, (ema, metrics, dict(seq, **info))


def genrl_reward_fn(target: dict[str, jax.Array], num: int, mfwm: mfwm_lib.MFWM,
                    mfwm_params: Params, config: ml_collections.ConfigDict
                    ) -> ac_update.RewardFn:
  """GenRL's reward of an imagined sequence of `num` columns against the prompt's target
  latents (time-major `(H + 1, num, ...)`): `seq -> (reward (H + 1, num), info)`.
  `config` is `config.behavior`."""
  if target["stoch"].shape[:2] != (config.horizon + 1, num):
    raise ValueError(f"prompt target has {target['stoch'].shape[:2]} (steps, columns); the "
                     f"update needs ({config.horizon + 1}, {num}): horizon + 1 steps and one "
                     "column per start state")
  model, wm_params = mfwm.world_model, mfwm_params["world_model"]
  project = lambda x: _apply(model, wm_params, x, method=wm_lib.WorldModel.project)
  rc = config.reward
  n_frames = mfwm.connector.n_frames if mfwm.has_connector else rc.n_frames

  def reward_fn(seq):
    reward, info = reward_lib.genrl_reward(seq, target, project, rc.score_fn, rc.alignment,
                                           n_frames)
    return reward[..., 0], info

  return reward_fn


def behavior_update(state: BehaviorState, starts: rssm.State, key: jax.Array | None,
                    mfwm_params: Params, *, mfwm: mfwm_lib.MFWM, behavior: Behavior,
                    optimizer: optax.GradientTransformation,
                    config: ml_collections.ConfigDict,
                    replay: dict[str, jax.Array] | None = None,
                    reward_fn: ac_update.RewardFn | None = None
                    ) -> tuple[BehaviorState, Metrics, dict[str, jax.Array]]:
  """One actor-critic update from start states `(N, ...)` (method.md §4.3-4.4,
  `actor_critic_update.apply_update`) of `behavior_loss` (GenRL reward unless `reward_fn`).
  Returns the new state (`step + 1`), metrics, and the imagined sequence."""
  loss_fn = functools.partial(behavior_loss, state=state, starts=starts, key=key,
                              mfwm_params=mfwm_params, mfwm=mfwm, behavior=behavior,
                              config=config, replay=replay, reward_fn=reward_fn)
  ac = ac_update.ActorCritic(state.params, state.opt_state, state.target_critic,
                             state.return_ema, state.nonfinite_step)
  ac, metrics, seq = ac_update.apply_update(ac, state.step, loss_fn, optimizer, config)
  new = state.replace(step=state.step + 1, **ac._asdict())
  # The reference's imagination reward normaliser is the identity.
  metrics = dict(metrics, imag_reward_normed_mean=metrics["imag_reward_mean"],
                 imag_reward_normed_std=metrics["imag_reward_std"])
  return new, metrics, seq


def make_starts(state: BehaviorState, batch: dict[str, jax.Array], key: jax.Array,
                mfwm_params: Params, *, mfwm: mfwm_lib.MFWM, behavior: Behavior,
                config: ml_collections.ConfigDict) -> rssm.State:
  """Start states of one update; `config` is the whole config (reads `behavior.*`)."""
  b = config.behavior
  if b.start == "offline":
    return starts_lib.offline_starts(mfwm.world_model, mfwm_params["world_model"], batch, key)
  if b.start == "data_free":
    return starts_lib.data_free_starts(mfwm, mfwm_params, behavior.actor,
                                       state.params["actor"], num_starts(config),
                                       b.batch_length, key, b.data_free)
  raise ValueError(f"behavior.start={b.start!r}: expected one of {START_MODES}")


def behavior_train_step(state: BehaviorState, batch: dict[str, jax.Array], rng: jax.Array,
                        mfwm_params: Params, *, mfwm: mfwm_lib.MFWM, behavior: Behavior,
                        optimizer: optax.GradientTransformation,
                        config: ml_collections.ConfigDict, mesh: Mesh | None = None
                        ) -> tuple[BehaviorState, Metrics]:
  """One behaviour update: `(state, batch, rng, frozen MFWM params) -> (state, metrics)`.

  batch (offline): `observation (B, T, 64, 64, 3)`, `action (B, T, A)`, `is_first (B, T)`
  with `B * T` = the number of starts; data-free: `{}`. With a mesh, the start axis is
  split over the `data` axis (data-free starts too), so each device imagines its share.
  """
  k_start, k_imag = jax.random.split(rng)
  starts = make_starts(state, batch, k_start, mfwm_params, mfwm=mfwm, behavior=behavior,
                       config=config)
  if mesh is not None:
    starts = jax.lax.with_sharding_constraint(starts, mesh_lib.batch_sharded(mesh))
  state, metrics, _ = behavior_update(state, starts, k_imag, mfwm_params, mfwm=mfwm,
                                      behavior=behavior, optimizer=optimizer,
                                      config=config.behavior)
  return state, metrics


def behavior_train_steps(state: BehaviorState, base_key: jax.Array, mfwm_params: Params, *,
                         num_updates: int, **static: Any) -> tuple[BehaviorState, Metrics]:
  """`num_updates` data-free updates in one `lax.scan`, so that the device never waits for
  the host: `(state, key(seed), MFWM params) -> (state, metrics averaged over the updates)`.

  Update `n` uses `fold_in(base_key, n)`, i.e. `step_rng(seed, n)` as `train_loop` gives a
  single step, so any number of updates per call follows the same keys.
  """
  def body(s, _):
    return behavior_train_step(s, {}, jax.random.fold_in(base_key, s.step), mfwm_params,
                               **static)
  state, metrics = jax.lax.scan(body, state, None, length=num_updates)
  return state, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)


def state_shardings(state: BehaviorState, mesh: Mesh) -> Any:
  """Everything replicated except the prompt target, split by column over `data`."""
  rep = mesh_lib.replicated(mesh)
  by_column = NamedSharding(mesh, PartitionSpec(None, "data"))
  return state.replace(**{f.name: jax.tree.map(lambda _: rep, getattr(state, f.name))
                          for f in dataclasses.fields(state) if f.name != "prompt_target"},
                       prompt_target=jax.tree.map(lambda _: by_column, state.prompt_target))


def jit_behavior_step(mesh: Mesh, state: BehaviorState, **static: Any
                      ) -> Callable[..., tuple[BehaviorState, Metrics]]:
  """`behavior_train_step` jitted for the mesh: state donated, batch split over `data`,
  MFWM params replicated. `state` only provides the sharding layout."""
  config = static["config"]
  mesh_lib.check_divisible(num_starts(config), mesh,
                           "the number of starts (behavior.batch_size x batch_length)")
  if config.behavior.start == "offline":  # the offline batch is split along its rows
    mesh_lib.check_divisible(config.behavior.batch_size, mesh, "behavior.batch_size")
  fn = functools.partial(behavior_train_step, mesh=mesh, **static)
  rep, data = mesh_lib.replicated(mesh), mesh_lib.batch_sharded(mesh)
  shardings = state_shardings(state, mesh)
  return jax.jit(fn, in_shardings=(shardings, data, rep, rep),
                 out_shardings=(shardings, rep), donate_argnums=(0,))


def jit_behavior_steps(mesh: Mesh, state: BehaviorState, num_updates: int, **static: Any
                       ) -> Callable[..., tuple[BehaviorState, Metrics]]:
  """`behavior_train_steps` jitted for the mesh (data-free starts only: they need no host
  data): `(state, key(seed), MFWM params) -> (state, mean metrics)`, state donated."""
  config = static["config"]
  if config.behavior.start != "data_free":
    raise ValueError(f"behavior.updates_per_call={num_updates} needs behavior.start="
                     f"'data_free' (offline starts read a host batch every update); got "
                     f"{config.behavior.start!r}")
  mesh_lib.check_divisible(num_starts(config), mesh,
                           "the number of starts (behavior.batch_size x batch_length)")
  fn = functools.partial(behavior_train_steps, num_updates=num_updates, mesh=mesh, **static)
  rep, shardings = mesh_lib.replicated(mesh), state_shardings(state, mesh)
  return jax.jit(fn, in_shardings=(shardings, rep, rep), out_shardings=(shardings, rep),
                 donate_argnums=(0,))
