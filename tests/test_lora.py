"""LoRA: identity at init, merge/fold parity and HF export, sharding, adapter-only training."""

import os
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from jax.sharding import NamedSharding, PartitionSpec as P

from jarl import envs, learner, models, sharding, train
from jarl.agent import AgentConfig
from jarl.models import lora
from jarl.rollout import make_collect
import toy_env  # noqa: F401  (registers guess_digit)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
import quickstart  # noqa: E402

CFG = models.ModelConfig(vocab_size=128, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, mlp_dim=64)
LORA = models.LoRAConfig(rank=4, alpha=8.0)
TOKENS = jax.random.randint(jax.random.key(0), (2, 9), 0, 128)


def _adapter_paths(params):
  return [p for p, _ in jax.tree_util.tree_flatten_with_path(params)[0] if "lora" in sharding.path_name(p)]


def _random_b(lm, seed=1):
  """Adapted params with random b (at init b = 0, so the adapters would do nothing)."""
  key = jax.random.key(seed)
  def one(path, x):
    return 0.1 * jax.random.normal(jax.random.fold_in(key, hash(sharding.path_name(path)) % 2**31), x.shape,
                                   x.dtype) if sharding.path_name(path).endswith("lora/b") else x
  return jax.tree_util.tree_map_with_path(one, lm.params)


def _logits(lm, params, tokens=TOKENS):
  return np.asarray(jax.jit(lm.apply)(params, tokens)[0])


def test_adapters_start_as_the_base_and_merge_fold_keep_the_function():
  base = models.create(CFG, seed=0)
  lm = lora.add(base, LORA, seed=0)
  q = lm.params["layers"][0]["attn"]["q"]
  assert q["lora"]["a"].shape == (32, 4) and q["lora"]["b"].shape == (4, 4, 8)
  assert lm.axes["layers"][0]["attn"]["o"]["lora"] == {"a": P("heads", "head_dim", None), "b": P(None, "embed")}
  assert len(_adapter_paths(lm.params)) == 2 * 7 * CFG.n_layers
  assert lm.params["embed"] is base.params["embed"]  # base weights shared, not copied
  np.testing.assert_array_equal(_logits(lm, lm.params), _logits(base, base.params))

  params = _random_b(lm)
  adapted = _logits(lm, params)
  assert np.abs(adapted - _logits(base, base.params)).max() > 1e-2
  np.testing.assert_array_equal(_logits(lm, lora.adapters_off(params)), _logits(base, base.params))
  merged = lora.merge(lm, params)
  assert merged.lora is None and not _adapter_paths(merged.params)
  np.testing.assert_allclose(_logits(merged, merged.params), adapted, atol=1e-5)
  folded = lora.fold(lm, jax.tree.map(jnp.copy, params))  # fold donates its input
  np.testing.assert_allclose(_logits(lm, folded), adapted, atol=1e-5)
  np.testing.assert_allclose(_logits(lm, lora.adapters_off(folded)), adapted, atol=1e-5)


def test_merged_export_loads_in_transformers(tmp_path):
  lm = lora.add(models.create(CFG, seed=0), LORA, seed=0)
  params = _random_b(lm)
  models.save_pretrained(lora.merge(lm, params), tmp_path)
  model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
  with torch.no_grad():
    ref = model(torch.tensor(np.asarray(TOKENS))).logits.numpy()
  np.testing.assert_allclose(_logits(lm, params), ref, atol=1e-4)


def test_targets_and_rank_are_checked():
  lm = models.create(CFG, seed=0)
  with pytest.raises(ValueError, match=r"LoRA targets \['qkv'\] name no Dense layer; available: .*'gate'"):
    lora.add(lm, models.LoRAConfig(rank=2, targets=("qkv",)))
  with pytest.raises(ValueError, match="rank >= 1"):
    lora.add(lm, models.LoRAConfig())
  only_q = lora.add(lm, models.LoRAConfig(rank=2, targets=("q", "lm_head")))
  assert {sharding.path_name(p).split("/")[-3] for p in _adapter_paths(only_q.params)} == {"q", "lm_head"}


