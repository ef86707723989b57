"""The GenRL reward: how well imagined latents match a prompt's target latents (spec 4.6).

Scores compare the decoder's first linear projection of the stoch of the agent's state and
of the target state. Each projection is computed once per time step and shared by every
alignment window (the reference recomputes it for every window; the values are the same).

Sequences are time-major: agent `(T, N, ...)`, target `(T, N, ...)`; T = H + 1 = 17.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from genrl_jax import dists

SCORE_FNS = ("max_cosine", "cosine", "neg_mse", "exp_neg_mse", "neg_kl")
ALIGNMENTS = ("sequence", "initial", "none")
COSINE_EPS = 1e-8


def score(score_fn: str, u: jax.Array, v: jax.Array) -> jax.Array:
  """Similarity of projections `u, v (..., D) -> (...)` (not for `neg_kl`)."""
  if score_fn == "max_cosine":
    m = jnp.maximum(jnp.linalg.norm(u, axis=-1), jnp.linalg.norm(v, axis=-1))
    return jnp.sum((u / m[..., None]) * (v / m[..., None]), axis=-1)
  if score_fn == "cosine":
    nu = jnp.maximum(jnp.linalg.norm(u, axis=-1), COSINE_EPS)
    nv = jnp.maximum(jnp.linalg.norm(v, axis=-1), COSINE_EPS)
    return jnp.sum(u * v, axis=-1) / (nu * nv)
  if score_fn in ("neg_mse", "exp_neg_mse"):
    neg = -jnp.linalg.norm(u - v, axis=-1) / jnp.sqrt(jnp.float32(u.shape[-1]))
    return jnp.exp(neg) if score_fn == "exp_neg_mse" else neg
  raise ValueError(f"score_fn={score_fn!r}: expected one of {SCORE_FNS}")


def kl_score(agent_logit: jax.Array, target_logit: jax.Array) -> jax.Array:
  """`neg_kl`: `-KL(agent || target) / (S ln K)` over logits `(..., S, K)`."""
  s, k = agent_logit.shape[-2:]
  return -dists.categorical_kl(agent_logit, target_logit) / (jnp.log(jnp.float32(k)) * s)


def step_scores(score_fn: str, agent: dict[str, jax.Array], target: dict[str, jax.Array],
                project: Callable[[jax.Array], jax.Array]
                ) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Returns `pair(agent_index, target_index) -> scores` on precomputed per-step features.

  Indices are arrays broadcast against `(N,)`; the features are the projections of the
  flattened stoch (or the logits for `neg_kl`), computed once for all T steps.
  """
  if score_fn == "neg_kl":
    a, t = agent["logit"], target["logit"]
    fn = kl_score
  else:
    flat = lambda s: s.reshape(s.shape[:-2] + (-1,))
    a, t = project(flat(agent["stoch"])), project(flat(target["stoch"]))
    fn = lambda x, y: score(score_fn, x, y)
  cols = jnp.arange(a.shape[1])

  def pair(i, j):
    return fn(a[i, cols], t[j, cols])

  return pair


def genrl_reward(agent: dict[str, jax.Array], target: dict[str, jax.Array],
                 project: Callable[[jax.Array], jax.Array], score_fn: str = "max_cosine",
                 alignment: str = "sequence", n_frames: int = 8
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Reward of every imagined state `(T, N, 1)` against the prompt target.

  alignment `sequence` (default, "best matching trajectory"): for each column the offset
  `o` in `range(T - n_frames)` (the reference excludes the last fitting window) that
  maximises the mean score of `agent[o:o+n]` against `target[:n]`; step i is then compared
  with target step `max(0, i - o)`. `initial`: the offset `o` in `range(T)` (every step,
  as in the reference) maximising the score of `agent[o]` against `target[0]`. `none`:
  step i against target step i.
  Returns `(reward, info)` with `info = {'align_score' (W, N), 'best_index' (N,)}` when
  aligned (W = T - n_frames for `sequence`, T for `initial`).
  """
  if alignment not in ALIGNMENTS:
    raise ValueError(f"alignment={alignment!r}: expected one of {ALIGNMENTS}")
  pair = step_scores(score_fn, agent, target, project)
  length = agent["stoch"].shape[0]
  steps = jnp.arange(length)
  if alignment == "none":
    return pair(steps[:, None], steps[:, None])[..., None], {}
  if alignment == "sequence":
    offsets = jnp.arange(length - n_frames)
    window = jnp.arange(n_frames)
    # (W, n, N): agent step o + i against target step i.
    align_score = jnp.mean(pair((offsets[:, None] + window)[..., None], window[None, :, None]),
                           axis=1)
  else:
    # The reference scores every agent step against target[0] (no window to fit).
    align_score = pair(steps[:, None], jnp.zeros((1, 1), jnp.int32))
  best = jnp.argmax(jax.lax.stop_gradient(align_score), axis=0)
  target_index = jnp.maximum(steps[:, None] - best[None], 0)  # (T, N)
  reward = pair(steps[:, None], target_index)[..., None]
  return reward, {"align_score": align_score, "best_index": best}
