r"""One process of the multi-host tests (`test_multihost.py`): MFWM updates (world model,
connector, aligner) on fixed global batches, Orbax save and restore, started by
`launch/local.py` or alone.

  python launch/local.py --num_processes=2 --devices_per_process=2 \
      --script=tests/multihost_worker.py -- --out=/tmp/a --steps=3 --ckpt=/tmp/ckpt

Batch `n` is the same global batch `(B, T, ...)` in every run (drawn from `n`); each
process feeds its rows `[p * B / P, (p + 1) * B / P)` to `mesh_lib.shard_batch`, so runs
with different process counts see the same global batches and can be compared. Writes,
per process `p`, `<out>/restored_p<p>.npz` (with `--restore_from`: the parameters of the
latest checkpoint there) and `<out>/step<k>_p<p>.npz` (the parameters after each step `k`
of `--dump_steps`), flattened to `path -> array`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _parse():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--coordinator_address")
  p.add_argument("--num_processes", type=int)
  p.add_argument("--process_id", type=int)
  p.add_argument("--init_timeout", type=int, default=60)
  p.add_argument("--heartbeat_timeout", type=int, default=None,
                 help="seconds (default: distributed.initialize's); a short one only where "
                 "a test wants a dead process found fast: a loaded 2-core CI machine can "
                 "starve heartbeats for 10 s")
  p.add_argument("--out", required=True)
  p.add_argument("--global_batch", type=int, default=8)
  p.add_argument("--dump_steps", default="", help="comma-separated steps to train to and "
                 "dump the parameters at, in increasing order")
  p.add_argument("--ckpt", default="", help="checkpoint directory (saves at every dump)")
  p.add_argument("--restore_from", default="", help="restore its latest checkpoint first")
  p.add_argument("--train_from_restored", action="store_true",
                 help="continue training from the restored state (else from scratch)")
  p.add_argument("--model", default="mfwm", choices=("mfwm", "tiny"),
                 help="tiny: a one-parameter regression (compiles in a second), for tests "
                 "of failures")
  p.add_argument("--step_sleep", type=float, default=0.0,
                 help="seconds to sleep after each update (keeps a run alive to be killed)")
  return p.parse_args()


def global_batch(step: int, size: int, length: int, embed_dim: int,
                 action_dim: int = 6) -> dict:
  """The global batch of update `step` `(size, length, ...)`: synthetic episodes with VLM
  embeddings `(size, length, embed_dim)`, the same in every process and every run."""
  import synthetic  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng([1234, step])
  rows = [synthetic.random_episode(rng, length, action_dim, embed_dim) for _ in range(size)]
  keys = ("observation", "action", "reward", "is_first", "vlm_embedding")
  return {k: np.stack([r[k] for r in rows]) for k in keys}


def _tiny_step(state, batch, rng, *, optimizer):
  """Fits one number to the batch's mean reward: a train step with an all-reduce."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from genrl_jax.train import steps  # pylint: disable=g-import-not-at-top
  del rng
  loss, grads = jax.value_and_grad(
      lambda p: jnp.mean((batch["reward"] - p["w"]) ** 2))(state.params)
  state, _ = steps.apply_gradients(state, grads, optimizer, loss)
  return state, {"loss": loss}


def _dump(path: str, params) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  flat = {}
  for key_path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    flat[jax.tree_util.keystr(key_path)] = np.asarray(leaf.addressable_data(0))
  tmp = path + ".tmp.npz"
  np.savez(tmp, **flat)
  os.replace(tmp, path)


def main():
  args = _parse()
  from genrl_jax.train import distributed  # pylint: disable=g-import-not-at-top
  job = distributed.resolve_job("auto", args.coordinator_address, args.num_processes,
                                args.process_id)
  if job is not None:
    timeouts = {} if args.heartbeat_timeout is None else {
        "heartbeat_timeout": args.heartbeat_timeout}
    distributed.initialize(job, args.init_timeout, **timeouts)
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  import synthetic  # pylint: disable=g-import-not-at-top
  from genrl_jax import mfwm as mfwm_lib  # pylint: disable=g-import-not-at-top
  from genrl_jax.train import (  # pylint: disable=g-import-not-at-top
      checkpoints, loop, steps)
  from genrl_jax.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from genrl_jax.train.state import TrainState  # pylint: disable=g-import-not-at-top
  print(distributed.identity(), flush=True)
  os.makedirs(args.out, exist_ok=True)
  proc, nproc = jax.process_index(), jax.process_count()

  config = synthetic.micro_config()
  with config.unlocked():
    config.world_model.conv_impl = "native"  # compiles faster; not what these tests check
  mesh = mesh_lib.make_mesh()
  # `mfwm_lib.build`'s modules, state and step (the same step program as the MFWM
  # stage with this config), except that the state is created by one jitted program over
  # the mesh: created op by op, it costs process 1 hundreds of small compilations on every
  # start, as only process 0 may write JAX's compilation cache.
  if args.model == "mfwm":
    model = mfwm_lib.make_mfwm(config, 6, with_connector=True)
    optimizer = mfwm_lib.make_optimizer(config)
    init = lambda key: mfwm_lib.init_params(model, key)
    step_fn = steps.jit_train_step(mfwm_lib.train_step, mesh, mfwm=model,
                                   optimizer=optimizer, config=config)
  else:
    optimizer = optax.sgd(0.1)
    init = lambda key: {"w": jnp.zeros(())}
    step_fn = steps.jit_train_step(_tiny_step, mesh, optimizer=optimizer)
  create = jax.jit(lambda key: TrainState.create(init(key), optimizer),
                   out_shardings=mesh_lib.replicated(mesh))
  state = create(jax.random.fold_in(jax.random.key(config.seed), 0x5EED))
  if args.restore_from:
    restorer = checkpoints.Checkpointer(args.restore_from, save_every=10**9, keep=10,
                                        config={})
    restored = restorer.restore(state)
    restorer.close()
    distributed.check_replicas_agree(restored.params, "the restored parameters")
    _dump(os.path.join(args.out, f"restored_p{proc}.npz"), restored.params)
    print(f"restored step {int(restored.step)}", flush=True)
    if args.train_from_restored:
      state = restored

  share = args.global_batch // nproc

  def make_batch(step):
    batch = global_batch(step, args.global_batch, config.batch_length,
                         config.connector.embed_dim)
    if args.step_sleep:  # A slow run, to be interrupted: say how far it got.
      time.sleep(args.step_sleep)
      print(f"batch {step}", flush=True)
    return {k: v[proc * share:(proc + 1) * share] for k, v in batch.items()}

  ckpt = (checkpoints.Checkpointer(args.ckpt, save_every=10**9, keep=10, config={"test": 1})
          if args.ckpt else None)
  for stop in [int(s) for s in args.dump_steps.split(",") if s]:
    state = loop.train_loop(stage="wm", state=state, step_fn=step_fn, mesh=mesh, seed=0,
                            num_steps=stop, log_every=10**9, checkpointer=ckpt, writer=None,
                            make_batch=make_batch, progress=False)
    _dump(os.path.join(args.out, f"step{stop}_p{proc}.npz"), state.params)
    print(f"trained to step {stop}", flush=True)
  if ckpt is not None:
    ckpt.close()


if __name__ == "__main__":
  from genrl_jax.train import distributed as distributed_lib  # pylint: disable=g-import-not-at-top
  distributed_lib.run_or_exit(main)
