"""Collecting episodes into a dataset (the data stage's collection, `--mode=collect`).

* `random_policy`: uniform random actions (`data.collector='random'`), deterministic per
  episode id and resumable, on one or several environments at once;
* `online`: the agents that learn while they collect (`collect_with_agent`,
  `data.collector='dreamer'|'plan2explore'`);
* `task_agent`: the online DreamerV3-style learner (world model + actor-critic on the
  reward head's rewards), its state and train step;
* `plan2explore`: the disagreement ensemble and intrinsic reward of the exploration agent.

Every collector plays episodes through the one episode loop, `envs.driver`.
"""
