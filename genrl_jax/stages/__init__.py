"""The stages of the main job, each `run(config, workdir)`: the only layer that composes the
others; nothing in the library imports it.

* `workdir`: config checks and the workdir (before anything is written), the run's dataset.
* `data`: the run's episodes (given, or collected), with the VLM's embeddings.
* `mfwm`: the multimodal foundation world model, and its open-loop report.
* `behavior`: one behaviour per task, learned from its prompt in the MFWM.
* `eval`: every behaviour played in its environment; the results table and plots.

Everything a stage writes lives in the workdir; a stage never deletes anything there.
"""
