"""Everything about prompts, in one place.

* `task_prompts`: the reference's text (and video file) prompt of every task.
* `prompt`: a prompt (text, video file, precomputed embedding) becomes one unit-norm
  embedding `(E,)` in the VLM space.
* `dataset_clips`: video prompts cut from the run's own episodes, picked by reward.
* `cache`: prompt embeddings on disk, keyed by VLM and prompt, so a run embeds each once.
* `behavior_prompt`: the prompt a behaviour's config names, where it comes from, and which
  VLM it needs.
"""
