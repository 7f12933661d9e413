"""Qwen2.5-7B-Instruct learns Countdown with LoRA on one H100 (80 GiB).

    jarl train --config configs/recipes/qwen25_7b_lora_h100.py  # on the GPU machine; or with SLURM:
    sbatch -N1 --ntasks-per-node=1 --gpus-per-node=1 slurm/train.sbatch \
        configs/recipes/qwen25_7b_lora_h100.py
    jarl plan --config configs/recipes/qwen25_7b_lora_h100.py   # anywhere, instant: the plan below

GRPO with clip-higher (0.2 / 0.28), zero-variance groups filtered and no KL term, on 3-turn Countdown:
a 256-token plan, then the expression, each turn; 16 tasks x 8 samples per iteration.
bfloat16 base weights, frozen; rank-16 float32 adapters on every linear layer are all that
trains (AdamW moments for 40M params), so no reference copy is needed either. 2 rows per
micro-batch (64 micro-batches an iteration).

Memory plan (`jarl plan`, 1 device; slots counted in bytes, an upper bound for Qwen's tokenizer; attention
"auto", layers scanned with block remat, logits 512 slots at a time): params 14.34 GiB, optimizer state
308.0 MiB, gradients 308.0 MiB per device (bfloat16 base weights + float32 adapters; moments for the
adapters only); rollout KV cache 10.48 GiB (128 rows x 1119 slots per device); update activations 5.70 GiB
(micro-batch of 2 rows x 1119 slots per device):
peak 25.61 GiB of 80.00 GiB (h100) -> fits. XLA's own figure for a compiled
iteration at 2k-8k tokens per episode: benchmarks/results/memory.md.
"""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.seed = 0
  c.workdir = "runs/qwen25_7b_lora_h100"  # multi-host: a path every host sees (WORKDIR= sets it)
  c.tokenizer = "Qwen/Qwen2.5-7B-Instruct"
  c.model = ConfigDict(dict(hf_path="Qwen/Qwen2.5-7B-Instruct", preset="qwen2.5-7b", dtype="bfloat16",
                            attention="auto", scan_layers=True, remat="block",
                            lora=ConfigDict(dict(rank=16, alpha=32.0,
                                                 targets=("q", "k", "v", "o", "gate", "up", "down")))))
  c.mesh = ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.env = ConfigDict(dict(name="countdown", module="", kwargs=ConfigDict(dict(n_numbers=4, max_turns=3))))
  c.agent = ConfigDict(dict(plan_budget=256))  # act_budget: the env's action_len + 1
  c.sampling = ConfigDict(dict(temperature=1.0))
  c.rollout = ConfigDict(dict(n_tasks=16, group_size=8))
  c.algo = ConfigDict(dict(advantage="grpo", policy_loss="ppo_clip",
                           policy_loss_kwargs=ConfigDict(dict(clip_low=0.2, clip_high=0.28)),
                           entropy_coef=0.0, kl_coef=0.0, kl_estimator="k3", filter_zero_variance=True,
                           epochs=1, logits_chunk=512, minibatches=4, microbatches=16))
  c.optim = ConfigDict(dict(lr=1e-5, warmup_steps=5, schedule="constant", max_grad_norm=1.0))
  # warm start on the env's expert answers (format only); batch = one update micro-batch, so it fits
  c.sft = ConfigDict(dict(episodes=256, steps=20, batch_size=2, lr=1e-4))
  c.eval = ConfigDict(dict(every=20, tasks=128))  # <= rollout rows: eval's KV cache fits the plan
  c.train = ConfigDict(dict(steps=200, checkpoint_every=20, keep_checkpoints=2, sample_episodes=4,
                            tensorboard=True, wandb_project=None))
  # what `jarl plan` and `jarl train` check against; "byte": slots counted in bytes, no tokenizer download
  c.plan = ConfigDict(dict(device="h100", n_devices=1, tokenizer="byte"))
  return c
