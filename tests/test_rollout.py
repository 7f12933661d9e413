"""The in-graph multi-turn rollout: masks, segments, rewards, token-in/token-out, sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jarl import envs, models, sharding
from jarl.agent import AgentConfig, Segment, make_layout
from jarl import rollout
from jarl.forward import replay_logprobs
from jarl.rollout import make_collect
from jarl.sampling import SamplingConfig
import env_checks
import toy_env  # noqa: F401  (registers guess_digit)

CFG = models.ModelConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=8, n_kv_heads=8, head_dim=8, mlp_dim=128)
ENV = envs.make("guess_digit", max_turns=3)
SCHEMAS = {
    "act": AgentConfig(),
    "plan_act": AgentConfig(plan_budget=5),
    "act_critique": AgentConfig(critique_budget=4),
    "all": AgentConfig(plan_budget=4, critique_budget=3, revise_budget=2),
}


@pytest.fixture(scope="module")
def lm():
  return models.create(CFG, seed=0)


@pytest.fixture(scope="module")
def trajectories(lm):
  return {name: make_collect(lm, ENV, agent, n_tasks=4, group_size=2)(lm.params, jax.random.key(1))
          for name, agent in SCHEMAS.items()}


def test_toy_env_contract():
  env_checks.check_contract(ENV)
  env_checks.check_expert_solves(ENV)


@pytest.mark.parametrize("name", SCHEMAS)
def test_masks_and_segments(name, trajectories):
  traj = jax.device_get(trajectories[name])
  layout = make_layout(SCHEMAS[name], ENV)
  B, T = traj.tokens.shape
  assert (B, T) == (8, layout.total_len)
  seg, valid, loss = traj.segment, traj.valid, traj.loss_mask
  policy = np.isin(seg, [int(s) for s in layout.segments])
  # loss only on valid policy-segment slots, and every valid policy slot after its header is sampled
  assert not (loss & ~valid).any() and not (loss & ~policy).any()
  assert (seg[~valid] == 0).all()
  assert (traj.logprob[~loss] == 0).all() and (traj.logprob[loss] < 0).all()
  on = {s for s in np.unique(seg[valid])}
  assert on == {int(Segment.PROMPT), int(Segment.FEEDBACK)} | {int(s) for s in layout.segments} - (
      set() if traj.verdict.max() == 1 else {int(Segment.REVISE)})
  for b in range(B):
    for n in range(ENV.max_turns):
      in_turn = valid[b] & (traj.turn[b] == n)
      sampled = lambda s: int((loss[b] & in_turn & (seg[b] == s)).sum())
      if not traj.turn_live[b, n]:
        assert sampled(Segment.ACT) == 0
        continue
      assert 1 <= sampled(Segment.ACT) <= layout.budgets[Segment.ACT]
      if Segment.PLAN in layout.budgets:
        assert 1 <= sampled(Segment.PLAN) <= layout.budgets[Segment.PLAN]
      if Segment.CRITIQUE in layout.budgets:
        assert sampled(Segment.VERDICT) == 1
        verdict_token = traj.tokens[b][in_turn & (seg[b] == Segment.VERDICT) & loss[b]][0]
        assert verdict_token in layout.verdict_ids
        assert traj.verdict[b, n] == int(verdict_token == layout.verdict_ids[1])
        assert (sampled(Segment.REVISE) > 0) == (traj.verdict[b, n] == 1)
      else:
        assert traj.verdict[b, n] == -1
  # turns are played in order and stop after the episode ends
  live = traj.turn_live
  assert (np.diff(live.astype(int), axis=1) <= 0).all() and live[:, 0].all()
  ended = traj.terminated | traj.truncated
  assert (ended.sum(1) == 1).all()


@pytest.mark.parametrize("name", ["act", "all"])
def test_token_in_token_out(name, lm, trajectories):
  traj = trajectories[name]
  replayed = jax.jit(lambda p, t: replay_logprobs(lm, p, t))(lm.params, traj)
  np.testing.assert_allclose(np.asarray(replayed), np.asarray(traj.logprob), atol=1e-4)


def test_groups_share_the_task_and_rewards_sit_at_turn_ends(trajectories):
  traj = jax.device_get(trajectories["plan_act"])
  first_obs = traj.tokens[:, :make_layout(SCHEMAS["plan_act"], ENV).prompt_len]
  np.testing.assert_array_equal(first_obs[0::2], first_obs[1::2])
  np.testing.assert_allclose(traj.reward.sum(1), traj.episode["return_"])
  at = traj.reward != 0
  assert traj.loss_mask[at].all()


def _choose_digit(digit):
  """A scripted policy: every sampled token is the digit's byte (ByteTokenizer ids are bytes)."""
  def choose(logits_BxV, key):
    del key
    return jnp.full(logits_BxV.shape[:1], ord(str(digit)), jnp.int32)
  return choose


