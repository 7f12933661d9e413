"""The memory plan: exact params / optimizer / KV-cache bytes, LoRA and fsdp savings, refusals."""

import json
import os
import subprocess
import sys

import pytest
from ml_collections import ConfigDict

from jarl import envs, models, plan, train
from jarl.agent import AgentConfig, make_layout
from jarl.rollout import cache_lengths
from jarl.tokenizer import load_tokenizer

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
sys.path.insert(0, CONFIGS)
import plan as plan_config  # noqa: E402
import quickstart  # noqa: E402

V, D, L, H, K, Dh, F = 32000, 512, 8, 8, 4, 64, 1408  # the "small" preset


def _config(**mesh):
  c = quickstart.get_config()
  c.model = ConfigDict(dict(preset="small"))
  c.mesh = ConfigDict({**dict(data=1, fsdp=1, tensor=1), **mesh})
  c.algo.kl_coef = 0.1
  return c


def _layout(c):
  env = envs.make(c.env.name, tokenizer=load_tokenizer(c.tokenizer), **dict(c.env.kwargs))
  return make_layout(AgentConfig(**dict(c.agent)), env)


def _slots(c):
  return _layout(c).total_len


def test_small_preset_by_hand():
  c = _config()
  B = c.rollout.n_tasks * c.rollout.group_size
  p = plan.plan(c)
  n_params = 2 * V * D + L * (D * (H + 2 * K) * Dh + H * Dh * D + 3 * D * F + 2 * D) + D
  assert p["params"] == 4 * n_params
  assert 8 * n_params <= p["optimizer state"] < 8 * n_params + 64  # two float32 moments (+ step counters)
  assert p["reference params"] == p["params"] and p["gradients"] == 2 * p["params"]
  T = _slots(c)
  kv = 2 * L * B * K * T * Dh * 4 + B * T + 4  # k, v float32; valid mask; cursor
  grown_from = cache_lengths(_layout(c))[-2]  # the cache grows between runs of turns
  assert 0 < grown_from < T and p["rollout KV cache"] == kv + kv * grown_from // (2 * T)  # + half the last one
  assert p["rollout buffers"] == B * T * (6 * 4 + 2)  # six 4-byte buffers, two bool
  layout = _layout(c)  # the biggest forced chunk at every row: a first observation or a turn's feedback
  chunk = max(layout.prompt_len - int(layout.system.length), layout.feedback_len)
  assert 0 < chunk <= layout.prompt_len and p["rollout logits"] == B * (2 * V * 4 + H * chunk * T * (4 + 4))
  assert p.peak == sum(p[n] for n in ("params", "optimizer state", "reference params", "rollout buffers")) + max(
      p["rollout KV cache"] + p["rollout logits"],
      p["gradients"] + p["update activations"] + p["reference logits"])
  assert p.fits is None  # CPU: device memory unknown unless given
  assert "DOES NOT FIT" in plan.plan(c, device_memory_gb=0.1).table()


def test_instructions_prefilled_at_one_row_are_not_counted_at_every_row():
  """With instructions in the prompt, the rollout's scores are those of the first observation's chunk (or a
  feedback's), not of the whole prompt: the instructions are prefilled once (`Runner.start`)."""
  c = _config()
  c.agent.system = "{instructions}\n"
  layout, T, B = _layout(c), _slots(c), c.rollout.n_tasks * c.rollout.group_size
  S = int(layout.system.length)
  assert S > 2 * layout.feedback_len and layout.prompt_len - S == layout.feedback_len
  assert plan.plan(c)["rollout logits"] == B * (2 * V * 4 + H * layout.feedback_len * T * (4 + 4))


def test_lora_keeps_optimizer_state_and_reference_small():
  c = _config()
  c.model.lora = dict(rank=8)
  p, full = plan.plan(c), plan.plan(_config())
  n_adapter = 8 * L * ((D + H * Dh) * 2 + (D + K * Dh) * 2 + (D + F) * 3)  # r * (in + out) per target
  assert p["params"] == full["params"] + 4 * n_adapter
  assert 8 * n_adapter <= p["optimizer state"] < 8 * n_adapter + 64
  assert p["reference params"] == 0 and p["gradients"] == 8 * n_adapter
  assert p.peak < full.peak


