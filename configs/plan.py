"""Memory plan of a 7B-class policy (Qwen2.5-7B shapes, bfloat16) trained with LoRA on one H100.

    jarl plan                                             # this config is the default
    jarl plan --config.model.lora.rank=0                  # full fine-tuning: refused
    jarl plan --config configs/quickstart.py --device=v5e

Expect: params 14.3 GiB, optimizer state 0.3 GiB (Adam moments of the 40M adapter params
only), no reference copy, peak 63.8 GiB of 80 GiB -> fits; update activations (31.0 GiB, no
rematerialisation) and the full-batch reference logits (17.9 GiB) are the big items. With
rank 0 the optimizer state (28.4 GiB), gradients (28.4 GiB) and the KL reference copy of all
7.6B params join them: peak 130.1 GiB, refused (exit 1), naming the biggest items and what
to change. Shapes only: nothing is
allocated and the run is instant on a laptop. The model is randomly initialised and the
tokenizer is bytes: load real weights with `model.hf_path` (only config.json is read to plan).
"""

from ml_collections import ConfigDict

QWEN25_7B = dict(vocab_size=152064, d_model=3584, n_layers=28, n_heads=28, n_kv_heads=4, head_dim=128, mlp_dim=18944,
                 family="qwen2", qkv_bias=True, rope_theta=1e6, max_seq_len=32768, dtype="bfloat16",
                 param_dtype="bfloat16")


def get_config() -> ConfigDict:
  c = ConfigDict()
  c.seed = 0
  c.workdir = "runs/plan"
  c.tokenizer = "byte"
  c.model = ConfigDict(dict(preset="small", overrides=QWEN25_7B,
                            lora=ConfigDict(dict(rank=16, alpha=32.0, targets=("q", "k", "v", "o", "gate", "up",
                                                                                 "down")))))
  c.mesh = ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.env = ConfigDict(dict(name="frozenlake", module="", kwargs=ConfigDict(dict(size=4, max_turns=6))))
  c.agent = ConfigDict(dict(plan_budget=32, act_budget=6, act_header="> "))
  c.sampling = ConfigDict(dict(temperature=1.0))
  c.rollout = ConfigDict(dict(n_tasks=8, group_size=8))
  c.algo = ConfigDict(dict(advantage="grpo", policy_loss="ppo_clip", kl_coef=0.01, kl_estimator="k3",
                           epochs=1, minibatches=4, microbatches=4))
  c.optim = ConfigDict(dict(lr=1e-5, warmup_steps=5, schedule="constant", max_grad_norm=1.0))
  c.sft = ConfigDict(dict(episodes=256, steps=0, batch_size=16, lr=1e-5))
  c.eval = ConfigDict(dict(every=10, tasks=64))
  c.train = ConfigDict(dict(steps=100, checkpoint_every=10, keep_checkpoints=2, sample_episodes=4,
                            tensorboard=True, wandb_project=None))
  c.plan = ConfigDict(dict(device="h100", device_memory_gb=0.0))  # what `jarl plan` / `jarl train` check against
  return c