def test_scripted_policy_steps_the_env_with_the_parsed_action(lm):
  """Always answering the first task's secret: exactly the episodes with that secret win at turn 0."""
  key = jax.random.key(3)
  task_keys = jax.random.split(jax.random.split(key, 3)[0], 16)
  secrets = np.array([int(ENV.reset(k)[0].secret) for k in task_keys])
  digit = secrets[0]
  collect = make_collect(lm, ENV, AgentConfig(act_budget=1), n_tasks=16, group_size=1, choose=_choose_digit(digit))
  traj = jax.device_get(collect(lm.params, key))
  np.testing.assert_array_equal(traj.episode["success"], secrets == digit)
  np.testing.assert_array_equal(traj.episode["turns"], np.where(secrets == digit, 1, ENV.max_turns))
  np.testing.assert_array_equal(traj.episode["return_"], (secrets == digit).astype(np.float32))
  assert (traj.episode["valid_action_rate"] == 1).all()


def test_sharded_rollout_matches_one_device(lm):
  agent = SCHEMAS["all"]
  want = make_collect(lm, ENV, agent, n_tasks=4, group_size=2)(lm.params, jax.random.key(5))
  mesh = sharding.make_mesh(2, 2, 2)
  lm8 = models.create(CFG, seed=0, mesh=mesh)
  got = make_collect(lm8, ENV, agent, n_tasks=4, group_size=2, mesh=mesh)(lm8.params, jax.random.key(5))
  assert got.tokens.sharding.spec == sharding.batch_sharding(mesh).spec
  np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(want.tokens))
  np.testing.assert_allclose(np.asarray(got.logprob), np.asarray(want.logprob), atol=1e-4)


@pytest.mark.parametrize("group_size", [1, 4])
def test_shared_prefill_equals_one_forward_over_each_prompt(lm, group_size):
  """The instructions prefilled once and each task's first observation once per group, then copied to
  every row: the same slots, cache and logits as one forward over every row's whole prompt."""
  runner = rollout.Runner(lm, make_layout(SCHEMAS["act"], ENV), SamplingConfig())
  layout, B = runner.layout, 8
  assert int(layout.system.length) > 0
  rng, n = np.random.default_rng(3), B // group_size  # n tasks' observations, of different lengths
  ids = rng.integers(0, 256, (n, ENV.obs_len)).repeat(group_size, 0)
  obs = envs.Tokens(jnp.asarray(ids, jnp.int32), jnp.asarray(rng.integers(1, ENV.obs_len + 1, n).repeat(group_size)))
  got = jax.jit(runner.start, static_argnames="group_size")(lm.params, obs, group_size=group_size)
  prompt = rollout._join(runner.codec, layout.system, runner.observation(obs), layout.prompt_len)
  want = jax.jit(lambda p: runner.forced(p, runner._empty(B, layout.total_len), prompt, Segment.PROMPT, 0,
                                         jnp.ones((B,), bool)))(lm.params)
  for name, buf in want.buf.items():
    np.testing.assert_array_equal(got.buf[name], buf, err_msg=name)
  np.testing.assert_array_equal(got.next_pos_B, want.next_pos_B)
  np.testing.assert_array_equal(got.cache.valid_BxS, want.cache.valid_BxS)
  assert int(got.cache.index) == int(want.cache.index) == layout.prompt_len
  for g, w in zip(jax.tree.leaves((got.cache.k, got.cache.v, got.logits_BxV, got.hidden_BxD)),
                  jax.tree.leaves((want.cache.k, want.cache.v, want.logits_BxV, want.hidden_BxD))):
    np.testing.assert_allclose(g, w, atol=1e-5)
  with pytest.raises(ValueError, match="groups of 3"):
    runner.start(lm.params, obs, group_size=3)


