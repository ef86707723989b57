"""Shared base of every domain config, and the size variants.

A domain config calls `domain_config(task, arg)`; `arg` is the part after ':' in
`--config=configs/<domain>.py:<arg>`, one variant, each a table of overrides (`VARIANTS`):

* `paper` (default): the reference's sizes (deter/hidden 1024, 32x32 latents, CNN
  multiplier 48, MLP 4x1024, batch 48x48, 500k world-model updates).
* `small`: deter/hidden 512, CNN multiplier 32, MLP 4x512, batch 16x32.
* `tiny`: a CPU size that collects a few random episodes per task and trains in minutes
  (1500 MFWM and 500 behaviour updates per task; `TINY` says why each value).
* `cpu`: `tiny` sizes, a longer budget (20 episodes per task, 3000 MFWM and 600
  behaviour updates): about half an hour per domain on 2 cores (`experiments/cpu_pipeline.py`).
"""

import ml_collections

def same_as(c: ml_collections.ConfigDict, key: str) -> ml_collections.FieldReference:
  """A value that follows `c[key]` until it is set itself (e.g. `--config.agent.batch_size=8`
  sets the agent's alone). `c.get_ref(key)` alone would not do: setting the follower would
  write through to `c[key]`; the derived reference `* 1` is replaced instead."""
  return c.get_ref(key) * 1


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 1
  c.task = ""  # domain_task, e.g. "stickman_walk"; set by the domain config.
  # The tasks the behavior and eval stages learn and evaluate, each from its own prompt;
  # empty: config.task alone. Domain configs set their paper tasks (`tiny`: two of them).
  c.tasks = ()
  # "auto" = bfloat16 compute on accelerators, float32 on CPU; params stay float32.
  c.compute_dtype = "auto"

  c.batch_size = 48
  c.batch_length = 48

  c.data = ml_collections.ConfigDict()
  # A dataset folder (genrl_jax/data/dataset.py; `genrl_jax import-npz` converts the
  # reference's .npz episodes); empty: collect into <workdir>/dataset.
  c.data.path = ""
  c.data.collect_episodes = 50  # Episodes to collect when data.path is empty (--mode=collect).
  c.data.collect_task = ""  # Environment to collect from; empty: config.task.
  # Several environments to collect from (collect_episodes in each; shards name their task,
  # so that prompts can be cut from a task's own episodes); empty: collect_task alone.
  c.data.collect_tasks = ()
  c.data.collector = "random"  # uniform random actions
  c.data.episodes_per_shard = 16  # episodes per ArrayRecord shard (the unit of atomic writes)
  # The VLM identifier whose embeddings train the connector; empty: the config's VLM, else
  # the dataset's only embeddings.
  c.data.embedding = ""
  # Input pipeline (per host): reader threads, batches kept ready, and worker processes
  # (0: threads of this process only).
  c.data.num_threads = 8
  c.data.prefetch = 8
  c.data.num_workers = 0
  # Decoded episodes kept in memory per reader process (MiB; least recently used dropped):
  # a window of a cached episode is a copy instead of a decode of its records.
  c.data.cache_mib = 2048
  c.data.skip_damaged = False  # True: train on the intact shards, leaving damaged ones out
  c.data.num_envs = 1  # environments stepped in parallel worker processes when collecting
  c.data.action_repeat = 2
  c.data.fast_render = False  # True: no shadows / multisampling (~7x faster, differs a bit).

  # Online collection agents (data.collector 'dreamer' | 'plan2explore'; genrl_jax/collect,
  # method.md §8). Their world model has the sizes of `world_model` and their actor/critic those
  # of `behavior.actor/critic`; everything else they use is here.
  a = c.agent = ml_collections.ConfigDict()
  a.seed_steps = 2000  # agent steps of uniform random actions first (num_seed_frames 4000)
  a.train_every = 5  # agent steps (summed over all environments) between training rounds
  a.train_steps = 1  # updates per training round
  a.batch_size = same_as(c, "batch_size")  # replay batch rows (the reference: 50)
  a.batch_length = same_as(c, "batch_length")  # replay sequence length (the reference: 50)
  # Episodes per dataset shard. A finished episode enters the replay when its shard is
  # written; every new shard also costs the replay a re-open of its readers.
  a.episodes_per_shard = 4
  a.horizon = 15
  a.discount = 0.99
  a.lambda_ = 0.95
  a.slow_target_every = 100
  a.slow_target_fraction = 1.0
  # The collectors' posterior sees [deter, embed] (the reference's DreamerV3 config);
  # GenRL's world model uses the frame alone (world_model.single_obs_posterior).
  a.single_obs_posterior = False
  a.save_every = 10_000  # agent steps between checkpoints of <workdir>/collector/<name>
  a.keep = 1
  a.log_every = 500  # updates between metric lines
  a.model_optimizer = ml_collections.ConfigDict(dict(eps=1e-8, clip=1000.0, wd=1e-6))
  a.actor_optimizer = ml_collections.ConfigDict(dict(eps=1e-5, clip=100.0, wd=1e-6))
  a.critic_optimizer = ml_collections.ConfigDict(dict(eps=1e-5, clip=100.0, wd=1e-6))
  # Expert data: actor-critic on the reward head's rewards; the reward loss also trains
  # the encoder and RSSM (grad_heads [decoder, reward]).
  a.dreamer = ml_collections.ConfigDict(dict(
      model_lr=1e-4, actor_lr=3e-5, critic_lr=3e-5, actor_entropy=3e-4, reward_grad=True))
  # Exploration data: actor-critic on the ensemble disagreement (learning rates and
  # entropy of the reference's DreamerV2 Plan2Explore config).
  a.plan2explore = ml_collections.ConfigDict(dict(
      model_lr=3e-4, actor_lr=8e-5, critic_lr=8e-5, actor_entropy=0.0, reward_grad=False,
      ensemble_size=5, ensemble_units=1536, ensemble_loss_scale=1.0,
      reward_norm_momentum=0.95, reward_norm_scale=1.0))

  wm = c.world_model = ml_collections.ConfigDict()
  wm.deter = 1024
  wm.hidden = 1024
  wm.stoch = 32
  wm.discrete = 32
  wm.cnn_depth = 48
  wm.encoder_kernels = (4, 4, 4, 4)
  wm.decoder_kernels = (5, 5, 6, 6)
  wm.mlp_units = 1024
  wm.mlp_layers = 4
  wm.single_obs_posterior = True
  # How strided convs run: "auto" = XLA's own on accelerators, one im2col GEMM each on
  # CPU (3x faster there); "native" | "im2col" | "taps" | "stride1" force one
  # (genrl_jax/convs.py).
  wm.conv_impl = "auto"
  wm.kl = ml_collections.ConfigDict(dict(free=1.0, forward=False, balance=0.85, free_avg=False))
  wm.loss_scales = ml_collections.ConfigDict(dict(kl=0.6, observation=1.0, reward=1.0))
  wm.optimizer = ml_collections.ConfigDict(dict(lr=1e-4, eps=1e-8, clip=1000.0, wd=1e-6))

  cn = c.connector = ml_collections.ConfigDict()
  cn.embed_dim = 512  # VLM embedding size E
  cn.n_frames = 8  # frames per VLM clip; the connector's chunk length
  cn.rescale_embeds = True  # multiply embeddings by sqrt(E)
  cn.temporal_embeds = False  # the reference zeroes the n_frames temporal one-hot
  cn.lafite_noise = 0.5  # aligner training corruption strength
  cn.loss_scale = 1.0
  cn.kl = ml_collections.ConfigDict(dict(free=0.0, forward=True, balance=0.8, free_avg=False))
  cn.optimizer = ml_collections.ConfigDict(dict(lr=1e-4, eps=1e-8, clip=1000.0, wd=1e-6))
  # The reference's shared Adam decays connector weights twice per iteration; True
  # reproduces that, False (default) decays once like every other parameter.
  cn.double_weight_decay = False

  c.mfwm = ml_collections.ConfigDict()
  # Train the connector and aligner too (needs `vlm_embedding` in the dataset; without it
  # the stage trains the world model alone and says so).
  c.mfwm.train_connector = True
  # A checkpoint directory whose params/world_model initialise the world model (e.g. a
  # world-model-only run); empty: random initialisation.
  c.mfwm.init_world_model_from = ""
  # Episodes kept out of training (those with the largest ids: with several collection
  # tasks, the last round, one per task) to score the open-loop predictions on; 0 (the
  # reference): train on all and score on training episodes.
  c.mfwm.heldout_episodes = 0
  c.mfwm.num_steps = 500_000
  c.mfwm.log_every = 1000
  c.mfwm.save_every = 10_000
  c.mfwm.keep = 3

  c.vlm = ml_collections.ConfigDict()
  # The video-language model that embeds datasets and prompts: 'internvideo2' (GenRL's
  # VLM, the reference's choice: `paper` and `small` use it), '' (none: datasets must
  # carry embeddings and prompts must be precomputed embeddings), 'random_projection'
  # (a stand-in without semantics that needs no download; smoke runs only) or 'clip'
  # (CLIP, a clip = the mean of its 8 frames' embeddings; its embedding size, 512 for
  # ViT-B/32, must equal connector.embed_dim; `tiny` and `cpu` use a random-weight one).
  c.vlm.name = "internvideo2"
  c.vlm.seed = 0  # the stand-ins' weights: random_projection, clip with an empty model
  # internvideo2: the stage-2 checkpoint file (InternVideo2-stage2_1b-224p-f4.pt, read
  # without torch); empty: embeddings of the official file are expected where they are
  # needed (an imported reference dataset, cached or precomputed prompts), and anything
  # that must be embedded stops before the run writes, naming this option.
  # clip: a Hugging Face hub id (read from the hub cache; downloaded only when online) or a
  # local directory saved with save_pretrained (config.json, model.safetensors, tokenizer);
  # empty: no real model, a small CLIP with random weights is built locally
  # (genrl_jax/vlm/random_clip.py).
  c.vlm.model = ""
  c.vlm.batch_size = 64  # clip, internvideo2: clips or texts per device call (bounds memory)
  # Options of InternVideo2 alone (its embedding size is 512: connector.embed_dim).
  iv = c.vlm.internvideo2 = ml_collections.ConfigDict()
  # A directory holding bert-large-uncased's vocab.txt; empty: the checkpoint's folder.
  iv.tokenizer = ""
  iv.dtype = "float32"  # matmuls: 'float32' (GenRL's numbers) or 'bfloat16'
  iv.size = "1b"  # head counts (the other sizes are read off the weights)
  iv.size_overrides = ""  # 'field=int,...' of InternVideo2Config

  b = c.behavior = ml_collections.ConfigDict()
  # The task prompt: exactly one of a text, a video file (mp4/gif) or a precomputed
  # embedding (.npy, (E,)); all empty: the reference's text prompt of config.task.
  b.prompt = ml_collections.ConfigDict(dict(text="", video="", embedding=""))
  # Where the default prompt (all of the above empty) comes from: "text" (the task's text
  # prompt), "dataset_video" (the clip of the task's own collected episodes with the
  # highest task reward, genrl_jax/prompts/dataset_clips.py) or "auto": dataset_video
  # when the VLM is a stand-in without semantics, else text.
  b.prompt.source = "auto"
  # Video prompts' embeddings go through the aligner, as text ones (the reference); False:
  # straight to the connector (prompts.behavior_prompt.prompt_denoise says when that matters).
  b.prompt.denoise_video = True
  b.name = ""  # checkpoint directory <workdir>/behavior/<name>; empty: config.task
  b.seed = same_as(c, "seed")  # the behaviour's RNG seed (sweeps give each run its own)
  # "offline": every posterior state of a dataset batch is a start (batch_size x
  # batch_length starts); "data_free": starts built without data (method.md §5).
  b.start = "offline"
  b.batch_size = 32
  b.batch_length = 32
  b.horizon = 16
  b.discount = 0.99
  b.lambda_ = 0.95
  b.actor_entropy = 0.0  # GenRL's; the reference's DreamerV3 collector uses 3e-4
  b.slow_target_every = 100
  b.slow_target_fraction = 1.0
  b.actor = ml_collections.ConfigDict(dict(units=1024, layers=4))
  b.critic = ml_collections.ConfigDict(dict(units=1024, layers=4))
  b.actor_optimizer = ml_collections.ConfigDict(dict(lr=3e-5, eps=1e-5, clip=100.0, wd=1e-6))
  b.critic_optimizer = ml_collections.ConfigDict(dict(lr=3e-5, eps=1e-5, clip=100.0, wd=1e-6))
  b.reward = ml_collections.ConfigDict()
  # max_cosine | cosine | neg_mse | exp_neg_mse | neg_kl (genrl_jax/behavior/reward.py).
  b.reward.score_fn = "max_cosine"
  b.reward.alignment = "sequence"  # sequence | initial | none
  b.reward.n_frames = 8  # alignment window (the connector's n_frames when it has one)
  b.reward.skip_first_target = True
  b.reward.target_sample = False  # target rollout with the mode (initial stoch drawn)
  b.data_free = ml_collections.ConfigDict()
  b.data_free.start_from_video = "mix"  # mix | video | uniform
  b.data_free.mix_random_actions = True
  b.data_free.warmup_steps = 5
  # The posterior is sampled when acting, also in evaluation (the reference's
  # eval_state_mean False); True filters with the mode instead.
  b.eval_state_mean = False
  b.num_steps = 50_000
  # Data-free starts only: updates run per call to the device (one lax.scan, metrics
  # averaged on the device), so that it never waits for the host; must divide log_every
  # and save_every. 1: one call per update (the only choice for offline starts).
  b.updates_per_call = 1
  b.log_every = 1000
  b.save_every = 5000
  b.keep = 2

  c.eval = ml_collections.ConfigDict()
  c.eval.episodes = 10  # the reference's protocol (method.md §7.4)
  c.eval.num_envs = 1  # > 1: episodes spread over environments in worker processes
  c.eval.record_episodes = 1  # episodes written to eval_episode.gif
  # Episodes of uniform random actions per task, on the same environment seeds, nothing
  # rendered: the learning report's baseline (results column beats_random).
  c.eval.random_episodes = 10
  c.eval.time_limit = 0.0  # seconds of simulated time per episode; 0: the task's own
  # The imagination gap (behavior/latent_gap.py): GenRL's reward of this many evaluation
  # episodes as the world model filters them, of the actor's imagined rollouts from the
  # same states, and of as many of the task's dataset episodes; 0: not measured.
  c.eval.latent_episodes = 10
  c.eval.latent_stride = 4  # steps between the starts of the scored windows
  return c


