"""Safe agents: the cost-penalised trajectory, the dual step, the constrained update, the action guard."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from env_checks import check_contract, check_expert_solves, check_jit_matches_eager

from jarl import envs, learner, models, safety
from jarl.agent import AgentConfig
from jarl.envs import frozenlake, shield
from jarl.rollout import make_collect

CFG = models.ModelConfig(vocab_size=512, d_model=32, n_layers=1, n_heads=4, n_kv_heads=4, head_dim=8, mlp_dim=64)
LAKE = envs.make("frozenlake", size=4, max_turns=4, hole_prob=0.5)
GUARDED = envs.make("frozenlake", size=4, max_turns=4, hole_prob=0.5, guard=True)
AGENT = AgentConfig(act_budget=6, act_header="> ", system="")
OPTIM = learner.OptimConfig(lr=3e-3)
G = 4


@pytest.fixture(scope="module")
def setup():
  lm = models.create(CFG, seed=0)
  collect = make_collect(lm, LAKE, AGENT, n_tasks=4, group_size=G, choose=_random_moves)
  return lm, collect(lm.params, jax.random.key(3))


def _random_moves(logits_BxV, key):
  """A scripted policy that only says u/d/l/r (then the stop token): it often walks into holes."""
  B = logits_BxV.shape[0]
  moves = jnp.asarray([ord(c) for c in "udlr"])
  first = jax.random.uniform(key, (B,)) < 0.5
  return jnp.where(first, moves[jax.random.randint(key, (B,), 0, 4)], ord("\n"))


def test_episodes_report_their_cost(setup):
  _, traj = setup
  cost_BxN = np.asarray(traj.info["cost"]) * np.asarray(traj.turn_live)
  np.testing.assert_allclose(traj.episode["cost"], cost_BxN.sum(1))
  assert cost_BxN.sum() > 0, "the random walker must fall into some holes for these tests to mean anything"


def test_penalize_matches_a_slow_reference(setup):
  _, traj = setup
  lam = 0.7
  out = safety.penalize(traj, jnp.float32(lam))
  tokens_mask, turn = np.asarray(traj.loss_mask), np.asarray(traj.turn)
  cost = np.asarray(traj.info["cost"]) * np.asarray(traj.turn_live)
  expected = np.asarray(traj.reward).copy()
  for b in range(cost.shape[0]):
    for n in range(cost.shape[1]):
      slots = np.flatnonzero(tokens_mask[b] & (turn[b] == n))
      if len(slots):
        expected[b, slots[-1]] -= lam * cost[b, n]
      else:
        assert cost[b, n] == 0
  np.testing.assert_allclose(out.reward, expected, atol=1e-6)
  np.testing.assert_allclose(out.turn_reward, np.asarray(traj.turn_reward) - lam * cost, atol=1e-6)
  # The token rewards still sum to the turn rewards.
  np.testing.assert_allclose(np.asarray(out.reward).sum(1), (np.asarray(out.turn_reward)
                                                            * np.asarray(traj.turn_live)).sum(1), atol=1e-5)


def test_dual_step():
  cost_B = jnp.asarray([1.0, 0.0, 1.0, 0.0])  # mean 0.5
  assert float(safety.dual_step(jnp.float32(0.0), cost_B, budget=0.2, lr=0.1)) == pytest.approx(0.03)
  assert float(safety.dual_step(jnp.float32(0.01), cost_B, budget=0.9, lr=0.1)) == 0.0  # projected onto lam >= 0
  assert float(safety.dual_step(jnp.float32(1.0), cost_B, budget=0.9, lr=0.1)) == pytest.approx(0.96)


def test_constrained_update_trains_on_the_penalised_reward(setup):
  lm, traj = setup
  lam, budget, lr = 0.8, 0.1, 0.05
  state = learner.init_state(lm, OPTIM, lagrange=lam)
  constrained = jax.jit(learner.make_update(lm, learner.AlgoConfig(cost_budget=budget, lagrange_lr=lr), OPTIM, G))
  plain = jax.jit(learner.make_update(lm, learner.AlgoConfig(), OPTIM, G))
  new, metrics = constrained(state, traj)
  reference, _ = plain(state, safety.penalize(traj, jnp.float32(lam)))
  chex.assert_trees_all_close(new.params, reference.params, atol=1e-6)
  mean_cost = float(traj.episode["cost"].mean())
  assert float(new.lagrange) == pytest.approx(max(0.0, lam + lr * (mean_cost - budget)), abs=1e-6)
  assert float(metrics["policy/cost_over_budget"]) == pytest.approx(mean_cost - budget, abs=1e-6)
  # Without a budget the multiplier is left alone and rewards are not penalised.
  unconstrained, _ = plain(state, traj)
  assert float(unconstrained.lagrange) == pytest.approx(lam)
  assert not np.allclose(jax.tree.leaves(unconstrained.params)[0], jax.tree.leaves(reference.params)[0])


def test_cost_budget_needs_an_env_with_costs():
  lm = models.create(CFG, seed=0)
  import toy_env  # noqa: F401  (registers guess_digit, which reports no cost)
  env = envs.make("guess_digit", max_turns=2)
  traj = make_collect(lm, env, AgentConfig(act_budget=2), n_tasks=2, group_size=2)(lm.params, jax.random.key(0))
  update = learner.make_update(lm, learner.AlgoConfig(cost_budget=0.1), OPTIM, 2)
  with pytest.raises(ValueError, match="info\\['cost'\\]"):
    update(learner.init_state(lm, OPTIM), traj)
  with pytest.raises(ValueError, match="cost_budget must be >= 0"):
    learner.AlgoConfig(cost_budget=-1.0)


def _board():
  """S at (0,0), a hole right of it, the goal at (3,3)."""
  holes = jnp.asarray([[c == "H" for c in row] for row in ("SH..", "....", "....", "...G")])
  start, goal = jnp.asarray([0, 0], jnp.int32), jnp.asarray([3, 3], jnp.int32)
  inner = frozenlake.LakeState(holes, start, goal, start, jnp.int32(0))
  return shield.ShieldState(inner, GUARDED.env._obs(inner), jnp.int32(0))


def test_guard_blocks_moves_into_holes():
  _, step = GUARDED.jitted
  state = _board()
  key = jax.random.key(0)
  blocked, obs, reward, term, trunc, info = step(state, GUARDED.action_tokens("right"), key)
  assert bool(info["guarded"]) and not bool(term) and float(info["cost"]) == 0.0 and float(reward) == 0.0
  chex.assert_trees_all_equal(blocked.inner, state.inner)
  np.testing.assert_array_equal(obs.ids, state.obs.ids)
  assert int(blocked.turn) == 1
  # Unguarded, the same move falls in: cost 1, episode over.
  _, _, _, term, _, info = LAKE.jitted[1](state.inner, LAKE.action_tokens("right"), key)
  assert bool(term) and float(info["cost"]) == 1.0
  # An allowed move steps the lake as usual.
  moved, obs, _, term, _, info = step(state, GUARDED.action_tokens("down"), key)
  assert not bool(info["guarded"]) and list(np.asarray(moved.inner.pos)) == [1, 0]
  assert GUARDED.codec.text(obs).splitlines()[1].startswith("P")


def test_guard_ends_episodes_at_the_turn_limit():
  _, step = GUARDED.jitted
  state = _board()
  for turn in range(GUARDED.max_turns):
    state, _, _, term, trunc, _ = step(state, GUARDED.action_tokens("right"), jax.random.key(turn))
  assert bool(trunc) and not bool(term)


def test_guarded_env_contract_and_expert():
  check_contract(GUARDED)
  check_expert_solves(GUARDED, n_episodes=2)
  check_jit_matches_eager(GUARDED)


def test_guarded_random_walks_never_fall_in():
  lm = models.create(CFG, seed=0)
  traj = make_collect(lm, GUARDED, AGENT, n_tasks=4, group_size=G, choose=_random_moves)(lm.params, jax.random.key(3))
  assert float(traj.episode["cost"].sum()) == 0.0
  assert bool((np.asarray(traj.info["guarded"]) & np.asarray(traj.turn_live)).any())


def test_guard_needs_a_rule():
  import toy_env  # noqa: F401
  with pytest.raises(ValueError, match="defines no forbidden"):
    envs.make("guess_digit", guard=True)
