"""The generic train loop: several updates per call follow the same keys and boundaries."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genrl_jax.train import loop
from genrl_jax.train import mesh as mesh_lib
from genrl_jax.train.state import TrainState, step_rng


def _update(state, key):
  """A toy update whose result depends on the key and the order of the updates."""
  params = {"w": state.params["w"] * 0.5 + jax.random.uniform(key, (3,))}
  return state.replace(step=state.step + 1, params=params), {"w0": params["w"][0]}


def _step_fn(calls):
  jitted = jax.jit(lambda state, batch, rng: _update(state, rng))

  def step_fn(state, batch, rng):
    calls.append(("step", int(state.step)))
    return jitted(state, batch, rng)
  return step_fn


def _chunk_fn(calls, k):
  def chunk(state, base_key):
    def body(s, _):
      return _update(s, jax.random.fold_in(base_key, s.step))
    state, metrics = jax.lax.scan(body, state, None, length=k)
    return state, jax.tree.map(lambda m: m.mean(0), metrics)
  jitted = jax.jit(chunk)

  def chunk_fn(state, base_key):
    calls.append(("chunk", int(state.step)))
    return jitted(state, base_key)
  return chunk_fn


def _run(num_steps, start=0, k=1, log_every=4):
  state = TrainState.create({"w": jnp.zeros(3)}, optax.sgd(1.0)).replace(
      step=jnp.asarray(start, jnp.int32))
  calls = []
  state = loop.train_loop(
      stage="toy", state=state, step_fn=_step_fn(calls), mesh=mesh_lib.make_mesh(),
      seed=3, num_steps=num_steps, log_every=log_every, checkpointer=None, writer=None,
      batches=lambda a, b: ({} for _ in range(a, b)), progress=False,
      chunk_fn=_chunk_fn(calls, k) if k > 1 else None, updates_per_call=k)
  return np.asarray(state.params["w"]), int(state.step), calls


def test_chunks_of_updates_equal_one_update_per_call_and_the_rest_run_singly():
  w_single, step_single, calls_single = _run(10)
  w_chunk, step_chunk, calls_chunk = _run(10, k=4)
  assert step_single == step_chunk == 10
  assert calls_single == [("step", i) for i in range(10)]
  # Whole chunks at 0 and 4; 8 and 9 would overrun the end, so they run one by one.
  assert calls_chunk == [("chunk", 0), ("chunk", 4), ("step", 8), ("step", 9)]
  np.testing.assert_allclose(w_chunk, w_single, rtol=1e-6)
  # A resumed run starting off a chunk boundary runs singly up to the next one.
  w_resumed, _, calls_resumed = _run(10, start=2, k=4)
  assert calls_resumed == [("step", 2), ("step", 3), ("chunk", 4), ("step", 8), ("step", 9)]
  assert not np.allclose(w_resumed, w_single)  # it started from w = 0 at step 2


def test_updates_per_call_must_divide_the_log_interval():
  with pytest.raises(ValueError, match=r"updates_per_call=3 must be >= 1 and divide the log "
                                       r"interval \(4\)"):
    _run(10, k=3)