# The variants, as tables of overrides (dotted config keys -> values) of the `paper` base.
# Each sets the model sizes and the budget of a whole run, so one is chosen per command:
# they do not combine (`cpu` is `tiny`'s table plus its own).
SMALL = {
    "world_model.deter": 512, "world_model.hidden": 512,
    "world_model.cnn_depth": 32,
    "world_model.mlp_units": 512, "world_model.mlp_layers": 4,
    "batch_size": 16, "batch_length": 32,
    "behavior.actor.units": 512, "behavior.critic.units": 512,
}

TINY = {
    # Sizes for minutes of compute on 2 CPU cores (the README's quick start); larger
    # latents, CNN or batch trained no better within this budget and ran 1.5-2x slower.
    "world_model.deter": 128, "world_model.hidden": 128,
    "world_model.stoch": 16, "world_model.discrete": 16,
    "world_model.cnn_depth": 8,
    "world_model.mlp_units": 128, "world_model.mlp_layers": 2,
    "batch_size": 8, "batch_length": 32,
    # Random episodes cost seconds (fast rendering) and updates minutes: collect more than
    # the updates can overfit, 9 per task, the last round held out for the open-loop score.
    "data.collect_episodes": 9, "data.num_envs": 2, "data.fast_render": True,
    # The reference's 1e-4 is tuned for 500k updates; within 1500 the body appears at 1e-3.
    "world_model.optimizer.lr": 1e-3, "connector.optimizer.lr": 1e-3,
    "mfwm.num_steps": 1500, "mfwm.log_every": 250, "mfwm.save_every": 500,
    # No model hub: a small random-weight CLIP built locally (it says so when it loads);
    # prompts are then clips of the tasks' own episodes. A real VLM:
    # --config.vlm.model=<hub id or dir> --config.connector.embed_dim=<its size>.
    "vlm.name": "clip", "vlm.model": "", "connector.embed_dim": 64,
    # The random CLIP's clip embeddings lie close together and the aligner maps them to
    # their common mean: video prompts skip it here (prompts.behavior_prompt.prompt_denoise).
    "behavior.prompt.denoise_video": False,
    "behavior.actor.units": 128, "behavior.critic.units": 128,
    "behavior.actor.layers": 2, "behavior.critic.layers": 2,
    "behavior.batch_size": 8, "behavior.batch_length": 32,
    # The reference's 3e-5 barely moves the actor in a few hundred updates.
    "behavior.actor_optimizer.lr": 3e-4, "behavior.critic_optimizer.lr": 3e-4,
    "behavior.num_steps": 500, "behavior.log_every": 100, "behavior.save_every": 250,
    "agent.seed_steps": 500,  # one 500-step episode
    "agent.episodes_per_shard": 1,  # else no episode reaches the replay in time
    "agent.plan2explore.ensemble_units": 128,
    "agent.save_every": 500, "agent.log_every": 50,
    "eval.episodes": 10,
}