def test_chunked_attention_plans_one_block_of_scores():
  """model.attention="chunked" drops the [T, T] scores per layer from the update and the prompt chunk's
  scores shrink to one block; nothing else changes."""
  c = _config()
  c.model.attention, c.model.attention_block = "chunked", 64
  assert plan.model_config(c.model).attention == "chunked"
  chunked, full = plan.plan(c), plan.plan(_config())
  T = _slots(c)
  b = c.rollout.n_tasks * c.rollout.group_size // (c.algo.minibatches * c.algo.microbatches)  # micro-batch rows
  assert T > 64
  assert full["update activations"] - chunked["update activations"] == (
      L * b * H * T * T * (8 + 4) - L * b * H * T * 4 - b * H * 64 * 64 * (8 + 4))
  assert chunked["rollout logits"] < full["rollout logits"]
  assert all(chunked[n] == full[n] for n in ("params", "optimizer state", "rollout KV cache", "rollout buffers"))


def test_block_remat_keeps_one_residual_per_layer_and_scan_keeps_the_cache_size():
  """model.remat="block": each added layer costs only its input (b x T x D floats); the layer scan changes
  no plan item (the stacked cache and params hold the same bytes)."""
  def update(n_layers, **model):
    c = _config()
    c.model = ConfigDict(dict(preset="small", overrides=dict(n_layers=n_layers), **model))
    return plan.plan(c)
  c = _config()
  b = c.rollout.n_tasks * c.rollout.group_size // (c.algo.minibatches * c.algo.microbatches)
  T = _slots(c)
  remat = [update(n, remat="block", scan_layers=True)["update activations"] for n in (4, 8)]
  assert remat[1] - remat[0] == 4 * b * T * 4 * D
  full = [update(n)["update activations"] for n in (4, 8)]
  assert full[1] - full[0] > 20 * (remat[1] - remat[0])
  scanned, unrolled = update(8, scan_layers=True), update(8)
  assert all(scanned[n] == unrolled[n] for n in ("params", "optimizer state", "rollout KV cache", "update activations"))


def test_logits_chunk_shrinks_the_head_and_reference_logits():
  c = _config()
  c.algo.logits_chunk = 16
  chunked, full = plan.plan(c), plan.plan(_config())
  T = _slots(c)
  b = c.rollout.n_tasks * c.rollout.group_size // (c.algo.minibatches * c.algo.microbatches)
  assert full["reference logits"] == b * T * V * 4 and chunked["reference logits"] == b * 16 * V * 4
  head_grad = V * D * 4  # in chunks, the head's gradient is summed over the chunks' loop
  assert full["update activations"] - chunked["update activations"] == b * (T - 16) * 16 * V - head_grad


def test_head_len_shrinks_the_head_and_reference_logits():
  """algo.head_len: the update's output head (and the reference forward's) over that many slots a row."""
  c = _config()
  c.algo.kl_coef, c.algo.head_len = 0.1, 16
  packed, full = plan.plan(c), plan.plan(_config())
  T = _slots(c)
  b = c.rollout.n_tasks * c.rollout.group_size // (c.algo.minibatches * c.algo.microbatches)
  assert packed["reference logits"] == b * 16 * V * 4
  assert full["update activations"] - packed["update activations"] == b * (T - 16) * 16 * V


def test_packed_rows_plan_the_update_over_them():
  """algo.pack_len / pack_rows: the update's forwards run over pack_rows rows of pack_len slots (split into the
  micro-batches), longer than an episode when several share a row."""
  c = _config()
  micro_batches = c.algo.minibatches * c.algo.microbatches
  c.algo.pack_len, c.algo.pack_rows = 2 * _slots(c), 3 * micro_batches
  cfg = plan.model_config(c.model)
  assert plan.plan(c)["update activations"] == plan.update_activations(cfg, 3, 2 * _slots(c))
  c.algo.pack_rows = 0  # one row per episode, cut to pack_len (at most the episode's slots)
  b = c.rollout.n_tasks * c.rollout.group_size // micro_batches
  assert plan.plan(c)["update activations"] == plan.update_activations(cfg, b, _slots(c))


