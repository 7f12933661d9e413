"""Sharded params and forward passes on 8 fake CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jarl import models, sharding

# Divisible by every mesh axis size up to 8: 16 heads, 8 kv heads, d 64, mlp 128, vocab 256.
CFG = models.ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=16, n_kv_heads=8, head_dim=8,
                         mlp_dim=128)
MESHES = [(8, 1, 1), (1, 8, 1), (1, 1, 8), (2, 4, 1), (2, 2, 2), (4, 1, 2), (1, 2, 4)]

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")


@pytest.fixture(scope="module")
def reference():
  lm = models.create(CFG, seed=0)
  tokens = jax.random.randint(jax.random.key(1), (8, 16), 0, 256)
  logits, _ = jax.jit(lm.apply)(lm.params, tokens)
  return lm, tokens, logits


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_sharded_forward_matches_one_device(shape, reference):
  lm1, tokens, want = reference
  mesh = sharding.make_mesh(*shape)
  lm = models.create(CFG, seed=0, mesh=mesh)  # born sharded, same values as the 1-device init
  data, fsdp, tensor = shape
  q = lm.params["layers"][0]["attn"]["q"]["kernel"]
  assert q.sharding.spec == P("fsdp", "tensor", None)
  assert q.addressable_shards[0].data.shape == (64 // fsdp, 16 // tensor, 8)
  assert lm.params["embed"].addressable_shards[0].data.shape == (256 // tensor, 64 // fsdp)
  for a, b in zip(jax.tree.leaves(lm.params), jax.tree.leaves(lm1.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  tokens = sharding.shard_batch(tokens, mesh)
  assert tokens.addressable_shards[0].data.shape == (8 // (data * fsdp), 16)
  apply = jax.jit(lm.apply, in_shardings=(lm.param_shardings(mesh), sharding.batch_sharding(mesh)),
                  out_shardings=(sharding.batch_sharding(mesh, 3), None))
  got, _ = apply(lm.params, tokens)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_sharded_decode_with_cache():
  mesh = sharding.make_mesh(2, 2, 2)
  lm = models.create(CFG, seed=0, mesh=mesh)
  cache = lm.init_cache(8, 12)
  assert cache.k[0].sharding.spec == P(("data", "fsdp"), "tensor", None, None)
  tokens = jax.random.randint(jax.random.key(2), (8, 4), 0, 256)
  positions = jnp.broadcast_to(jnp.arange(4), (8, 4))
  cache_sharding = models.cache_shardings(CFG, mesh, 8)
  step = jax.jit(lm.apply, out_shardings=(sharding.batch_sharding(mesh, 3), cache_sharding), donate_argnums=3)
  logits, cache = step(lm.params, tokens, positions, cache)
  full, _ = lm.apply(lm.params, tokens)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(full), atol=1e-5)
  assert cache.k[1].sharding.spec == P(("data", "fsdp"), "tensor", None, None)


def test_mesh_that_does_not_divide_heads_is_a_clear_error():
  mesh = sharding.make_mesh(1, 1, 8)
  with pytest.raises(ValueError, match=r"layers/0/attn/k/kernel: dimension 1 of shape \(256, 2, 64\) is 2"):
    models.create(models.preset("tiny"), mesh=mesh)


def test_mesh_config_errors():
  with pytest.raises(ValueError, match="needs 16 devices, have 8"):
    sharding.make_mesh(4, 4, 1)
  with pytest.raises(ValueError, match="unknown mesh config keys"):
    sharding.mesh_from_config({"model": 2})
  assert dict(sharding.mesh_from_config({"tensor": 2}).shape) == {"data": 4, "fsdp": 1, "tensor": 2}