def test_cache_grown_per_group_of_turns_matches_one_full_cache(lm, monkeypatch):
  """The turn scan runs in groups, each attending over the slots it can reach; the episode is
  the same as with the whole episode's cache from the first turn."""
  assert rollout.turn_groups(3) == [1, 2, 3] and rollout.turn_groups(16) == [4, 8, 12, 16]
  assert rollout.turn_groups(1) == [1] and rollout.turn_groups(6) == [2, 4, 6]
  agent, key = SCHEMAS["all"], jax.random.key(6)
  grouped = make_collect(lm, ENV, agent, n_tasks=2, group_size=2)(lm.params, key)
  monkeypatch.setattr(rollout, "turn_groups", lambda n: [n])
  make_collect.cache_clear()
  whole = make_collect(lm, ENV, agent, n_tasks=2, group_size=2)(lm.params, key)
  make_collect.cache_clear()
  np.testing.assert_array_equal(np.asarray(grouped.tokens), np.asarray(whole.tokens))
  np.testing.assert_array_equal(np.asarray(grouped.valid), np.asarray(whole.valid))
  np.testing.assert_allclose(np.asarray(grouped.logprob), np.asarray(whole.logprob), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(grouped.turn_reward), np.asarray(whole.turn_reward))


def test_early_exit_skips_only_steps_no_row_needs(lm, monkeypatch):
  """Sampling stops when every row has stopped and forced chunks of ended episodes are skipped: the
  trajectory is exactly the one computed with every step run, in fewer decode steps."""
  agent, key = SCHEMAS["all"], jax.random.key(7)
  stop_id = make_layout(agent, ENV).stop_id

  choose = _stop_half(stop_id)
  early = make_collect(lm, ENV, agent, n_tasks=4, group_size=2, choose=choose)(lm.params, key)
  monkeypatch.setattr(rollout, "any_row", lambda mask_B: jnp.bool_(True))
  make_collect.cache_clear()
  full = make_collect(lm, ENV, agent, n_tasks=4, group_size=2, choose=choose)(lm.params, key)
  make_collect.cache_clear()
  for name in ("tokens", "positions", "valid", "segment", "turn", "loss_mask", "reward", "turn_reward"):
    np.testing.assert_array_equal(np.asarray(getattr(early, name)), np.asarray(getattr(full, name)), err_msg=name)
  np.testing.assert_allclose(np.asarray(early.logprob), np.asarray(full.logprob), atol=1e-5)
  budget = int(full.episode["decode_budget"][0])  # every segment of every turn
  assert int(full.episode["decode_steps"][0]) == budget
  played = int(early.episode["decode_budget"][0])  # the segments of turns some row played
  assert 0 < int(early.episode["decode_steps"][0]) < played <= budget


def _stop_half(stop_id):
  def choose(logits_BxV, key):  # a digit, or the stop token half of the time: rows stop at different steps
    stop_B = jax.random.bernoulli(key, 0.5, logits_BxV.shape[:1])
    return jnp.where(stop_B, stop_id, ord("3")).astype(jnp.int32)
  return choose


def test_live_row_compaction_changes_no_token(lm):
  """The rows still sampling are gathered into batches of 8, 4 or 2 rows (when they fit a smaller one, checked
  every 2 decode steps): the trajectory is exactly the one decoded in the full batch (compact_buckets=1; each
  row draws from its own key either way), in fewer row-steps. Covers verdicts, shadow revisions and rows that
  end early."""
  agent, key = SCHEMAS["all"], jax.random.key(11)
  choose = _stop_half(make_layout(agent, ENV).stop_id)
  run = lambda buckets: make_collect(lm, ENV, agent, n_tasks=4, group_size=2, choose=choose,  # noqa: E731
                                     sampling=SamplingConfig(compact_every=2, compact_buckets=buckets))(lm.params, key)
  full, compact = run(1), run(3)
  for field in ("tokens", "positions", "valid", "segment", "turn", "loss_mask", "reward", "turn_reward", "verdict"):
    np.testing.assert_array_equal(np.asarray(getattr(compact, field)), np.asarray(getattr(full, field)), err_msg=field)
  np.testing.assert_allclose(np.asarray(compact.logprob), np.asarray(full.logprob), atol=1e-5)
  steps = int(full.episode["decode_steps"][0])
  assert int(compact.episode["decode_steps"][0]) == steps
  assert int(full.episode["decode_rows"][0]) == 8 * steps
  assert int(compact.episode["decode_rows"][0]) < 0.85 * 8 * steps


