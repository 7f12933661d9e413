"""Attention implementations (jarl/models/attention.py): "chunked" computes what "xla" computes, values and
gradients, over left padding, idle slots, caches filled to a cursor, GQA and qwen3's head_dim, with blocks
that do not divide the lengths; and it never holds a [T, S] score matrix. "splash" (Pallas' interpreter
off TPU) and the arguments "cudnn" hands to jax.nn.dot_product_attention give the same on every real
token; cudnn itself runs only where a GPU is."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jarl import models, sharding
from jarl.models import attention
from jarl.models.transformer import KVCache


def inputs(B, T, S, H, K, Dh, cursor, seed=0):
  """Queries at slots [cursor, cursor + T) of an S-slot cache; rows left-padded and with idle slots."""
  kq, kk, kv, kvalid = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(kq, (B, T, H, Dh))
  k = jax.random.normal(kk, (B, K, Dh, S))
  v = jax.random.normal(kv, (B, K, S, Dh))
  valid = jax.random.bernoulli(kvalid, 0.8, (B, S))
  valid = valid.at[0, :3].set(False)  # left padding
  valid = valid.at[:, cursor + T:].set(False)  # the unfilled tail
  return q, k, v, attention.Mask(valid, cursor + jnp.arange(T))


CASES = {  # (B, T, S, H, K, Dh, cursor, block)
    "prefill_gqa": (2, 13, 13, 4, 2, 16, 0, 4),
    "cache_tail": (2, 5, 23, 4, 1, 16, 7, 4),
    "decode": (3, 1, 17, 6, 3, 8, 9, 4),
    "qwen3_head_dim": (1, 9, 9, 2, 1, 128, 0, 8),
    "one_block": (2, 6, 6, 2, 2, 8, 0, 512),
}


@pytest.mark.parametrize("case", CASES)
def test_chunked_equals_xla_values_and_gradients(case):
  B, T, S, H, K, Dh, cursor, block = CASES[case]
  q, k, v, mask = inputs(B, T, S, H, K, Dh, cursor)
  scale = Dh ** -0.5
  w = jax.random.normal(jax.random.key(1), (B, T, H, Dh))

  def loss(impl, q, k, v):
    return jnp.sum(attention.attend(impl, q, k, v, mask, scale, block) * w)

  want, got = (jax.jit(lambda q, k, v, i=impl: attention.attend(i, q, k, v, mask, scale, block))(q, k, v)
               for impl in ("xla", "chunked"))
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  want_grads, got_grads = (jax.jit(jax.grad(lambda *a, i=impl: loss(i, *a), argnums=(0, 1, 2)))(q, k, v)
                           for impl in ("xla", "chunked"))
  for name, g, w_ in zip("qkv", got_grads, want_grads):
    np.testing.assert_allclose(g, w_, atol=1e-5, rtol=1e-5, err_msg=name)


def test_unknown_implementation_is_named():
  with pytest.raises(ValueError, match="attention='flash'"):
    models.preset("tiny", attention="flash")
  q, k, v, mask = inputs(1, 2, 2, 2, 1, 8, 0)
  with pytest.raises(ValueError, match="unknown attention implementation 'flash'"):
    attention.attend("flash", q, k, v, mask, 1.0, 4)


def test_model_prefill_decode_and_gradients_match_across_implementations():
  """The whole model: a left-padded prompt prefilled into a cache, two decode steps, and the gradient of a
  teacher-forced loss, under "xla" and "chunked" (blocks of 4 over 11 slots)."""
  cfg = models.preset("tiny", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, mlp_dim=96)
  lms = {impl: models.create(dataclasses.replace(cfg, attention=impl, attention_block=4), seed=0)
         for impl in ("xla", "chunked")}
  tokens = jax.random.randint(jax.random.key(2), (2, 11), 0, cfg.vocab_size)
  valid = jnp.ones((2, 11), bool).at[0, :4].set(False).at[1, 6].set(False)

  def run(lm):
    cache = KVCache.init(lm.config, 2, 11)
    positions = jnp.maximum(jnp.cumsum(valid[:, :9], 1) - 1, 0)
    logits, cache = lm.apply(lm.params, tokens[:, :9], positions, cache, valid[:, :9])
    steps = [logits]
    for t in (9, 10):
      positions = positions[:, -1:] + 1
      logit, cache = lm.apply(lm.params, tokens[:, t:t + 1], positions, cache, valid[:, t:t + 1])
      steps.append(logit)
    return jnp.concatenate(steps, 1)

  def loss(params, lm):
    logits, _ = lm.apply(params, tokens, None, None, valid)
    logp = jax.nn.log_softmax(logits[:, :-1])
    return -jnp.sum(jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0] * valid[:, 1:])

  want, got = (jax.jit(lambda lm=lm: run(lm))() for lm in lms.values())
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)
  full, _ = jax.jit(lambda: lms["chunked"].apply(lms["chunked"].params, tokens, None, None, valid))()
  np.testing.assert_allclose(full, want, atol=1e-4, rtol=1e-5)  # the cache replays the full forward
  want_g, got_g = (jax.jit(jax.grad(lambda p, lm=lm: loss(p, lm)))(lm.params) for lm in lms.values())
  for a, b in zip(jax.tree.leaves(got_g), jax.tree.leaves(want_g), strict=True):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)


def test_chunked_never_holds_the_score_matrix():
  """XLA's own buffer assignment for a forward + backward at T = S = 2048, 8 heads: "xla" needs f32 scores
  [B, H, T, S] (128 MiB); "chunked" (blocks of 256) stays under a fifth of that (it holds a few blocks of
  scores and the f32 gradient accumulators)."""
  B, T, H, K, Dh = 1, 2048, 8, 2, 64
  q = jax.ShapeDtypeStruct((B, T, H, Dh), jnp.float32)
  k = jax.ShapeDtypeStruct((B, K, Dh, T), jnp.float32)
  v = jax.ShapeDtypeStruct((B, K, T, Dh), jnp.float32)
  valid = jax.ShapeDtypeStruct((B, T), jnp.bool_)

  def temp_bytes(impl):
    def loss(q, k, v, valid):
      return jnp.sum(attention.attend(impl, q, k, v, attention.Mask(valid, jnp.arange(T)), Dh ** -0.5, 256))
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, k, v, valid).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  scores = B * H * T * T * 4
  assert temp_bytes("xla") >= scores
  assert temp_bytes("chunked") < scores / 5


def from_start(B, T, H, K, Dh, seed=0):
  q, k, v, mask = inputs(B, T, T, H, K, Dh, 0, seed)
  return q, k, v, attention.Mask(mask.key_valid_BxS, mask.q_slot_T, from_start=True)


def assert_same_on_real_tokens(impl, q, k, v, mask, block, atol=1e-5):
  """Values on real tokens, and gradients of a loss that reads only real tokens, equal xla's."""
  scale = q.shape[-1] ** -0.5
  real_BxT = np.asarray(mask.key_valid_BxS)
  w = jax.random.normal(jax.random.key(3), q.shape) * real_BxT[:, :, None, None]

  def out(i, q, k, v):
    return attention.attend(i, q, k, v, mask, scale, block)

  want, got = (jax.jit(lambda q, k, v, i=i: out(i, q, k, v))(q, k, v) for i in ("xla", impl))
  np.testing.assert_allclose(np.asarray(got)[real_BxT], np.asarray(want)[real_BxT], atol=atol, rtol=atol)
  want_g, got_g = (jax.jit(jax.grad(lambda q, k, v, i=i: jnp.sum(out(i, q, k, v) * w), argnums=(0, 1, 2)))(q, k, v)
                   for i in ("xla", impl))
  for name, a, b in zip("qkv", got_g, want_g):
    np.testing.assert_allclose(a, b, atol=atol, rtol=atol, err_msg=name)


