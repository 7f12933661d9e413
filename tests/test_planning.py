"""Best-of-K over ACT candidates: scoring, the kept candidate's slots, replay, sharding, the update."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jarl import envs, learner, models, planning, sharding, train
from jarl.agent import AgentConfig, Segment, header_slots, make_layout
from jarl.envs.host import HostEnv, HostStep, make_host_collect
from jarl.forward import replay_logprobs
from jarl.rollout import make_collect, turn_keys
from jarl.sampling import SamplingConfig
from jarl.tokenizer import ByteTokenizer
import toy_env  # noqa: F401  (registers guess_digit)

CFG = models.ModelConfig(vocab_size=512, d_model=32, n_layers=1, n_heads=4, n_kv_heads=4, head_dim=8, mlp_dim=64)
ENV = envs.make("guess_digit", max_turns=3)
SMALL = jnp.asarray([ord(c) for c in "0123456789yn\n"])
STOP = ord("\n")


def _digits(logits_BxV, key):
  """A scripted policy over digits, the verdict letters and the stop token (whatever is allowed).
  It never reads the logits' values, so its draws can be replayed from the keys alone."""
  ok_BxS = jnp.isfinite(logits_BxV[:, SMALL])
  return SMALL[jnp.argmax(jnp.where(ok_BxS, jax.random.gumbel(key, ok_BxS.shape), -jnp.inf), axis=1)]


@pytest.fixture(scope="module")
def lm():
  return models.create(CFG, seed=0)


def _value_lm(lm, scale):
  """`lm` with a value head: zero (every candidate ties) or random (scores differ)."""
  pv = models.with_value_head(lm)
  head = pv.params["value_head"]
  kernel = scale * jax.random.normal(jax.random.key(7), head["kernel"].shape)
  return pv.replace(params=dict(pv.params, value_head=dict(head, kernel=kernel)))


def _act_start(layout, turn):
  """The first column of a turn's candidate ranges (after the ACT header)."""
  t = layout.prompt_len + turn * layout.turn_len
  for s in layout.segments:
    t += header_slots(layout.headers[s])
    if s == Segment.ACT:
      return t
    t += layout.sampled_slots(s)


def _candidate_tokens(key, layout, B):
  """Replay the scripted ACT candidates: tokens [N, K, B, budget] (stop included, -1 after it)."""
  budget, K, N = layout.budgets[Segment.ACT], layout.candidates, layout.env.max_turns
  logits_BxV = jnp.zeros((B, CFG.vocab_size))
  out = np.full((N, K, B, budget), -1)
  for n, turn_key in enumerate(jax.random.split(jax.random.split(key, 3)[2], N)):
    for k, cand_key in enumerate(planning.candidate_keys(turn_keys(turn_key)["act"], K)):
      active = np.ones(B, bool)
      for s, step_key in enumerate(jax.random.split(cand_key, budget)):
        tok = np.asarray(_digits(logits_BxV, step_key))
        out[n, k, :, s] = np.where(active, tok, -1)
        active &= tok != STOP
  return out


def _text(tokens):
  return bytes(int(t) for t in tokens if 0 <= t < 256 and t != STOP).decode()


def _compact(traj, b):
  keep = traj.valid[b]
  return {f: getattr(traj, f)[b][keep] for f in ("tokens", "positions", "segment", "turn", "loss_mask", "logprob",
                                                   "reward")}


def test_layout_counts_k_candidate_ranges():
  one, four = (make_layout(AgentConfig(plan_budget=2, act_budget=2, critique_budget=1, act_candidates=k), ENV)
               for k in (1, 4))
  assert four.turn_len == one.turn_len + 3 * 2 and four.total_len == one.total_len + 3 * 2 * ENV.max_turns
  assert len(four.policy_slots) == len(one.policy_slots) + 3 * 2 * ENV.max_turns
  with pytest.raises(ValueError, match="act_candidates must be >= 1"):
    AgentConfig(act_candidates=0)
  with pytest.raises(ValueError, match="unknown candidate_score 'oracle'"):
    AgentConfig(candidate_score="oracle")


