"""Qwen3-4B learns Countdown on a TPU v5p-8 (1 host, 4 chips x 95 GiB): full fine-tuning.

    tpu/create.sh jarl-v5p v5p-8                         # once; see tpu/README.md
    BUCKET=gs://my-bucket tpu/install.sh jarl-v5p        # jarl[tpu] on every worker, the bucket at /mnt/jarl
    WORKDIR=/mnt/jarl/qwen3_4b_v5p8 tpu/launch.sh jarl-v5p configs/recipes/qwen3_4b_v5p8.py
    tpu/logs.sh jarl-v5p                                 # follow worker 0
    jarl plan --config configs/recipes/qwen3_4b_v5p8.py  # anywhere, instant: the plan below

GRPO with clip-higher (0.2 / 0.28), zero-variance groups filtered and no KL term, on 3-turn Countdown:
a 256-token plan, then the expression, each turn; 16 tasks x 8 samples per iteration.
fsdp=4 over the 4 chips (a v5p-8 is 4 chips: JAX sees 4 devices); 2 rows per chip per micro-batch.

Memory plan (`jarl plan`, 4 devices; slots counted in bytes, an upper bound for Qwen's tokenizer;
attention "auto", layers scanned with block remat, logits 512 slots at a time): params 3.75 GiB, optimizer
state 7.49 GiB, gradients 7.49 GiB per device (float32 master weights and AdamW moments, bfloat16
compute); rollout params 7.49 GiB (the bfloat16 copy the rollout reads, whole on every chip), rollout KV
cache 6.73 GiB (32 rows x 1119 slots per device); update activations 4.71 GiB (micro-batch of 2 rows x
1119 slots per device):
peak 25.60 GiB of 95.00 GiB (v5p) -> fits. XLA's own figure for a compiled
iteration at 2k-8k tokens per episode: benchmarks/results/memory.md.
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.seed = 0
  c.workdir = "runs/qwen3_4b_v5p8"  # multi-host: a path every host sees (WORKDIR= sets it)
  c.tokenizer = "Qwen/Qwen3-4B"
  c.model = ConfigDict(dict(hf_path="Qwen/Qwen3-4B", preset="qwen3-4b", dtype="bfloat16",
                            param_dtype="float32", attention="auto", scan_layers=True, remat="block"))
  c.mesh = ConfigDict(dict(data=-1, fsdp=4, tensor=1))
  c.env = ConfigDict(dict(name="countdown", module="", kwargs=ConfigDict(dict(n_numbers=4, max_turns=3))))
  c.agent = ConfigDict(dict(plan_budget=256))  # act_budget: the env's action_len + 1
  c.sampling = ConfigDict(dict(temperature=1.0))
  c.rollout = ConfigDict(dict(n_tasks=16, group_size=8))
  c.algo = ConfigDict(dict(advantage="grpo", policy_loss="ppo_clip",
                           policy_loss_kwargs=ConfigDict(dict(clip_low=0.2, clip_high=0.28)),
                           entropy_coef=0.0, kl_coef=0.0, kl_estimator="k3", filter_zero_variance=True,
                           epochs=1, logits_chunk=512, minibatches=2, microbatches=8))
  c.optim = ConfigDict(dict(lr=1e-6, warmup_steps=5, schedule="constant", max_grad_norm=1.0))
  # warm start on the env's expert answers (format only); batch = one update micro-batch, so it fits
  c.sft = ConfigDict(dict(episodes=256, steps=20, batch_size=8, lr=1e-5))
  c.eval = ConfigDict(dict(every=20, tasks=128))  # <= rollout rows: eval's KV cache fits the plan
  c.train = ConfigDict(dict(steps=200, checkpoint_every=20, keep_checkpoints=2, sample_episodes=4,
                            tensorboard=True, wandb_project=None))
  # what `jarl plan` and `jarl train` check against; "byte": slots counted in bytes, no tokenizer download
  c.plan = ConfigDict(dict(device="v5p", n_devices=4, tokenizer="byte"))
  return c