@pytest.mark.parametrize("B,T,H,K,Dh,block", [(2, 13, 4, 2, 16, 128),  # one padded block, GQA
                                              (1, 200, 2, 1, 64, 128)])  # two blocks, MQA, padded tail
def test_splash_equals_xla_on_real_tokens(B, T, H, K, Dh, block):
  assert_same_on_real_tokens("splash", *from_start(B, T, H, K, Dh), block)


def test_segments_keep_packed_sequences_apart():
  """Rows packing several sequences (Mask.segment_BxS, the update's packed rows): each sequence gets what
  attending over it alone gives, under every implementation, values and gradients."""
  H, K, Dh, L = 4, 2, 16, 20
  lengths = ([5, 9, 3], [12, 8])  # row 0: 17 real slots + 3 padding; row 1 full
  q, k, v, _ = inputs(2, L, L, H, K, Dh, 0, seed=5)
  seg = np.zeros((2, L), np.int32)
  for row, ns in enumerate(lengths):
    seg[row, :sum(ns)] = np.repeat(np.arange(1, len(ns) + 1), ns)
  mask = attention.Mask(jnp.asarray(seg > 0), jnp.arange(L), from_start=True, segment_BxS=jnp.asarray(seg))
  scale = Dh ** -0.5
  packed = attention.attend("xla", q, k, v, mask, scale, 4)
  for row, ns in enumerate(lengths):
    for start, n in zip(np.cumsum([0] + ns[:-1]), ns):
      s = slice(start, start + n)
      alone = attention.xla(q[row:row + 1, s], k[row:row + 1, :, :, s], v[row:row + 1, :, s],
                            attention.Mask(jnp.ones((1, n), bool), jnp.arange(n), from_start=True), scale)
      np.testing.assert_allclose(packed[row:row + 1, s], alone, atol=1e-5)
  for impl, block in (("chunked", 4), ("splash", 128)):  # chunked: key blocks that span two sequences
    assert_same_on_real_tokens(impl, q, k, v, mask, block)
  np.testing.assert_allclose(attention.dense_kernel(q, k, v, mask, scale, "xla"), packed, atol=1e-6)


