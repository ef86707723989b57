r"""Stickman (planar humanoid, 10 actuators): the GenRL MFWM for the Stickman tasks.

Command (from the repository root):
  python experiments/main.py --config=configs/stickman.py --workdir=workdirs/stickman
Variants: `configs/stickman.py:small`, `configs/stickman.py:tiny`.

Produces: in the workdir, the collected episodes, Orbax checkpoints of the MFWM under
`mfwm/` (with `open_loop.gif`), one behaviour per task of `config.tasks` (default: the 13
paper tasks of Stickman) under `behavior/<task>/` (with `prompt_target.gif`, the prompt
decoded by the MFWM, and `eval_episode.gif`), `results.md`/`results.csv`, `metrics.jsonl`,
`plots/` and `tensorboard/`. With `:tiny` on a 2-core CPU: 10 min 31 s (`time`, set-up
done, 2026-12-05; 14 min 53 s on a slower day of this VM, 12 min 58 s on 2026-12-06
and 12 min 52 s and 14 min 23 s on 2026-12-07, with the same figures): 9 random episodes in each of
stickman_legs_up and stickman_lying_down (the last of each held out), embedded by a
locally built random-weight CLIP (it says so), 1500 MFWM updates at lr 1e-3, each task
prompted with the 8 frames of its own episodes with the highest task reward (sent to the
connector without the aligner), 500 behaviour updates per task at lr 3e-4, 10 evaluation
and 10 random-policy episodes per task. Measured (README "Does it learn?", 2026-12-05):
stickman_legs_up 503.6 +- 350.5 against the random policy's 188.7 +- 48.3 (beats it by
2 std, normalised 0.474; behaviour seeds 2 and 3: 646.5 +- 328.7 and 518.5 +- 320.2, both
beat it); stickman_lying_down 498.7 +- 104.8 against 298.1 +- 188.3 (does
not, normalised 0.203); open-loop MSE on held-out episodes 1.04 x the mean frame's
(holding the last true frame instead: 1.54 x);
prompt targets 0.85 x and 0.57 x their clips' mean-frame MSE.
The imagination gap (eval stage, 2026-12-07; GenRL's reward of the episodes as the model
filters them / of the model's rollouts of the same actions / of the actor's imagined
rollouts; random dataset episodes): legs_up 0.19 / 0.48 / 0.54 (random 0.19), lying_down
0.30 / 0.42 / 0.44 (0.12): the behaviours exploit the model's errors. Cross-task controls:
the lying_down behaviour played in legs_up 299.7 +- 86.3, legs_up's in lying_down 377.8 +-
270.7 (own tasks: 503.6, 498.7). Four other tasks with these settings (`--config.tasks=` and
`--config.data.collect_tasks=` of stickman_headstand, sit_knees, lunge_pose, boxing,
`--config.mfwm.heldout_episodes=4`): lunge_pose 212.9 +- 117.0 beats the random policy's
117.0 +- 43.5 by 2 std; headstand 135.9 +- 100.1 (random 83.5 +- 44.0), sit_knees 47.4 +-
108.8 (72.3 +- 33.2) and boxing 27.2 +- 12.5 (82.6 +- 9.2) do not (README, "Does it learn?").
Before (issue 17: 4 episodes per task, 300 MFWM updates at 1e-4, 200 behaviour updates
at 3e-5, prompts through the aligner): stickman_stand 79 +- 37, lying_down 581 +- 88,
both at random level, and a world model drawing the floor only.
`:cpu` (`python experiments/cpu_pipeline.py --domains=stickman,walker`, 2026-12-06,
actor lr 3e-5, 600 behaviour updates): stickman_legs_up 484.4 +- 467.1 (normalised 0.45)
and stickman_lying_down 692.3 +- 111.1 (0.53) from offline starts, both beating the
random policy by 2 std (zero actions give 35.2 +- 82.3 and 619.3 +- 272.6); data-free
394.7 +- 459.9 and 764.8 +- 204.2; open loop 0.99 x the mean frame's. With the actor at
3e-4 (the `cpu` default before): 562.5 +- 309.1 and 351.1 +- 173.0. Rerun on 2026-12-07
(`cpu_pipeline.py --domains=stickman --no_data_free`, 21 min 3 s): a different MFWM (open
loop 1.00; not the code nor the data, most likely another host: README
"Reproducibility"), legs_up 296.3 +- 438.4 (beats random, normalised 0.221) and
lying_down 685.3 +- 89.4 (0.522); imagination gap 0.24 / 0.32 / 0.33 and 0.51 / 0.54 /
0.54 (random episodes 0.11, 0.08); data-free in that MFWM 505.8 +- 385.5 (0.477) and
856.2 +- 20.3 (0.814). That MFWM taken on to 6000 updates: open loop 0.988,
reconstruction 0.48 (README "Does it learn?").
"""

from configs import base


def get_config(arg=None):
  return base.domain_config("stickman_walk", arg,
                            tiny_tasks=("stickman_legs_up", "stickman_lying_down"))