def test_k1_is_the_plain_rollout_and_ties_keep_candidate_1(lm):
  """K = 1 is the rollout of before; with a zero value head every candidate ties, so K = 3 keeps
  candidate 1, which draws with the ACT key: the valid slots read exactly as the K = 1 rollout's."""
  agent = AgentConfig(plan_budget=2, act_budget=2, critique_budget=2, revise_budget=2)
  key = jax.random.key(1)
  one = jax.device_get(make_collect(lm, ENV, agent, n_tasks=4, group_size=2)(lm.params, key))
  assert one.planning == {}
  plain = jax.device_get(make_collect(lm, ENV, dataclasses.replace(agent, act_candidates=1, candidate_score="value"),
                                      n_tasks=4, group_size=2)(lm.params, key))
  np.testing.assert_array_equal(plain.tokens, one.tokens)
  pv = _value_lm(lm, 0.0)
  three = jax.device_get(make_collect(pv, ENV, dataclasses.replace(agent, act_candidates=3, candidate_score="value"),
                                      n_tasks=4, group_size=2)(pv.params, key))
  assert three.tokens.shape[1] == one.tokens.shape[1] + 2 * 2 * ENV.max_turns
  assert (three.planning["chosen"] == 0).all() and (three.planning["scores"] == 0).all()
  assert (one.verdict == 1).any() and (one.verdict == 0).any(), "need both verdicts"
  for b in range(one.tokens.shape[0]):
    got, want = _compact(three, b), _compact(one, b)
    for f in want:
      np.testing.assert_allclose(got[f], want[f], atol=1e-5, err_msg=f)
  for f in ("turn_reward", "verdict", "turn_live"):
    np.testing.assert_array_equal(getattr(three, f), getattr(one, f))


@pytest.fixture(scope="module")
def env_scored(lm):
  agent = AgentConfig(act_budget=1, act_candidates=6, critique_budget=2)
  key = jax.random.key(3)
  traj = make_collect(lm, ENV, agent, n_tasks=8, group_size=2, choose=_digits)(lm.params, key)
  return agent, key, jax.device_get(traj)


def test_env_scoring_acts_on_the_first_right_candidate(env_scored):
  agent, key, traj = env_scored
  layout = make_layout(agent, ENV)
  B, K = traj.tokens.shape[0], agent.act_candidates
  cands = _candidate_tokens(key, layout, B)
  reset, step = ENV.jitted
  task_keys = jnp.repeat(jax.random.split(jax.random.split(key, 3)[0], 8), 2, axis=0)
  hits = later = 0
  for b in range(B):
    state, _ = reset(task_keys[b])
    for n in range(ENV.max_turns):
      if not traj.turn_live[b, n]:
        continue
      right = [float(step(state, ENV.action_tokens(_text(cands[n, k, b])), jax.random.key(0))[2]) == 1
               for k in range(K)]
      np.testing.assert_array_equal(traj.planning["scores"][b, n], 2.0 * np.asarray(right))  # reward + success
      chosen = int(traj.planning["chosen"][b, n])
      assert chosen == (right.index(True) if any(right) else 0), (b, n, right)
      assert traj.attempts["first_success"][b, n] == any(right)  # the env stepped the chosen candidate
      if traj.verdict[b, n] == 0:  # accepted: the episode acts on it
        assert traj.terminated[b, n] == any(right) and traj.turn_reward[b, n] == float(any(right))
      act = traj.loss_mask[b] & (traj.turn[b] == n) & (traj.segment[b] == Segment.ACT)
      np.testing.assert_array_equal(traj.tokens[b][act], cands[n, chosen, b][cands[n, chosen, b] >= 0])
      hits += any(right)
      later += chosen > 0
  assert hits >= 4 and later >= 2, (hits, later)
  m = jax.device_get(learner.rollout_metrics(traj))
  assert m["planning/best_score"] > m["planning/candidate_score"] and m["planning/changed_rate"] > 0


