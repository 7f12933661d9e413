"""The decoder LM, its cache and heads as pure functions."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jarl import models
from jarl.models import preset

CFG = models.ModelConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, mlp_dim=64)


def _tokens(B, T, seed=0, V=97):
  return jax.random.randint(jax.random.key(seed), (B, T), 0, V)


def test_presets_by_shape_without_allocating():
  for name, V, D in [("tiny", 512, 256), ("small", 32000, 512)]:
    cfg = preset(name)
    _, shapes, axes = models.abstract(cfg)
    assert shapes["embed"].shape == (V, D)
    assert sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes)) == cfg.num_params()
    assert jax.tree.structure(shapes) == jax.tree.structure(axes)
  with pytest.raises(ValueError, match="unknown model preset 'huge'"):
    preset("huge")


@pytest.mark.parametrize("changes,match", [
    (dict(family="gpt2"), "family='gpt2'"),
    (dict(n_kv_heads=3), "not a multiple of n_kv_heads=3"),
    (dict(rope_type="yarn"), "rope_type='yarn'"),
    (dict(head_dim=7), "head_dim=7 must be even"),
])
def test_bad_config_is_a_clear_error(changes, match):
  with pytest.raises(ValueError, match=match):
    CFG.replace(**changes)


def test_apply_is_pure_and_jit_matches_eager():
  lm = models.create(CFG, seed=0)
  tokens = _tokens(2, 9)
  eager, _ = lm.apply(lm.params, tokens)
  jitted, _ = jax.jit(lm.apply)(lm.params, tokens)
  chex.assert_shape(eager, (2, 9, 97))
  assert eager.dtype == jnp.float32
  np.testing.assert_allclose(eager, jitted, atol=1e-5)
  again = models.create(CFG, seed=0)
  chex.assert_trees_all_equal(lm.params, again.params)


def test_causality():
  lm = models.create(CFG, seed=1)
  tokens = _tokens(1, 8)
  changed = tokens.at[0, 5].set((tokens[0, 5] + 1) % 97)
  a, _ = lm.apply(lm.params, tokens)
  b, _ = lm.apply(lm.params, changed)
  np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-6)
  assert np.abs(a[:, 5:] - b[:, 5:]).max() > 1e-3


@pytest.mark.parametrize("cfg", [CFG, CFG.replace(family="qwen3", qk_norm=True, head_dim=12, tie_embeddings=True),
                                 CFG.replace(family="qwen2", qkv_bias=True, rope_type="llama3", rope_factor=8.0,
                                             rope_original_max_position=16)])
def test_prefill_then_decode_equals_full_forward(cfg):
  lm = models.create(cfg, seed=2)
  tokens = _tokens(3, 12)
  full, _ = lm.apply(lm.params, tokens)
  positions = jnp.broadcast_to(jnp.arange(12), (3, 12))
  cache = lm.init_cache(3, 16)
  step = jax.jit(lm.apply)
  logits, cache = step(lm.params, tokens[:, :7], positions[:, :7], cache)
  pieces = [logits]
  for t in range(7, 12):
    logits, cache = step(lm.params, tokens[:, t:t + 1], positions[:, t:t + 1], cache)
    pieces.append(logits)
  np.testing.assert_allclose(jnp.concatenate(pieces, 1), full, atol=1e-5)
  assert int(cache.index) == 12


def test_left_padding_and_idle_slots_do_not_change_real_tokens():
  lm = models.create(CFG, seed=3)
  tokens = _tokens(1, 6)
  alone, _ = lm.apply(lm.params, tokens)
  # Same tokens with 3 pad slots in front and an idle slot in the middle.
  padded = jnp.concatenate([jnp.zeros((1, 3), tokens.dtype), tokens[:, :2], jnp.zeros((1, 1), tokens.dtype),
                            tokens[:, 2:]], axis=1)
  valid = jnp.array([[False] * 3 + [True] * 2 + [False] + [True] * 4])
  logits, _ = lm.apply(lm.params, padded, None, None, valid)
  assert np.isfinite(np.asarray(logits)).all()
  np.testing.assert_allclose(logits[0, np.asarray(valid[0])], alone[0], atol=1e-5)


def test_bfloat16_compute_with_float32_params():
  lm32 = models.create(CFG, seed=4)
  lm16 = models.from_params(CFG.replace(dtype="bfloat16"), lm32.params)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(lm16.params))
  tokens = _tokens(2, 8)
  a, _ = lm32.apply(lm32.params, tokens)
  b, _ = lm16.apply(lm16.params, tokens)
  assert b.dtype == jnp.float32
  assert np.abs(a - b).max() < 0.1 * np.abs(a).max()


def test_from_params_names_the_bad_tensor():
  lm = models.create(CFG)
  bad = jax.tree.map(lambda x: x, lm.params)
  bad["layers"][1]["mlp"]["up"]["kernel"] = jnp.zeros((32, 65))
  with pytest.raises(ValueError, match=r"layers/1/mlp/up/kernel: shape \(32, 65\), expected \(32, 64\)"):
    models.from_params(CFG, bad)
  del bad["layers"][1]["mlp"]["up"]
  with pytest.raises(ValueError, match="missing.*layers/1/mlp/up/kernel"):
    models.from_params(CFG, bad)


def test_value_head_shares_the_backbone():
  lm = models.create(CFG, seed=5)
  pv = models.with_value_head(lm, seed=1)
  tokens = _tokens(2, 7)
  logits, values, _ = pv.apply(pv.params, tokens)
  chex.assert_shape(values, (2, 7))
  np.testing.assert_allclose(logits, lm.apply(lm.params, tokens)[0], atol=1e-5)
  np.testing.assert_array_equal(values, 0.0)  # zero-initialised head
  grads = jax.grad(lambda p: pv.apply(p, tokens)[1].sum())(pv.params)
  assert np.abs(grads["value_head"]["kernel"]).max() > 0


def test_reward_model_reads_the_last_valid_token():
  rm = models.create(CFG, seed=6, kind="reward")
  assert "lm_head" not in rm.params["backbone"]
  tokens = _tokens(2, 8)
  valid = jnp.array([[True] * 5 + [False] * 3, [True] * 8])
  r = rm.apply(rm.params, tokens, None, valid)
  chex.assert_shape(r, (2,))
  after_end = tokens.at[0, 6].set((tokens[0, 6] + 1) % 97)
  np.testing.assert_allclose(rm.apply(rm.params, after_end, None, valid), r, atol=1e-6)
  last = tokens.at[0, 4].set((tokens[0, 4] + 1) % 97)
  assert abs(float(rm.apply(rm.params, last, None, valid)[0] - r[0])) > 1e-6
