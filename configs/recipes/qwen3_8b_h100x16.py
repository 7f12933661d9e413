"""Qwen3-8B learns Countdown on 2 nodes x 8 H100 (SLURM): full fine-tuning.

    WORKDIR=/shared/runs/qwen3_8b sbatch --nodes=2 slurm/train.sbatch configs/recipes/qwen3_8b_h100x16.py
    jarl plan --config configs/recipes/qwen3_8b_h100x16.py  # anywhere, instant: the plan below

GRPO with clip-higher (0.2 / 0.28), zero-variance groups filtered and no KL term, on 3-turn Countdown:
a 256-token plan, then the expression, each turn; 32 tasks x 8 samples per iteration.
One process per GPU (16); fsdp=8 inside each node (NVLink), data=2 across the nodes, so only
gradients cross the network. 1 row per GPU per micro-batch.

Memory plan (`jarl plan`, 16 devices; slots counted in bytes, an upper bound for Qwen's tokenizer;
attention "auto", layers scanned with block remat, logits 512 slots at a time): params 3.82 GiB, optimizer
state 7.63 GiB, gradients 7.63 GiB per device (float32 master weights and AdamW moments, bfloat16
compute); rollout params 15.26 GiB (the bfloat16 copy the rollout reads, whole on every chip), rollout KV
cache 3.37 GiB (16 rows x 1119 slots per device); update activations 4.13 GiB (micro-batch of 1 row x 1119
slots per device):
peak 30.14 GiB of 80.00 GiB (h100) -> fits. XLA's own figure for a compiled
iteration at 2k-8k tokens per episode: benchmarks/results/memory.md.
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.seed = 0
  c.workdir = "runs/qwen3_8b_h100x16"  # multi-host: a path every host sees (WORKDIR= sets it)
  c.tokenizer = "Qwen/Qwen3-8B"
  c.model = ConfigDict(dict(hf_path="Qwen/Qwen3-8B", preset="qwen3-8b", dtype="bfloat16",
                            param_dtype="float32", attention="auto", scan_layers=True, remat="block"))
  c.mesh = ConfigDict(dict(data=-1, fsdp=8, tensor=1))
  c.env = ConfigDict(dict(name="countdown", module="", kwargs=ConfigDict(dict(n_numbers=4, max_turns=3))))
  c.agent = ConfigDict(dict(plan_budget=256))  # act_budget: the env's action_len + 1
  c.sampling = ConfigDict(dict(temperature=1.0))
  c.rollout = ConfigDict(dict(n_tasks=32, group_size=8))
  c.algo = ConfigDict(dict(advantage="grpo", policy_loss="ppo_clip",
                           policy_loss_kwargs=ConfigDict(dict(clip_low=0.2, clip_high=0.28)),
                           entropy_coef=0.0, kl_coef=0.0, kl_estimator="k3", filter_zero_variance=True,
                           epochs=1, logits_chunk=512, minibatches=2, microbatches=8))
  c.optim = ConfigDict(dict(lr=1e-6, warmup_steps=5, schedule="constant", max_grad_norm=1.0))
  # warm start on the env's expert answers (format only); batch = one update micro-batch, so it fits
  c.sft = ConfigDict(dict(episodes=256, steps=20, batch_size=16, lr=1e-5))
  c.eval = ConfigDict(dict(every=20, tasks=128))  # <= rollout rows: eval's KV cache fits the plan
  c.train = ConfigDict(dict(steps=200, checkpoint_every=20, keep_checkpoints=2, sample_episodes=4,
                            tensorboard=True, wandb_project=None))
  # what `jarl plan` and `jarl train` check against; "byte": slots counted in bytes, no tokenizer download
  c.plan = ConfigDict(dict(device="h100", n_devices=16, tokenizer="byte"))
  return c
