"""Qwen3-1.7B learns Countdown on a TPU v5e-8 (1 host, 8 chips x 16 GiB): full fine-tuning.

    tpu/create.sh jarl-v5e v5litepod-8                    # once; see tpu/README.md
    BUCKET=gs://my-bucket tpu/install.sh jarl-v5e         # jarl[tpu] on every worker, the bucket at /mnt/jarl
    WORKDIR=/mnt/jarl/qwen3_17b_v5e8 tpu/launch.sh jarl-v5e configs/recipes/qwen3_17b_v5e8.py
    tpu/logs.sh jarl-v5e                                  # follow worker 0
    jarl plan --config configs/recipes/qwen3_17b_v5e8.py  # anywhere, instant: the plan below

GRPO with clip-higher (0.2 / 0.28), zero-variance groups filtered and no KL term, on 3-turn Countdown:
a 128-token plan, then the expression, each turn; 16 tasks x 8 samples per iteration.
fsdp=8, 1 row per chip per micro-batch, and a 128-token plan per turn.

Memory plan (`jarl plan`, 8 devices; slots counted in bytes, an upper bound for Qwen's tokenizer;
attention "auto", layers scanned with block remat, logits 512 slots at a time): params 820.8 MiB,
optimizer state 1.60 GiB, gradients 1.60 GiB per device (float32 master weights and AdamW moments,
bfloat16 compute); rollout params 3.20 GiB (the bfloat16 copy the rollout reads, whole on every chip),
rollout KV cache 1.74 GiB (16 rows x 735 slots per device); update activations 2.53 GiB (micro-batch of 1
row x 735 slots per device):
peak 7.40 GiB of 16.00 GiB (v5e) -> fits. XLA's own figure for a compiled
iteration at 2k-8k tokens per episode: benchmarks/results/memory.md.
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.seed = 0
  c.workdir = "runs/qwen3_17b_v5e8"  # multi-host: a path every host sees (WORKDIR= sets it)
  c.tokenizer = "Qwen/Qwen3-1.7B"
  c.model = ConfigDict(dict(hf_path="Qwen/Qwen3-1.7B", preset="qwen3-1.7b", dtype="bfloat16",
                            param_dtype="float32", attention="auto", scan_layers=True, remat="block"))
  c.mesh = ConfigDict(dict(data=-1, fsdp=8, tensor=1))
  c.env = ConfigDict(dict(name="countdown", module="", kwargs=ConfigDict(dict(n_numbers=4, max_turns=3))))
  c.agent = ConfigDict(dict(plan_budget=128))  # act_budget: the env's action_len + 1
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
  c.plan = ConfigDict(dict(device="v5e", n_devices=8, tokenizer="byte"))
  return c