@pytest.mark.parametrize("scan_layers", [False, True])
def test_cache_rows_gathered_and_put_back(scan_layers):
  """KVCache.take_rows / put_rows address the batch axis in both layouts (per-layer tuples; stacked layers
  in front with scan_layers): the rows taken are those rows, and putting them back changes only them."""
  cfg = CFG.replace(scan_layers=scan_layers, n_layers=3)
  cache = models.KVCache.init(cfg, 6, 5)
  noise = lambda x, i: jax.random.normal(jax.random.key(i), x.shape, x.dtype)  # noqa: E731
  cache = cache.replace(k=jax.tree.map(lambda x: noise(x, 1), cache.k), v=jax.tree.map(lambda x: noise(x, 2), cache.v),
                        valid_BxS=jax.random.bernoulli(jax.random.key(3), 0.5, (6, 5)))
  rows = jnp.array([4, 1])
  part = cache.take_rows(rows)
  k, part_k = cache.k[0], part.k[0]  # the first layer's keys (a tuple's first, or the stack's first)
  np.testing.assert_array_equal(part_k, k[rows])
  np.testing.assert_array_equal(part.valid_BxS, cache.valid_BxS[rows])
  changed = part.replace(k=jax.tree.map(lambda x: x + 1, part.k), valid_BxS=~part.valid_BxS, index=jnp.int32(2))
  back = cache.put_rows(rows, changed)
  assert int(back.index) == 2
  back_k = back.k[0]
  others = np.array([0, 2, 3, 5])
  np.testing.assert_array_equal(back_k[rows], k[rows] + 1)
  np.testing.assert_array_equal(back_k[others], k[others])
  np.testing.assert_array_equal(back.valid_BxS[rows], ~cache.valid_BxS[rows])
  np.testing.assert_array_equal(back.valid_BxS[others], cache.valid_BxS[others])
  jax.tree.map(np.testing.assert_array_equal, back.v, cache.v)


def test_live_row_compaction_on_a_mesh_matches_one_device(lm):
  """Compaction over a batch split 4 ways (data 2 x fsdp 2): buckets stay multiples of the shards, and the
  trajectory is the one-device one."""
  agent, key = SCHEMAS["act"], jax.random.key(12)
  choose, sampling = _stop_half(make_layout(agent, ENV).stop_id), SamplingConfig(compact_every=2, compact_buckets=4)
  want = make_collect(lm, ENV, agent, n_tasks=8, group_size=2, choose=choose, sampling=sampling)(lm.params, key)
  mesh = sharding.make_mesh(2, 2, 2)
  lm8 = models.create(CFG, seed=0, mesh=mesh)
  assert rollout.Runner(lm8, make_layout(agent, ENV), sampling, mesh=mesh).buckets(16) == [16, 8, 4]
  got = make_collect(lm8, ENV, agent, n_tasks=8, group_size=2, choose=choose, sampling=sampling, mesh=mesh)(
      lm8.params, key)
  for field in ("tokens", "valid", "loss_mask", "turn_reward"):
    np.testing.assert_array_equal(np.asarray(getattr(got, field)), np.asarray(getattr(want, field)), err_msg=field)
  np.testing.assert_allclose(np.asarray(got.logprob), np.asarray(want.logprob), atol=1e-5)
  assert int(got.episode["decode_rows"][0]) == int(want.episode["decode_rows"][0])


def test_decode_params_in_the_compute_dtype_change_no_token(monkeypatch):
  """bfloat16 compute over float32 params: the rollout's bfloat16 copy of the params (made once per collect)
  samples the same tokens with the same log-probs as casting in every layer at every step."""
  lm16 = models.create(CFG.replace(dtype="bfloat16"), seed=0)
  agent, key = SCHEMAS["act"], jax.random.key(8)
  copied = make_collect(lm16, ENV, agent, n_tasks=2, group_size=2)(lm16.params, key)
  monkeypatch.setattr(rollout.Runner, "decode_params", lambda self, params: params)
  make_collect.cache_clear()
  cast_per_layer = make_collect(lm16, ENV, agent, n_tasks=2, group_size=2)(lm16.params, key)
  make_collect.cache_clear()
  np.testing.assert_array_equal(np.asarray(copied.tokens), np.asarray(cast_per_layer.tokens))
  np.testing.assert_array_equal(np.asarray(copied.logprob), np.asarray(cast_per_layer.logprob))


def test_bad_agent_config_is_a_clear_error():
  with pytest.raises(ValueError, match="verdict_accept='yes' must be exactly one token"):
    make_layout(AgentConfig(critique_budget=2, verdict_accept="yes"), ENV)
  with pytest.raises(ValueError, match="plan_budget must be >= 0"):
    AgentConfig(plan_budget=-1)
  with pytest.raises(ValueError, match="ACT/REVISE budgets"):
    make_layout(AgentConfig(act_budget=50), ENV)