CPU = {
    **TINY,
    # `tiny` sizes with about half an hour per domain on 2 cores
    # (experiments/cpu_pipeline.py runs several domains, offline and data-free starts).
    "data.collect_episodes": 21,  # 20 to train on and 1 held out, per task
    "mfwm.num_steps": 3000, "mfwm.log_every": 500, "mfwm.save_every": 1000,
    # The actor at the reference's lr, the critic at tiny's 3e-4: from offline starts an
    # actor at 3e-4 loses its entropy ahead of the critic (docs/experiment_log.md).
    "behavior.actor_optimizer.lr": 3e-5,
    "behavior.num_steps": 600, "behavior.log_every": 100, "behavior.save_every": 300,
}

VARIANTS = {"paper": {}, "small": SMALL, "tiny": TINY, "cpu": CPU}


def parse_variant(arg: str | None) -> str:
  """The variant named after ':' in `--config=configs/<domain>.py:<variant>` (default
  `paper`); anything else, combinations included, is refused naming the allowed ones."""
  names = [v.strip() for v in (arg or "paper").split(",")]
  allowed = ", ".join(VARIANTS)
  if len(names) > 1:
    raise ValueError(f"config variants {arg!r}: give one of {allowed}; each sets the sizes "
                     "and budget of a whole run, so they do not combine")
  if names[0] not in VARIANTS:
    raise ValueError(f"unknown config variant {names[0]!r}; expected one of {allowed}")
  return names[0]


