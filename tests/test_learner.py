"""The learner: exact gradient accumulation, the non-finite guard, update direction, PPO, SFT, sharding."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jarl import envs, forward, learner, models, optim, packing, sharding
from jarl.agent import AgentConfig, make_layout
from jarl.forward import replay_logprobs
from jarl.rollout import make_collect
from jarl import sft
from jarl.sft import expert_batch
import toy_env  # noqa: F401  (registers guess_digit)

CFG = models.ModelConfig(vocab_size=512, d_model=32, n_layers=1, n_heads=4, n_kv_heads=4, head_dim=8, mlp_dim=64)
ENV = envs.make("guess_digit", max_turns=2)
AGENT = AgentConfig(act_budget=2)
OPTIM = learner.OptimConfig(lr=3e-3)
# Adam's first step moves each param by ~lr x g / (|g| + eps): an entry whose gradient is near eps turns float noise in
# it into a visible difference, so two ways of computing the same update agree to a thousandth of a step, not to 1e-6
STEP_ATOL = OPTIM.lr * 1e-3


@pytest.fixture(scope="module")
def setup():
  """A rollout of the random model, with random rewards on its live turns: the untrained model guesses no
  digit, and all-zero rewards would give zero advantages, so updates that should agree would agree trivially."""
  lm = models.create(CFG, seed=0)
  traj = make_collect(lm, ENV, AGENT, n_tasks=4, group_size=4)(lm.params, jax.random.key(0))
  reward = jax.random.uniform(jax.random.key(1), traj.turn_reward.shape)
  return lm, traj.replace(turn_reward=jnp.where(traj.turn_live, reward, 0.0))


def _update(lm, traj, **algo):
  state = learner.init_state(lm, OPTIM, reference=algo.get("kl_coef", 0) > 0)
  update = jax.jit(learner.make_update(lm, learner.AlgoConfig(**algo), OPTIM, group_size=4))
  return update(state, traj)


def test_microbatches_give_the_full_batch_update(setup):
  lm, traj = setup
  one, m1 = _update(lm, traj, microbatches=1)
  four, m4 = _update(lm, traj, microbatches=4)
  chex.assert_trees_all_close(one.params, four.params, atol=1e-6)
  np.testing.assert_allclose(m1["policy/grad_norm"], m4["policy/grad_norm"], rtol=1e-4)


@pytest.mark.parametrize("algo", [dict(), dict(kl_coef=0.1, entropy_coef=0.01, microbatches=2)])
def test_policy_slots_give_the_same_update(setup, algo):
  lm, traj = setup
  slots = make_layout(AGENT, ENV).policy_slots
  assert not np.asarray(traj.loss_mask)[:, np.setdiff1d(np.arange(traj.tokens.shape[1]), slots)].any()
  state = learner.init_state(lm, OPTIM, reference=algo.get("kl_coef", 0) > 0)
  algo = learner.AlgoConfig(**algo)
  full = jax.jit(learner.make_update(lm, algo, OPTIM, group_size=4))(state, traj)
  sliced = jax.jit(learner.make_update(lm, algo, OPTIM, group_size=4, policy_slots=slots))(state, traj)
  chex.assert_trees_all_close(full[0].params, sliced[0].params, atol=STEP_ATOL)
  chex.assert_trees_all_close(full[1], sliced[1], rtol=1e-4, atol=1e-6)


def test_non_finite_gradients_skip_the_update(setup):
  lm, traj = setup
  bad = traj.replace(logprob=traj.logprob.at[0, :].set(jnp.nan))
  state, metrics = _update(lm, bad)
  assert int(metrics["policy/skipped_updates"]) == 1
  chex.assert_trees_all_equal(state.params, lm.params)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_steps_that_would_make_params_non_finite_are_skipped(setup):
  """Finite, non-zero gradients, but lr=inf: the update is not finite."""
  lm, traj = setup
  optim = learner.OptimConfig(lr=float("inf"), warmup_steps=0)
  state = learner.init_state(lm, optim)
  update = learner.make_update(lm, learner.AlgoConfig(entropy_coef=0.1), optim, group_size=4)
  state, metrics = jax.jit(update)(state, traj)
  assert 0 < float(metrics["policy/grad_norm"]) < np.inf and int(metrics["policy/skipped_updates"]) == 1
  chex.assert_trees_all_equal(state.params, lm.params)


def test_skip_nonfinite_is_the_inner_optimizer_on_finite_steps():
  params = {"w": jnp.arange(4.0)}
  grads = {"w": jnp.array([0.5, -1.0, 2.0, 0.0])}
  plain, guarded = optax.adam(0.1), optim.skip_nonfinite(optax.adam(0.1))
  want, _ = plain.update(grads, plain.init(params), params)
  got, state = guarded.update(grads, guarded.init(params), params)
  chex.assert_trees_all_close(got, want)
  assert int(state.total_notfinite) == 0
  got, state = guarded.update({"w": grads["w"].at[1].set(jnp.nan)}, state, params)
  assert int(state.total_notfinite) == 1 and not np.asarray(got["w"]).any()
  got, state = guarded.update({"w": grads["w"].at[2].set(jnp.inf)}, state, params)
  assert int(state.total_notfinite) == 2 and not np.asarray(got["w"]).any()


def test_updates_move_probability_towards_positive_advantages(setup):
  lm, traj = setup
  returns_B = jnp.arange(16.0) % 4  # varied returns in each group, all earned in turn 0
  traj = traj.replace(turn_reward=jnp.zeros_like(traj.turn_reward).at[:, 0].set(returns_B),
                      turn_live=traj.turn_live.at[:, 0].set(True))
  state = learner.init_state(lm, OPTIM)
  algo = learner.AlgoConfig(advantage="grpo", epochs=2)
  update = jax.jit(learner.make_update(lm, algo, OPTIM, group_size=4))
  adv_B = np.asarray(returns_B).reshape(4, 4)
  adv_B = ((adv_B - adv_B.mean(1, keepdims=True)) / adv_B.std(1, keepdims=True)).reshape(-1)

  def objective(params):
    logp_BxT = replay_logprobs(lm, params, traj)
    return float((adv_B[:, None] * np.asarray(logp_BxT)).sum())

  before = objective(state.params)
  for _ in range(3):
    state, metrics = update(state, traj)
  assert objective(state.params) > before + 1.0
  for key in ("entropy", "clip_fraction", "grad_norm", "zero_variance_fraction", "skipped_updates"):
    assert f"policy/{key}" in metrics, key


def test_kl_to_reference_is_zero_at_start_and_grows(setup):
  lm, traj = setup
  state = learner.init_state(lm, OPTIM, reference=True)
  update = jax.jit(learner.make_update(lm, learner.AlgoConfig(kl_coef=0.1), OPTIM, group_size=4))
  state, first = update(state, traj)
  assert abs(float(first["policy/kl"])) < 1e-6
  _, second = update(state, traj)
  assert float(second["policy/kl"]) > 1e-6


def test_ppo_with_value_head_fits_the_returns(setup):
  lm, traj = setup
  pv = models.with_value_head(lm)
  state = learner.init_state(pv, OPTIM)
  algo = learner.AlgoConfig(advantage="gae", advantage_kwargs=(("gamma", 1.0), ("lam", 1.0)), value_clip=10.0)
  update = jax.jit(learner.make_update(pv, algo, OPTIM, group_size=4))
  traj = traj.replace(reward=jnp.where(traj.loss_mask, 0.1, 0.0))  # dense rewards: nonzero returns everywhere
  losses = []
  for _ in range(5):
    state, metrics = update(state, traj)
    losses.append(float(metrics["policy/value_loss"]))
  assert losses[-1] < losses[0]
  with pytest.raises(ValueError, match="needs a value head"):
    learner.make_update(lm, algo, OPTIM, group_size=4)


def test_a_detached_critic_trains_the_value_head_only(setup):
  lm, traj = setup
  pv = models.with_value_head(lm)
  params = dict(pv.params, value_head=jax.tree.map(jnp.ones_like, pv.params["value_head"]))  # not the zero init
  batch = dict(tokens=traj.tokens, positions=traj.positions, valid=traj.valid)
  value_grads = lambda detach: jax.grad(  # noqa: E731
      lambda p: forward.policy_outputs(pv, p, batch, None, detach)[2].sum())(params)
  shared, detached = value_grads(False), value_grads(True)
  assert float(optax.global_norm(shared["lm"])) > 0
  assert float(optax.global_norm(detached["lm"])) == 0
  chex.assert_trees_all_close(detached["value_head"], shared["value_head"])
  algo = learner.AlgoConfig(advantage="gae", detach_critic=True, whiten_advantages=True)
  state, metrics = jax.jit(learner.make_update(pv, algo, OPTIM, group_size=4))(learner.init_state(pv, OPTIM), traj)
  assert np.isfinite(float(metrics["policy/value_loss"]))


def test_bad_algo_names_list_the_valid_ones():
  with pytest.raises(ValueError, match=r"unknown advantage estimator 'grpoo'; available: \[.*'grpo'"):
    learner.AlgoConfig(advantage="grpoo")
  with pytest.raises(ValueError, match="unknown policy loss"):
    learner.AlgoConfig(policy_loss="ppo")
  with pytest.raises(ValueError, match="unknown schedule"):
    learner.OptimConfig(schedule="exp")


@pytest.mark.parametrize("packing", [{}, dict(pack_len=160, pack_rows=6),  # packed: 3 rows a micro-batch, 4 shards
                                     dict(pack_len=160, pack_rows=6, head_len=4)])  # and the head's slots packed
def test_iteration_is_one_jit_and_sharded_matches_one_device(setup, packing):
  lm, _ = setup
  # the random model's rollouts earn no reward (zero advantages): the entropy bonus gives the update a gradient
  algo = learner.AlgoConfig(minibatches=2, entropy_coef=0.01, **packing)

  def run(lm, mesh):
    collect = make_collect(lm, ENV, AGENT, n_tasks=4, group_size=4, mesh=mesh)
    iteration = learner.make_iteration(collect, learner.make_update(lm, algo, OPTIM, group_size=4), donate=False)
    state, metrics, _ = iteration(learner.init_state(lm, OPTIM, seed=1))
    return state, metrics

  want, metrics = run(lm, None)
  assert set(metrics) >= {"episode/return", "episode/success", "episode/valid_action_rate", "policy/entropy"}
  assert metrics["policy/skipped_updates"] == 0 and metrics["policy/grad_norm"] > 0  # an update to compare
  mesh = sharding.make_mesh(2, 2, 2)
  got, _ = run(models.create(CFG, seed=0, mesh=mesh), mesh)
  q = got.params["layers"][0]["attn"]["q"]["kernel"]
  want_q = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp", "tensor", None))
  assert q.sharding.is_equivalent_to(want_q, q.ndim)
  chex.assert_trees_all_close(jax.device_get(got.params), jax.device_get(want.params), atol=1e-5)


def test_sft_lowers_expert_nll():
  lm = models.create(CFG, seed=0)
  data = expert_batch(make_layout(AGENT, ENV), n_episodes=8, seed=0)
  assert data["loss_mask"].any() and (data["loss_mask"] <= data["valid"]).all()
  step = sft.make_sft_step(lm, OPTIM)
  params, opt_state = lm.params, jax.jit(learner.make_optimizer(OPTIM).init)(lm.params)
  losses = []
  for _ in range(20):
    params, opt_state, metrics = step(params, opt_state, data)
    losses.append(float(metrics["sft/loss"]))
  assert losses[-1] < 0.5 * losses[0]


def test_logits_chunks_and_micro_batch_forwards_give_the_same_update(setup):
  """algo.logits_chunk (the output head a few slots at a time, recomputed in the backward pass) and the
  reference forward run one micro-batch at a time change nothing but memory."""
  lm, traj = setup
  whole, m_whole = _update(lm, traj, kl_coef=0.1, microbatches=2)
  chunked, m_chunked = _update(lm, traj, kl_coef=0.1, microbatches=2, logits_chunk=3)
  chex.assert_trees_all_close(chunked.params, whole.params, atol=1e-6)
  for key in ("policy/kl", "policy/entropy", "policy/grad_norm"):
    np.testing.assert_allclose(m_chunked[key], m_whole[key], rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="logits_chunk must be >= 0"):
    learner.AlgoConfig(logits_chunk=-1)


def test_logits_chunks_never_hold_the_full_logits():
  """XLA's buffer assignment for the gradient of the policy's log-probs and entropy (4 rows x 64 slots, a
  16k vocabulary): all at once it holds [rows, slots, V] float32 logits and their gradients (3x the logits,
  52 MB); in chunks of 8 slots it holds a few chunks and the [V, d_model] param gradients (7.7 MB)."""
  cfg = models.ModelConfig(vocab_size=16384, d_model=32, n_layers=1, n_heads=4, n_kv_heads=4, head_dim=8, mlp_dim=64)
  graphdef, shapes, axes = models.abstract(cfg)
  lm = models.LM(cfg, "lm", graphdef, shapes, axes)
  B, T = 4, 64
  batch = dict(tokens=jax.ShapeDtypeStruct((B, T), jnp.int32), positions=jax.ShapeDtypeStruct((B, T), jnp.int32),
               valid=jax.ShapeDtypeStruct((B, T), jnp.bool_))

  def temp_bytes(chunk):
    def loss(params, batch):
      logp, entropy, _ = forward.policy_outputs(lm, params, batch, None, logits_chunk=chunk)
      return logp.sum() + entropy.sum()
    return jax.jit(jax.grad(loss)).lower(shapes, batch).compile().memory_analysis().temp_size_in_bytes

  logits_bytes = B * T * cfg.vocab_size * 4
  whole, chunked = temp_bytes(0), temp_bytes(8)
  assert whole >= logits_bytes
  assert chunked < whole / 5 and chunked < logits_bytes / 2, (whole, chunked)


def _packings(traj):
  """(pack_len, pack_rows) cases for the setup's 16 episodes: each episode its own row cut to the longest, and
  rows of twice the longest, 8 for the batch (4 per micro-batch of 8 episodes: at least 2 episodes a row)."""
  longest = int(np.asarray(traj.valid).sum(1).max())
  assert longest < traj.tokens.shape[1]  # idle slots to drop
  return [(longest, 0), (2 * longest, 8)]


@pytest.mark.parametrize("critic", [False, True])
def test_packed_forward_equals_the_slot_buffers_forward(setup, critic):
  """pack_slots: the forward over episodes laid end to end (several a row, attention kept within each) gives
  every slot the log-prob, entropy and value of the [B, T] forward, and the same gradients."""
  lm, traj = setup
  lm = models.with_value_head(lm) if critic else lm
  batch = dict(tokens=traj.tokens, positions=traj.positions, valid=traj.valid)
  adv_BxT = jax.random.normal(jax.random.key(4), traj.tokens.shape) * traj.loss_mask

  def loss(params, packed):
    logp_BxT, entropy_BxT, values_BxT = forward.policy_outputs(lm, params, batch, None, packed=packed)
    values = 0.0 if values_BxT is None else jnp.sum(values_BxT * traj.loss_mask)
    return jnp.sum(logp_BxT * adv_BxT) + jnp.sum(entropy_BxT * traj.loss_mask) + values
  want, want_g = jax.jit(jax.value_and_grad(loss))(lm.params, None)
  for length, rows in _packings(traj):
    packed, overflow = packing.pack_slots(batch, length, rows or traj.tokens.shape[0])
    assert not np.asarray(overflow).any() and packed["tokens"].shape[1] == length
    assert int(np.asarray(packed["valid"]).sum()) == int(np.asarray(traj.valid).sum())  # every valid slot, once
    if rows:
      assert (np.asarray(packed["segment"]).max(1) - np.asarray(packed["segment"])[:, 0] >= 1).all()  # 2+ a row
    got, got_g = jax.jit(jax.value_and_grad(loss))(lm.params, packed)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    chex.assert_trees_all_close(got_g, want_g, atol=1e-5)


def test_packed_update_equals_the_slot_buffers_update(setup):
  """algo.pack_len / pack_rows: the whole update (a KL reference and micro-batches: every forward packed)
  is the step of the [B, T] buffers. (Its params are not compared: Adam's first step divides each gradient
  by its own size, so rounding in gradients near 0 moves those params by up to lr.)"""
  lm, traj = setup
  _, m_full = _update(lm, traj, kl_coef=0.1, microbatches=2)
  for length, rows in _packings(traj):
    _, m_packed = _update(lm, traj, kl_coef=0.1, microbatches=2, pack_len=length, pack_rows=rows)
    for key in ("policy/kl", "policy/entropy", "policy/grad_norm"):
      np.testing.assert_allclose(m_packed[key], m_full[key], rtol=1e-5, atol=1e-7)
    assert int(m_packed["policy/pack_overflow"]) == 0 and int(m_packed["policy/skipped_updates"]) == 0
    rows_total = rows or traj.tokens.shape[0]
    np.testing.assert_allclose(m_packed["policy/pack_fill"], np.asarray(traj.valid).sum() / (rows_total * length))


@pytest.mark.parametrize("kl_coef", [0.0, 0.1])
def test_packed_update_that_does_not_fit_is_skipped(setup, kl_coef):
  """Episodes longer than pack_len, or more than pack_rows rows hold: no step, and the count says how many."""
  lm, traj = setup
  longest = int(np.asarray(traj.valid).sum(1).max())
  n_longest = int((np.asarray(traj.valid).sum(1) == longest).sum())
  state = learner.init_state(lm, OPTIM, reference=kl_coef > 0)
  for algo, overflow in ((dict(pack_len=longest - 1), n_longest), (dict(pack_len=longest, pack_rows=8), 8)):
    update = jax.jit(learner.make_update(lm, learner.AlgoConfig(kl_coef=kl_coef, **algo), OPTIM, group_size=4))
    after, metrics = update(state, traj)
    # with a reference, its forward over the batch fails to pack too
    assert int(metrics["policy/pack_overflow"]) == overflow * (2 if kl_coef else 1), algo
    assert int(metrics["policy/skipped_updates"]) == 1
    chex.assert_trees_all_equal(after.params, state.params)


def test_packing_settings_are_checked():
  with pytest.raises(ValueError, match="pack_len and pack_rows must be >= 0"):
    learner.AlgoConfig(pack_len=-1)
  with pytest.raises(ValueError, match="pack_rows=4 needs pack_len"):
    learner.AlgoConfig(pack_rows=4)
  with pytest.raises(ValueError, match="pack_rows=6 must split into minibatches x microbatches = 4"):
    learner.AlgoConfig(pack_len=32, pack_rows=6, minibatches=2, microbatches=2)


def test_pack_slots_lays_episodes_end_to_end():
  """Next-fit, in order: each episode's valid slots (idle ones inside it skipped) follow the previous episode's
  in its row when they fit, else start the next row; an episode longer than a row or past the last row is
  flagged."""
  counts = [3, 5, 2, 6]
  valid = np.zeros((4, 9), bool)
  for b, n in enumerate(counts):
    valid[b, np.sort(np.random.default_rng(b).choice(9, n, replace=False))] = True  # idle slots between
  tokens = np.where(valid, np.arange(1, 37).reshape(4, 9), 0)
  batch = dict(tokens=jnp.asarray(tokens), positions=jnp.asarray(np.cumsum(valid, 1) - 1), valid=jnp.asarray(valid))
  packed, overflow = packing.pack_slots(batch, 8, 2)
  assert not np.asarray(overflow).any()
  want_segment = [[1, 1, 1, 2, 2, 2, 2, 2], [3, 3, 4, 4, 4, 4, 4, 4]]
  np.testing.assert_array_equal(packed["segment"], want_segment)
  np.testing.assert_array_equal(packed["tokens"], [tokens[0][valid[0]].tolist() + tokens[1][valid[1]].tolist(),
                                                   tokens[2][valid[2]].tolist() + tokens[3][valid[3]].tolist()])
  np.testing.assert_array_equal(packed["positions"], [[0, 1, 2, 0, 1, 2, 3, 4], [0, 1, 0, 1, 2, 3, 4, 5]])
  # each slot's source: its episode's previous valid slot, where that landed (episode 3's slots: row 1 from 2)
  last = np.flatnonzero(valid[3])[-1]
  assert (int(packed["source_row"][3, last]), int(packed["source_col"][3, last])) == (1, 6)
  np.testing.assert_array_equal(packing.pack_slots(batch, 8, 1)[1], [False, False, True, True])
  np.testing.assert_array_equal(packing.pack_slots(batch, 5, 4)[1], [False, False, False, True])


def test_pack_trained_lays_trained_slots_end_to_end():
  """The trained slots' flat indices, in order, B rows of `length`, padded with B * P; rows past the end flagged."""
  mask = jnp.asarray([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], bool)
  index, overflow = packing.pack_trained(mask, 2)
  np.testing.assert_array_equal(index, [[0, 2], [8, 9], [10, 11]])
  assert not np.asarray(overflow).any()
  index, overflow = packing.pack_trained(mask, 3)
  np.testing.assert_array_equal(index, [[0, 2, 8], [9, 10, 11], [12, 12, 12]])
  index, overflow = packing.pack_trained(mask, 1)
  np.testing.assert_array_equal(index, [[0], [2], [8]])
  np.testing.assert_array_equal(overflow, [False, False, True])


