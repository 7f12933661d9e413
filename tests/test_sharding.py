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


@pytest.mark.parametrize("scan_layers", [False, True], ids=["unrolled", "scanned"])
def test_rl_iteration_never_gathers_activations_to_the_global_batch(scan_layers):
  """One RL iteration (the in-graph rollout's prefill and decode, then the update) compiled for fsdp=8: the
  residual stream, MLP activations and logits stay split by rows. Before the activation constraints the
  decode all-gathered [rows, d_model] activations (and each norm all-reduced) instead of the params."""
  import re
  import toy_env  # noqa: F401  (registers guess_digit)
  from jarl import envs, learner
  from jarl.agent import AgentConfig
  from jarl.rollout import make_collect

  B, D, F, V = 40, 48, 88, 512  # rows, d_model, mlp, vocab: no two alike, no param dim a multiple of B
  cfg = models.ModelConfig(vocab_size=V, d_model=D, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=12, mlp_dim=F,
                           scan_layers=scan_layers)
  mesh = sharding.make_mesh(data=1, fsdp=8, tensor=1)
  lm = models.create(cfg, seed=0, mesh=mesh)
  optim = learner.OptimConfig(lr=1e-3)
  collect = make_collect(lm, envs.make("guess_digit", max_turns=2), AgentConfig(act_budget=2), n_tasks=B // 4,
                         group_size=4, mesh=mesh)
  iteration = learner.make_iteration(collect, learner.make_update(lm, learner.AlgoConfig(), optim, group_size=4),
                                     shardings=learner.state_shardings(lm, optim, mesh), donate=False)
  hlo = iteration.lower(learner.init_state(lm, optim, seed=1)).compile().as_text()
  gathered = [tuple(map(int, dims.split(","))) for dtype, dims in re.findall(r"= (f32|bf16)\[([\d,]+)\]\S* all-gather\(", hlo)]
  assert any(D in dims for dims in gathered)  # the params are gathered (FSDP): the pattern sees gathers
  activations = [dims for dims in gathered if dims[0] % B == 0 and set(dims[1:]) & {D, F, V, 4 * 12}]
  assert not activations, activations


def test_rollout_reads_params_replicated_over_fsdp(monkeypatch):
  """The rollout gathers its params over fsdp once (`Runner.decode_params`, `sharding.DECODE_RULES`), not in
  every forward of every decode step: the compiled collect for fsdp=8 holds one all-gather per param
  array (and a few others), against 5x as many when it reads the training layout."""
  import re
  import toy_env  # noqa: F401  (registers guess_digit)
  from jarl import envs, rollout
  from jarl.agent import AgentConfig

  cfg = models.ModelConfig(vocab_size=512, d_model=48, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=12, mlp_dim=88)
  mesh = sharding.make_mesh(data=1, fsdp=8, tensor=1)
  lm = models.create(cfg, seed=0, mesh=mesh)

  def gathers():
    rollout.make_collect.cache_clear()
    collect = rollout.make_collect(lm, envs.make("guess_digit", max_turns=2), AgentConfig(act_budget=3), n_tasks=2,
                                   group_size=4, mesh=mesh)
    return len(re.findall(r" all-gather\(", collect.lower(lm.params, jax.random.key(0)).compile().as_text()))

  n_params = len(jax.tree.leaves(lm.params))
  decode = gathers()
  monkeypatch.setitem(sharding.DECODE_RULES, "replicated", sharding.RULES)  # the training layout
  training = gathers()
  rollout.make_collect.cache_clear()
  assert decode <= n_params + 8 and training > 3 * decode, (n_params, decode, training)


def test_tensor_decode_splits_the_rollout_params_and_samples_the_same_tokens():
  """model.decode_sharding="tensor": the rollout's params split over fsdp x tensor (here 4 x 2: an eighth per
  device, where the replicated rollout holds half, split over tensor only) and its rows over data; the same
  greedy episodes as one device, and the compiled collect's temporaries shrink by the params it no longer
  copies whole."""
  import toy_env  # noqa: F401  (registers guess_digit)
  from jarl import envs, rollout
  from jarl.agent import AgentConfig
  from jarl.sampling import SamplingConfig

  cfg = models.ModelConfig(vocab_size=2048, d_model=64, n_layers=2, n_heads=8, n_kv_heads=8, head_dim=16,
                           mlp_dim=256)  # mostly embedding and head: the params dominate the rollout's memory
  env, agent, greedy = envs.make("guess_digit", max_turns=2), AgentConfig(act_budget=3), SamplingConfig(temperature=0)
  one = models.create(cfg, seed=0)
  want = rollout.make_collect(one, env, agent, 2, 4, greedy)(one.params, jax.random.key(0))
  mesh = sharding.make_mesh(data=1, fsdp=4, tensor=2)
  temp = {}
  for mode in ("replicated", "tensor"):
    lm = models.create(cfg.replace(decode_sharding=mode), seed=0, mesh=mesh)
    collect = rollout.make_collect(lm, env, agent, 2, 4, greedy, mesh)
    got = collect(lm.params, jax.random.key(0))
    np.testing.assert_array_equal(got.tokens, want.tokens, err_msg=mode)
    np.testing.assert_allclose(got.logprob, want.logprob, atol=1e-5, err_msg=mode)
    temp[mode] = collect.lower(lm.params, jax.random.key(0)).compile().memory_analysis().temp_size_in_bytes
  params_bytes = sum(x.nbytes for x in jax.tree.leaves(one.params))
  assert temp["replicated"] - temp["tensor"] > params_bytes / 4, (temp, params_bytes)  # 1/2 - 1/8 of them
  with pytest.raises(ValueError, match="decode_sharding='pipeline'"):
    cfg.replace(decode_sharding="pipeline")
