"""Collection agents that learn while they collect episodes into a dataset (spec 8).

* `task_agent`: the online DreamerV3-style learner (world model + actor-critic on the
  reward head's rewards, `data.collector='dreamer'`), its state and train step;
* `plan2explore`: the disagreement ensemble and intrinsic reward of the exploration agent
  (`data.collector='plan2explore'`);
* `online`: the collection loop (`collect_with_agent`), reached through
  `python experiments/main.py --config=configs/<domain>.py --mode=collect
  --config.data.collector=dreamer|plan2explore`.
"""
