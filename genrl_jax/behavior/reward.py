"""The GenRL reward: how well imagined latents match a prompt's target latents (method.md §4.6).

Scores compare the decoder's first linear projection of the stoch of the agent's state and
of the target state. Each projection is computed once per time step and shared by every
alignment window (the reference recomputes it for every window; the values are the same);
the target's can be precomputed once per task (`target['proj']`, see `target_projection`).

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


def target_projection(target: dict[str, jax.Array], project: Callable[[jax.Array], jax.Array]
                      ) -> jax.Array:
  """The projection of the target's flattened stoch `(T, N, D)`, constant for a task."""
  stoch = target["stoch"]
  return project(stoch.reshape(stoch.shape[:-2] + (-1,)))


def step_features(score_fn: str, agent: dict[str, jax.Array], target: dict[str, jax.Array],
                  project: Callable[[jax.Array], jax.Array]
                  ) -> tuple[jax.Array, jax.Array, Callable[[jax.Array, jax.Array], jax.Array]]:
  """Per-step features of agent and target `(T, N, ...)`, computed once for all T steps
  (the projections of the flattened stoch, or the logits for `neg_kl`), and the score
  function on them. A precomputed `target['proj']` is used as it is."""
  if score_fn == "neg_kl":
    return agent["logit"], target["logit"], kl_score
  flat = lambda s: s.reshape(s.shape[:-2] + (-1,))
  fn = lambda x, y: score(score_fn, x, y)
  t = target["proj"] if "proj" in target else target_projection(target, project)
  return project(flat(agent["stoch"])), t, fn


def window_scores(score_fn: str, a: jax.Array, t: jax.Array, n_frames: int,
                  fn: Callable[[jax.Array, jax.Array], jax.Array]) -> jax.Array:
  """Mean score of each window `a[o:o+n]` against `t[:n]`, `(T - n, N)`.

  The cosine scores come from the `(T, n)` matrix of dot products and the per-step norms
  (no window of features is ever built); the others compare the windows directly.
  """
  length = a.shape[0]
  offsets = jnp.arange(length - n_frames)[:, None]
  steps = jnp.arange(n_frames)[None, :]
  if score_fn in ("max_cosine", "cosine"):
    dots = jnp.einsum("tnd,snd->tsn", a, t[:n_frames])
    na = jnp.linalg.norm(a, axis=-1)[:, None]
    nt = jnp.linalg.norm(t[:n_frames], axis=-1)[None]
    if score_fn == "max_cosine":
      pairs = dots / jnp.square(jnp.maximum(na, nt))
    else:
      pairs = dots / (jnp.maximum(na, COSINE_EPS) * jnp.maximum(nt, COSINE_EPS))
    return jnp.mean(pairs[offsets + steps, steps], axis=1)
  windows = jnp.stack([a[o:o + n_frames] for o in range(length - n_frames)])
  return jnp.mean(fn(windows, t[None, :n_frames]), axis=1)


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

  The alignment only picks an index, so its scores are computed without gradient; the
  reward itself compares the agent's features with a gathered copy of the (constant)
  target, so the backward pass never scatters into the agent's features.
  """
  if alignment not in ALIGNMENTS:
    raise ValueError(f"alignment={alignment!r}: expected one of {ALIGNMENTS}")
  if score_fn not in SCORE_FNS:
    raise ValueError(f"score_fn={score_fn!r}: expected one of {SCORE_FNS}")
  a, t, fn = step_features(score_fn, agent, target, project)
  length = a.shape[0]
  if alignment == "none":
    return fn(a, t)[..., None], {}
  a_sg, t = jax.lax.stop_gradient(a), jax.lax.stop_gradient(t)
  if alignment == "sequence":
    align_score = window_scores(score_fn, a_sg, t, n_frames, fn)
  else:
    align_score = fn(a_sg, t[:1])
  best = jnp.argmax(align_score, axis=0)
  target_index = jnp.maximum(jnp.arange(length)[:, None] - best[None], 0)  # (T, N)
  index = target_index.reshape(target_index.shape + (1,) * (t.ndim - 2))
  aligned = jnp.take_along_axis(t, index, axis=0)
  return fn(a, aligned)[..., None], {"align_score": align_score, "best_index": best}