def test_live_row_compaction_adds_half_the_cache():
  """sampling.compact_every: the rows gathered into a bucket (at most half of them) are held beside the cache."""
  c = _config()
  without = plan.plan(c)["rollout KV cache"]
  c.sampling.compact_every = 4
  layout = _layout(c)
  grown_from = ([0] + cache_lengths(layout))[-2]
  full = without * 2 * layout.total_len // (2 * layout.total_len + grown_from)  # the cache itself
  assert abs(plan.plan(c)["rollout KV cache"] - (without + full // 2)) <= 2


def test_fsdp_divides_the_params_and_rows():
  one, eight = plan.plan(_config()), plan.plan(_config(fsdp=8))
  norms = 4 * (2 * L + 1) * D  # replicated
  assert eight["params"] == (one["params"] - norms) // 8 + norms
  assert eight["rollout buffers"] == one["rollout buffers"] // 8


def test_tensor_decode_splits_the_rollout_params_and_cache_over_fsdp_and_tensor():
  """model.decode_sharding="tensor" on fsdp=2 x tensor=2: the rollout's params copy and its KV cache a quarter
  per device (replicated: the params split over tensor only, the cache's rows over fsdp and heads over tensor)."""
  def plan_of(mode):
    c = _config(fsdp=2, tensor=2)
    c.model = ConfigDict(dict(preset="small", decode_sharding=mode))
    return plan.plan(c, n_devices=4)
  replicated, tensor = plan_of("replicated"), plan_of("tensor")
  norms = (2 * L + 1) * D  # whole on every device
  split = 2 * V * D + L * (D * (H + 2 * K) * Dh + H * Dh * D + 3 * D * F)
  assert replicated["rollout params"] == 4 * (split // 2 + norms) and tensor["rollout params"] == 4 * (split // 4 + norms)
  # k and v: rows / 2 x heads / 2 == rows x heads / 4 (only the [B, S] valid mask is bigger: split by rows)
  assert tensor["rollout KV cache"] == pytest.approx(replicated["rollout KV cache"], rel=1e-3)
  assert "split over fsdp x tensor" in tensor.table()


def test_hf_path_reads_config_json_only(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(models.config_to_hf(models.preset("small"))))
  c = _config()
  c.model = ConfigDict(dict(hf_path=str(tmp_path), dtype="bfloat16"))
  assert plan.plan(c)["params"] == plan.plan(_config())["params"] // 2


def test_a_7b_full_finetune_is_refused_and_lora_fits():
  c = plan_config.get_config()
  assert plan.check(c).fits  # LoRA: fits an H100
  c.model.lora.rank = 0
  with pytest.raises(ValueError, match=r"does not fit: peak .* > 80.00 GiB \(h100\)\. Biggest items: optimizer "
                                       r"state .*To fit: optimizer state: LoRA"):
    plan.check(c)


def test_train_refuses_before_anything_starts(tmp_path):
  c = _config()
  c.workdir = str(tmp_path / "run")
  c.plan = ConfigDict(dict(device_memory_gb=0.01))
  with pytest.raises(ValueError, match="does not fit"):
    train.train(c)
  assert not (tmp_path / "run").exists()


def test_cli():
  def run(*args):
    return subprocess.run([sys.executable, "-m", "jarl.cli", "plan", *args], capture_output=True, text=True,
                          cwd=os.path.join(CONFIGS, ".."), timeout=120)
  out = run()  # configs/plan.py
  assert out.returncode == 0 and "-> fits" in out.stdout, out.stderr
  out = run("--config", os.path.join(CONFIGS, "quickstart.py"), "--device_memory_gb=0.1")
  assert out.returncode == 1 and "DOES NOT FIT" in out.stdout and "config does not fit" in out.stderr
  out = run("--config", os.path.join(CONFIGS, "quickstart.py"), "--device=tpu9")
  assert out.returncode != 0 and "unknown device 'tpu9'" in out.stderr