def test_only_the_chosen_candidate_stays_and_replays(lm, env_scored):
  agent, _, traj = env_scored
  layout = make_layout(agent, ENV)
  budget, K = layout.budgets[Segment.ACT], agent.act_candidates
  assert (traj.verdict == 1).any() and (traj.verdict == 0).any(), "need revisions kept and dropped"
  replayed = jax.jit(lambda p, t: replay_logprobs(lm, p, t))(lm.params, traj)
  np.testing.assert_allclose(np.asarray(replayed), traj.logprob, atol=1e-4)
  assert not (traj.loss_mask & ~traj.valid).any() and (traj.logprob[~traj.loss_mask] == 0).all()
  for b in range(traj.tokens.shape[0]):
    valid = traj.valid[b]
    np.testing.assert_array_equal(traj.positions[b][valid], np.arange(valid.sum()))  # no gaps at the candidates
    for n in range(ENV.max_turns):
      start = _act_start(layout, n)
      used = [traj.valid[b, start + k * budget:start + (k + 1) * budget].any() for k in range(K)]
      if not traj.turn_live[b, n]:
        assert not any(used)
        continue
      chosen = int(traj.planning["chosen"][b, n])
      assert used == [k == chosen for k in range(K)], (b, n, used)
      idle = np.ones(traj.tokens.shape[1], bool)
      idle[start + chosen * budget:start + (chosen + 1) * budget] = False
      idle[:start], idle[start + K * budget:] = False, False
      assert (traj.tokens[b][idle] == ENV.codec.pad_id).all() and not traj.loss_mask[b][idle].any()
      assert (traj.segment[b][idle] == 0).all() and (traj.logprob[b][idle] == 0).all()


def test_value_scoring_matches_a_slow_reference(lm):
  pv = _value_lm(lm, 1.0)
  agent = AgentConfig(act_budget=2, act_candidates=3, candidate_score="value")
  env = envs.make("guess_digit", max_turns=2)
  key = jax.random.key(4)
  traj = jax.device_get(make_collect(pv, env, agent, n_tasks=4, group_size=2, choose=_digits)(pv.params, key))
  layout = make_layout(agent, env)
  B, K = traj.tokens.shape[0], agent.act_candidates
  cands = _candidate_tokens(key, layout, B)
  rows, where = [], []
  for b in range(B):
    for n in range(env.max_turns):
      if traj.turn_live[b, n]:
        context = traj.tokens[b][:_act_start(layout, n)][traj.valid[b][:_act_start(layout, n)]]
        for k in range(K):
          rows.append(np.concatenate([context, cands[n, k, b][cands[n, k, b] >= 0]]))
          where.append((b, n, k))
  L = max(map(len, rows))
  tokens = np.zeros((len(rows), L), np.int32)
  valid = np.zeros((len(rows), L), bool)
  for i, row in enumerate(rows):
    tokens[i, :len(row)], valid[i, :len(row)] = row, True
  _, values, _ = pv.apply(pv.params, jnp.asarray(tokens), None, None, jnp.asarray(valid))
  ref = np.zeros(traj.planning["scores"].shape)
  for i, (b, n, k) in enumerate(where):
    ref[b, n, k] = np.asarray(values)[i, len(rows[i]) - 1]
  np.testing.assert_allclose(traj.planning["scores"], ref, atol=1e-4)
  live = traj.turn_live
  np.testing.assert_array_equal(traj.planning["chosen"][live], ref.argmax(-1)[live])
  assert len(set(traj.planning["chosen"][live].tolist())) > 1
  np.testing.assert_allclose(np.asarray(replay_logprobs(pv, pv.params, traj)), traj.logprob, atol=1e-4)


def test_greedy_evaluation_searches_over_sampled_alternatives(lm):
  """eval.act_candidates switches best-of-K on at evaluation; candidate 1 is the greedy action."""
  pv = _value_lm(lm, 1.0)
  agent = AgentConfig(act_budget=2, candidate_score="value")
  run = train.Run(ml_collections.ConfigDict(dict(eval=dict(act_candidates=3))), None, ENV, ENV, agent, pv, None,
                  None, None, SamplingConfig())
  out, traj = train.evaluate(run, pv.params, n_tasks=8, seed=0, return_traj=True)
  assert traj.planning["scores"].shape[-1] == 3 and 0 <= out["planning_changed_rate"] <= 1
  greedy, plain_traj = train.evaluate(dataclasses.replace(run, config=ml_collections.ConfigDict(dict(eval={}))),
                                      pv.params, n_tasks=8, seed=0, return_traj=True)
  assert "planning_changed_rate" not in greedy and plain_traj.planning == {}
  traj, plain_traj = jax.device_get((traj, plain_traj))
  act = lambda t, b: t.tokens[b][t.loss_mask[b] & (t.turn[b] == 0) & (t.segment[b] == Segment.ACT)].tolist()  # noqa
  same = [act(traj, b) == act(plain_traj, b) for b in range(8)]
  assert not all(same)
  assert same == [c == 0 for c in traj.planning["chosen"][:, 0]]


