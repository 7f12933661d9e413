"""How the layers run: `scan_layers` (one lax.scan over stacked layer params) and `remat` (jax.checkpoint
per block) compute what the unrolled model does, load and export checkpoints, carry LoRA and shard;
XLA's own analysis shows the compile-size and memory they are for."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jarl import models, sharding
from jarl.models import lora
from jarl.models.lm import stack_layers, unstack_layers

CFG = models.ModelConfig(vocab_size=96, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, mlp_dim=48)
QWEN3 = CFG.replace(family="qwen3", qk_norm=True, head_dim=12, tie_embeddings=True)
TOKENS = jax.random.randint(jax.random.key(1), (2, 11), 0, 96)
VALID = jnp.ones((2, 11), bool).at[0, :3].set(False).at[1, 6].set(False)  # left padding, an idle slot


def _variant(lm, **fields):
  """The same params under another layout / remat (stacked when scan_layers)."""
  cfg = lm.config.replace(**fields)
  params = stack_layers(lm.params) if cfg.scan_layers else unstack_layers(lm.params)
  return models.from_params(cfg, params, mesh=lm.mesh, kind=lm.kind)


def _decode(lm):
  """A left-padded prompt of 8 slots prefilled into a cache, then three one-token steps."""
  cache = lm.init_cache(2, 12)
  positions = jnp.maximum(jnp.cumsum(VALID, 1) - 1, 0)
  logits, cache = lm.apply(lm.params, TOKENS[:, :8], positions[:, :8], cache, VALID[:, :8])
  out = [logits]
  for t in range(8, 11):
    logits, cache = lm.apply(lm.params, TOKENS[:, t:t + 1], positions[:, t:t + 1], cache, VALID[:, t:t + 1])
    out.append(logits)
  return jnp.concatenate(out, 1), cache


def _loss(params, lm):
  logits = lm.apply(params, TOKENS, None, None, VALID)[0]
  logp = jax.nn.log_softmax(logits[:, :-1])
  return -jnp.sum(jnp.take_along_axis(logp, TOKENS[:, 1:, None], -1)[..., 0] * VALID[:, 1:])


def test_stacked_init_is_the_unrolled_init_stacked():
  unrolled, scanned = (models.create(CFG.replace(scan_layers=s), seed=4) for s in (False, True))
  assert scanned.params["layers"]["attn"]["q"]["kernel"].shape == (3, 32, 4, 8)
  assert scanned.axes["layers"]["attn"]["q"]["kernel"] == P("layers", "embed", "heads", "head_dim")
  chex_equal = jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), stack_layers(unrolled.params),
                            scanned.params)
  assert len(jax.tree.leaves(chex_equal, is_leaf=lambda x: x is None)) == len(jax.tree.leaves(scanned.params))
  back = unstack_layers(scanned.params)
  assert sorted(back["layers"]) == [0, 1, 2]
  jax.tree.map(np.testing.assert_array_equal, back, unrolled.params)


@pytest.mark.parametrize("cfg,scan,remat", [(CFG, True, "none"), (QWEN3, True, "block"), (CFG, False, "block"),
                                            (QWEN3, True, "dots")], ids=["scan", "scan-block", "block", "scan-dots"])
def test_layouts_and_remat_match_the_unrolled_model(cfg, scan, remat):
  """Full forward, a multi-turn cache (prefill then decode) and gradients, within 1e-5."""
  base = models.create(cfg, seed=0)
  lm = _variant(base, scan_layers=scan, remat=remat)
  want, got = (jax.jit(lambda m=m: m.apply(m.params, TOKENS, None, None, VALID)[0])() for m in (base, lm))
  np.testing.assert_allclose(got, want, atol=1e-5)
  (want_d, want_cache), (got_d, got_cache) = (jax.jit(lambda m=m: _decode(m))() for m in (base, lm))
  np.testing.assert_allclose(got_d, want_d, atol=1e-5)
  np.testing.assert_allclose(got_d, want, atol=1e-5)  # the cache replays the full forward
  if scan:
    Dh = cfg.head_dim
    assert got_cache.k.shape == (3, 2, 2, Dh, 12) and got_cache.v.shape == (3, 2, 2, 12, Dh)
  np.testing.assert_allclose(stack_layers(want_cache.k) if scan else want_cache.k, got_cache.k, atol=1e-5)
  want_g, got_g = (jax.jit(jax.grad(_loss), static_argnums=1)(m.params, m) for m in (base, lm))
  for a, b in zip(jax.tree.leaves(stack_layers(want_g) if scan else want_g), jax.tree.leaves(got_g), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_cache_grows_in_both_layouts():
  for scan in (False, True):
    lm = models.create(CFG.replace(scan_layers=scan), seed=0)
    cache = lm.init_cache(2, 5).grow(9)
    assert cache.length == 9
    assert all(k.shape[-1] == 9 for k in jax.tree.leaves(cache.k))
    assert all(v.shape[-2] == 9 for v in jax.tree.leaves(cache.v))


def test_value_and_reward_heads_on_stacked_layers():
  base = models.with_value_head(models.create(CFG, seed=0))
  lm = _variant(base, scan_layers=True)
  assert lm.params["lm"]["layers"]["mlp"]["up"]["kernel"].shape == (3, 32, 48)
  for a, b in zip(base.apply(base.params, TOKENS)[:2], lm.apply(lm.params, TOKENS)[:2]):
    np.testing.assert_allclose(a, b, atol=1e-5)
  rm_base, rm = (models.reward_from_lm(models.create(CFG.replace(scan_layers=s), seed=0)) for s in (False, True))
  np.testing.assert_allclose(rm.apply(rm.params, TOKENS), rm_base.apply(rm_base.params, TOKENS), atol=1e-5)


def test_checkpoints_load_and_export_in_the_stacked_layout(tmp_path):
  import transformers
  import torch
  base = models.create(CFG, seed=5)
  models.save_pretrained(base, tmp_path / "hf")
  lm = models.from_pretrained(tmp_path / "hf", scan_layers=True, remat="block")
  assert lm.config.scan_layers and lm.config.remat == "block"
  jax.tree.map(np.testing.assert_array_equal, lm.params, stack_layers(base.params))
  models.save_pretrained(lm, tmp_path / "again")  # exported unrolled, as transformers names it
  hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "again", torch_dtype=torch.float32)
  with torch.no_grad():
    theirs = hf(torch.as_tensor(np.asarray(TOKENS))).logits.numpy()
  np.testing.assert_allclose(lm.apply(lm.params, TOKENS)[0], theirs, atol=1e-4)
  with pytest.raises(ValueError, match=r"cannot be overridden \(\['n_layers'\]\)"):
    models.from_pretrained(tmp_path / "hf", n_layers=2)


def test_lora_on_stacked_layers_merges_to_the_same_function(tmp_path):
  lm = models.create(CFG.replace(scan_layers=True), seed=0)
  adapted = lora.add(lm, models.LoRAConfig(rank=2, alpha=4.0), seed=1)
  q = adapted.params["layers"]["attn"]["q"]["lora"]
  assert q["a"].shape == (3, 32, 2) and q["b"].shape == (3, 2, 4, 8)
  assert adapted.axes["layers"]["attn"]["q"]["lora"] == {"a": P("layers", "embed", None),
                                                        "b": P("layers", None, "heads", "head_dim")}
  np.testing.assert_allclose(adapted.apply(adapted.params, TOKENS)[0], lm.apply(lm.params, TOKENS)[0], atol=1e-6)
  # non-zero adapters, different per layer: the merged model computes the adapted one
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: jax.random.normal(jax.random.key(len(str(path))), x.shape) * 0.1
      if sharding.path_name(path).endswith("lora/b") else x, adapted.params)
  merged = lora.merge(adapted, params)
  np.testing.assert_allclose(merged.apply(merged.params, TOKENS)[0], adapted.apply(params, TOKENS)[0], atol=1e-5)
  folded = lora.fold(adapted, params)
  np.testing.assert_allclose(adapted.apply(folded, TOKENS)[0], merged.apply(merged.params, TOKENS)[0], atol=1e-5)
  models.save_pretrained(merged, tmp_path)  # the unrolled HF layout
  assert models.from_pretrained(tmp_path).params["layers"][2]["attn"]["q"]["kernel"].shape == (32, 4, 8)


def test_stacked_params_and_cache_shard_with_a_leading_layer_axis():
  mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
  one = models.create(CFG.replace(scan_layers=True), seed=0)
  lm = models.create(CFG.replace(scan_layers=True), seed=0, mesh=mesh)
  assert lm.params["layers"]["attn"]["q"]["kernel"].sharding.spec == P(None, "fsdp", "tensor", None)
  cache = lm.init_cache(4, 8)
  assert cache.k.sharding.spec == P(None, ("data", "fsdp"), "tensor", None, None)
  tokens = jnp.concatenate([TOKENS, TOKENS[::-1]])
  np.testing.assert_allclose(jax.jit(lm.apply)(lm.params, tokens)[0], one.apply(one.params, tokens)[0], atol=1e-5)


def _lowered_text(cfg, n_layers):
  cfg = cfg.replace(n_layers=n_layers)
  _, shapes, _ = models.abstract(cfg)
  lm = models.LM(cfg, "lm", models.abstract(cfg)[0], shapes, None)
  tokens = jax.ShapeDtypeStruct((2, 16), jnp.int32)
  return jax.jit(jax.grad(lambda p, t: (lm.apply(p, t)[0] ** 2).mean())).lower(shapes, tokens).as_text()


def test_scanned_program_does_not_grow_with_depth():
  """The lowered update (forward + backward) of a 2- and a 12-layer model: unrolled, the program grows
  with depth; scanned, only the stacked params' shapes change."""
  unrolled = [len(_lowered_text(CFG, n)) for n in (2, 12)]
  scanned = [len(_lowered_text(CFG.replace(scan_layers=True), n)) for n in (2, 12)]
  assert unrolled[1] > 3 * unrolled[0]
  assert scanned[1] < 1.1 * scanned[0]


def test_scan_with_block_remat_keeps_only_block_inputs():
  """XLA's buffer assignment for one gradient of an 8-layer model (B=4, T=256): under the scan, block remat
  keeps the residual stream per layer instead of every intermediate, cutting temp memory by more than half."""
  cfg = models.ModelConfig(vocab_size=64, d_model=64, n_layers=8, n_heads=4, n_kv_heads=2, mlp_dim=256,
                           scan_layers=True)
  tokens = jax.ShapeDtypeStruct((4, 256), jnp.int32)

  def temp_bytes(remat):
    c = dataclasses.replace(cfg, remat=remat)
    graphdef, shapes, _ = models.abstract(c)
    lm = models.LM(c, "lm", graphdef, shapes, None)
    compiled = jax.jit(jax.grad(lambda p, t: (lm.apply(p, t)[0] ** 2).mean())).lower(shapes, tokens).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  none, block = temp_bytes("none"), temp_bytes("block")
  assert block < none / 2, (none, block)