def _ragged(traj):
  """traj training on a random ~60% of its sampled tokens (its episodes all train on 4): ragged trained slots."""
  keep = jax.random.uniform(jax.random.key(7), traj.loss_mask.shape) < 0.6
  return traj.replace(loss_mask=traj.loss_mask & keep)


def _head_lens(mask_BxP):
  """head_len cases: the mean trained slots per episode (rounded up) and the most."""
  trained_B = np.asarray(mask_BxP).sum(1)
  assert trained_B.mean() < trained_B.max() <= mask_BxP.shape[1]  # fewer slots than the head at every one
  return [int(np.ceil(trained_B.mean())), int(trained_B.max())]


@pytest.mark.parametrize("critic", [False, True])
def test_head_at_trained_slots_equals_the_head_at_every_slot(setup, critic):
  """pack_trained: the output head over the trained slots only, laid end to end, gives each trained slot the
  log-prob and entropy of the head at every policy slot (0 at the others), and a loss over them the same
  gradients; with the forward's packing too."""
  lm, traj = setup
  lm, traj = models.with_value_head(lm) if critic else lm, _ragged(traj)
  slots = make_layout(AGENT, ENV).policy_slots
  batch = dict(tokens=traj.tokens, positions=traj.positions, valid=traj.valid)
  mask_BxP = traj.loss_mask[:, slots]
  adv_BxP = jax.random.normal(jax.random.key(4), mask_BxP.shape) * mask_BxP

  def loss(params, packed, head_index):
    logp_BxP, entropy_BxP, values_BxP = forward.policy_outputs(lm, params, batch, slots, packed=packed,
                                                               head_index=head_index)
    values = 0.0 if values_BxP is None else jnp.sum(values_BxP * mask_BxP)
    return jnp.sum(logp_BxP * adv_BxP) + jnp.sum(entropy_BxP * mask_BxP) + values, (logp_BxP, entropy_BxP)
  grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (want, (want_logp, want_entropy)), want_g = grad(lm.params, None, None)
  longest = int(np.asarray(traj.valid).sum(1).max())
  for length in _head_lens(mask_BxP):
    head_index, overflow = packing.pack_trained(mask_BxP, length)
    assert not np.asarray(overflow).any() and head_index.shape == (mask_BxP.shape[0], length)
    for packed in (None, packing.pack_slots(batch, longest, traj.tokens.shape[0])[0]):
      (got, (logp, entropy)), got_g = grad(lm.params, packed, head_index)
      np.testing.assert_allclose(logp, np.where(mask_BxP, want_logp, 0.0), rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(entropy, np.where(mask_BxP, want_entropy, 0.0), rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(got, want, rtol=1e-5)
      chex.assert_trees_all_close(got_g, want_g, atol=1e-5)


def test_update_with_the_head_at_trained_slots_equals_the_update(setup):
  """algo.head_len (with a KL reference, micro-batches, and with the forward's packing): the step of the head at
  every slot; head_fill is the share of the head's slots in use."""
  lm, traj = setup[0], _ragged(setup[1])
  _, m_full = _update(lm, traj, kl_coef=0.1, microbatches=2)
  trained = int(np.asarray(traj.loss_mask).sum())
  longest = int(np.asarray(traj.valid).sum(1).max())
  for algo in (dict(head_len=_head_lens(traj.loss_mask)[0]), dict(head_len=_head_lens(traj.loss_mask)[1],
                                                                  pack_len=longest)):
    _, m = _update(lm, traj, kl_coef=0.1, microbatches=2, **algo)
    for key in ("policy/kl", "policy/entropy", "policy/grad_norm"):
      np.testing.assert_allclose(m[key], m_full[key], rtol=1e-5, atol=1e-7)
    assert int(m["policy/pack_overflow"]) == 0 and int(m["policy/skipped_updates"]) == 0
    np.testing.assert_allclose(m["policy/head_fill"], trained / (traj.tokens.shape[0] * algo["head_len"]))


def test_update_whose_trained_slots_do_not_fit_the_head_is_skipped(setup):
  lm, traj = setup
  state = learner.init_state(lm, OPTIM, reference=True)
  update = jax.jit(learner.make_update(lm, learner.AlgoConfig(kl_coef=0.1, head_len=1), OPTIM, group_size=4))
  after, metrics = update(state, traj)
  assert int(metrics["policy/pack_overflow"]) > 0 and int(metrics["policy/skipped_updates"]) == 1
  chex.assert_trees_all_equal(after.params, state.params)
  with pytest.raises(ValueError, match="head_len must be >= 0"):
    learner.AlgoConfig(head_len=-1)