def test_sharded_adapters_give_the_one_device_logits():
  mesh = sharding.make_mesh(2, 2, 2)
  one = lora.add(models.create(CFG, seed=0), LORA, seed=3)
  lm = lora.add(models.create(CFG, seed=0, mesh=mesh), LORA, seed=3)
  q = lm.params["layers"][1]["attn"]["q"]["lora"]
  assert q["a"].sharding == NamedSharding(mesh, P("fsdp", None))
  assert q["b"].sharding == NamedSharding(mesh, P(None, "tensor", None))
  chex.assert_trees_all_equal(jax.device_get(lm.params), jax.device_get(one.params))  # same init on any mesh
  params = _random_b(one)
  sharded = jax.device_put(params, lm.param_shardings(mesh))
  np.testing.assert_allclose(_logits(lm, sharded), _logits(one, params), atol=1e-5)


UPDATE_CFG = models.ModelConfig(vocab_size=512, d_model=32, n_layers=1, n_heads=4, n_kv_heads=4, head_dim=8,
                                mlp_dim=64)
OPTIM = learner.OptimConfig(lr=3e-3)


def _opt_state_size(state):
  return sum(x.size for x in jax.tree.leaves(state.opt_state) if x.ndim)


def test_only_adapters_get_optimizer_state_and_no_reference_copy():
  base = models.create(UPDATE_CFG, seed=0)
  lm = lora.add(base, LORA)
  n_adapter = sum(x.size for x in jax.tree.leaves(lora.split(lm, lm.params)[0]))
  assert n_adapter == LORA.rank * (4 * (32 + 32) + 3 * (32 + 64))  # r * (in + out) for q k v o, gate up down
  full = learner.init_state(base, OPTIM, reference=True)
  state = learner.init_state(lm, OPTIM, reference=True)
  assert _opt_state_size(full) == 2 * base.num_params
  assert _opt_state_size(state) == 2 * n_adapter
  assert state.ref_params is None and full.ref_params is not None
  shardings = learner.state_shardings(lm, OPTIM, sharding.make_mesh(2, 2, 2), reference=True)
  assert jax.tree.structure(shardings.opt_state) == jax.tree.structure(state.opt_state)
  assert shardings.ref_params is None


def test_rl_update_trains_adapters_and_value_head_only():
  base = models.create(UPDATE_CFG, seed=0)
  env = envs.make("guess_digit", max_turns=2)
  traj = make_collect(base, env, AgentConfig(act_budget=2), n_tasks=4, group_size=4)(base.params, jax.random.key(0))
  pv = lora.add(models.with_value_head(base), LORA)
  traj = traj.replace(reward=jnp.where(traj.loss_mask, 0.1, 0.0))
  algo = learner.AlgoConfig(advantage="gae", kl_coef=0.1, value_clip=10.0)
  update = jax.jit(learner.make_update(pv, algo, OPTIM, group_size=4))
  state = learner.init_state(pv, OPTIM, reference=True)
  state, first = update(state, traj)
  state, second = update(state, traj)
  assert abs(float(first["policy/kl"])) < 1e-6 < float(second["policy/kl"])  # reference = base, adapters off
  changed = {sharding.path_name(p) for (p, a), b in zip(jax.tree_util.tree_flatten_with_path(pv.params)[0],
                                                        jax.tree.leaves(state.params))
             if not np.array_equal(a, b)}
  assert changed and all("lora" in name or name.startswith("value_head") for name in changed), changed
  assert any(name.endswith("lora/a") for name in changed) and "value_head/kernel" in changed


def test_train_build_attaches_adapters_from_the_config():
  c = quickstart.get_config()
  c.model.overrides = dict(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, mlp_dim=64)
  c.model.lora = dict(rank=2, alpha=4.0, targets=("q", "v"))
  run = train.build(c)
  assert run.lm.lora == models.LoRAConfig(rank=2, alpha=4.0, targets=("q", "v"))
  c.model.lora.rank = 0
  assert train.build(c).lm.lora is None