def test_splash_rows_over_the_mesh():
  """Under an 8-device activation mesh the kernel runs on each device's rows (shard_map) and still agrees."""
  q, k, v, mask = from_start(8, 9, 2, 1, 16)
  with sharding.activations_on(sharding.make_mesh(data=8)):
    assert_same_on_real_tokens("splash", q, k, v, mask, 128)


def test_cudnn_arguments_are_the_slot_mask():
  """What "cudnn" hands jax.nn.dot_product_attention (cache layouts transposed, the dense slot mask, the
  scale), run by XLA's implementation, is exactly "xla"; everywhere, padding and idle slots included."""
  q, k, v, mask = from_start(2, 13, 4, 2, 16)
  got = attention.dense_kernel(q, k, v, mask, 0.25, "xla")
  np.testing.assert_allclose(got, attention.xla(q, k, v, mask, 0.25), atol=1e-6)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs an NVIDIA GPU")
def test_cudnn_equals_xla_on_gpu():
  q, k, v, mask = (x.astype(jnp.bfloat16) if x.dtype == jnp.float32 else x for x in from_start(2, 64, 4, 2, 64))
  mask = from_start(2, 64, 4, 2, 64)[3]
  assert_same_on_real_tokens("cudnn", q, k, v, mask, 512, atol=2e-2)


@pytest.mark.parametrize("impl", ["cudnn", "splash"])
def test_kernels_hand_cached_forwards_to_chunked(impl):
  """Prefill at a cursor and decode (not from slot 0) are chunked's: identical outputs."""
  q, k, v, mask = inputs(2, 3, 19, 4, 2, 16, 5)
  np.testing.assert_array_equal(attention.attend(impl, q, k, v, mask, 0.25, 4),
                                attention.attend("chunked", q, k, v, mask, 0.25, 4))


def test_auto_chooses_by_backend():
  assert attention.choose("tpu", jnp.float32, 4096, 512) == "splash"
  assert attention.choose("gpu", jnp.bfloat16, 4096, 512) == "cudnn"
  assert attention.choose("gpu", jnp.float32, 4096, 512) == "chunked"  # cuDNN has no f32 flash attention
  assert attention.choose("cpu", jnp.float32, 4096, 512) == "chunked"
  assert attention.choose("cpu", jnp.float32, 256, 512) == "xla"  # one block: nothing to chunk
  with pytest.raises(ValueError, match='attention="cudnn" needs dtype'):
    models.preset("tiny", attention="cudnn")


def test_model_gradients_under_splash_and_auto():
  """The whole model's training forward and gradient under "splash" and "auto" equal "xla"'s on real tokens."""
  cfg = models.preset("tiny", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, mlp_dim=96)
  tokens = jax.random.randint(jax.random.key(2), (2, 11), 0, cfg.vocab_size)
  valid = jnp.ones((2, 11), bool).at[0, :4].set(False).at[1, 6].set(False)

  def loss(params, lm):
    logits, _ = lm.apply(params, tokens, None, None, valid)
    logp = jax.nn.log_softmax(logits[:, :-1])
    return -jnp.sum(jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0] * valid[:, 1:] * valid[:, :-1])

  grads = {}
  for impl in ("xla", "splash", "auto"):
    lm = models.create(dataclasses.replace(cfg, attention=impl, attention_block=128), seed=0)
    grads[impl] = jax.jit(jax.grad(lambda p, lm=lm: loss(p, lm)))(lm.params)
  for impl in ("splash", "auto"):
    for a, b in zip(jax.tree.leaves(grads[impl]), jax.tree.leaves(grads["xla"]), strict=True):
      np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4, err_msg=impl)