def apply_overrides(c: ml_collections.ConfigDict, overrides: dict[str, object]) -> None:
  """Sets each dotted key of `overrides` in `c`; a key `c` does not have is an error."""
  for key, value in overrides.items():
    *path, leaf = key.split(".")
    node = c
    for part in path:
      node = node[part]
    if leaf not in node:
      raise KeyError(f"variant override {key!r}: the config has no such key")
    node[leaf] = value


def domain_config(task: str, arg: str | None, tiny_tasks: tuple[str, ...] = (),
                  cpu_tasks: tuple[str, ...] = ()) -> ml_collections.ConfigDict:
  """`task`: the environment data is collected from by default (and the default workdir's
  name). The behaviour tasks are the domain's paper tasks; `tiny` keeps `tiny_tasks` and
  `cpu` keeps `cpu_tasks` (default: `tiny_tasks`), and collects episodes in each of them
  (their prompts are cut from those episodes)."""
  from genrl_jax.envs import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
  variant = parse_variant(arg)
  c = base_config()
  c.task = task
  c.tasks = tuple(tasks_lib.paper_tasks(tasks_lib.task_info(task).domain,
                                        registered_only=True))
  apply_overrides(c, VARIANTS[variant])
  kept = {"tiny": tiny_tasks, "cpu": cpu_tasks or tiny_tasks}.get(variant, ())
  if kept:
    c.tasks = tuple(kept)
    c.data.collect_tasks = tuple(kept)
    c.mfwm.heldout_episodes = len(kept)  # the last collection round
  return c