def test_sharded_best_of_k_matches_one_device(lm):
  agent = AgentConfig(act_budget=2, act_candidates=2, critique_budget=2, revise_budget=2)
  want = make_collect(lm, ENV, agent, n_tasks=4, group_size=2, choose=_digits)(lm.params, jax.random.key(5))
  mesh = sharding.make_mesh(2, 2, 2)
  lm8 = models.create(CFG, seed=0, mesh=mesh)
  got = make_collect(lm8, ENV, agent, n_tasks=4, group_size=2, mesh=mesh, choose=_digits)(lm8.params,
                                                                                           jax.random.key(5))
  assert got.tokens.sharding.spec == sharding.batch_sharding(mesh).spec
  np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(want.tokens))
  np.testing.assert_allclose(np.asarray(got.logprob), np.asarray(want.logprob), atol=1e-4)
  np.testing.assert_array_equal(np.asarray(got.planning["chosen"]), np.asarray(want.planning["chosen"]))


def test_update_trains_on_the_chosen_candidates(lm, env_scored):
  agent, _, traj = env_scored
  slots = make_layout(agent, ENV).policy_slots
  outside = np.ones(traj.tokens.shape[1], bool)
  outside[slots] = False
  assert not traj.loss_mask[:, outside].any()
  optim = learner.OptimConfig(lr=1e-2)
  update = jax.jit(learner.make_update(lm, learner.AlgoConfig(), optim, group_size=2, policy_slots=slots))
  state, metrics = update(learner.init_state(lm, optim), traj)
  assert np.isfinite(float(metrics["policy/entropy"])) and float(metrics["policy/grad_norm"]) > 0
  assert float(metrics["policy/ratio_mean"]) == pytest.approx(1.0, abs=1e-4)  # the policy's own log-probs
  assert not np.allclose(jax.tree.leaves(state.params)[0], jax.tree.leaves(lm.params)[0])


class _Echo(HostEnv):
  """Every episode ends after its first step (turn 2 of 2 is idle); reward 1 for the action "1"."""
  instructions, max_turns, obs_len, action_len = "Say 1.", 2, 4, 2

  def reset(self, seeds):
    return ["go"] * len(seeds)

  def step(self, actions, live):
    B = len(actions)
    return HostStep(["done"] * B, [float(a.strip() == "1") for a in actions], [True] * B, [False] * B,
                    [{"success": a.strip() == "1"} for a in actions])


def test_host_bridge_scores_with_the_value_head_only(lm):
  tok = ByteTokenizer()
  with pytest.raises(ValueError, match="host environment has no pure step"):
    make_host_collect(lm, _Echo(), tok, AgentConfig(act_candidates=2), n_tasks=2)
  with pytest.raises(ValueError, match="reads the value head"):
    make_host_collect(lm, _Echo(), tok, AgentConfig(act_candidates=2, candidate_score="value"), n_tasks=2)
  pv = _value_lm(lm, 1.0)
  collect = make_host_collect(pv, _Echo(), tok, AgentConfig(act_candidates=3, candidate_score="value"), n_tasks=4)
  traj = jax.device_get(collect(pv.params, jax.random.key(0)))
  assert traj.planning["scores"].shape == (4, 2, 3) and (traj.planning["scores"][:, 1] == 0).all()
  np.testing.assert_array_equal(traj.planning["scores"][:, 0].argmax(-1), traj.planning["chosen"][:, 0])
  np.testing.assert_allclose(np.asarray(replay_logprobs(pv, pv.params, traj)), traj.logprob, atol=1e-4)
