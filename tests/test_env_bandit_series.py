"""bandit_series: rounds and obs text, payouts, the success rule, contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from env_checks import check_contract, check_expert_solves, check_jit_matches_eager
from jarl.envs import bandit_series, make

ENV = make("bandit_series")
STEP = jax.jit(ENV.step)
VRESET, VSTEP = jax.jit(jax.vmap(ENV.reset)), jax.jit(jax.vmap(ENV.step))
# Deterministic payouts: the best arm is 2, then 3, then 1.
SURE = bandit_series.BanditState(jnp.asarray([[0, 1, 0], [0, 0, 1], [1, 0, 0]], jnp.float32), jnp.int32(0),
                                 jnp.bool_(True), jnp.zeros(3, jnp.int32), jnp.zeros(3, jnp.int32))


def _play(arms, state=SURE):
  turns = []
  for t, arm in enumerate(arms):
    state, obs, reward, term, trunc, info = STEP(state, ENV.action_tokens(arm), jax.random.key(t))
    turns.append((ENV.codec.text(obs), float(reward), bool(term), bool(trunc), jax.device_get(info)))
  return turns


def test_obs_text_rounds_and_end():
  _, obs = jax.jit(ENV.reset)(jax.random.key(0))
  assert ENV.codec.text(obs) == "round 1/3: new arms 1-3"
  arms = ["1", "arm 2", "3", "2", "2", "x", "3", "3", "3", "3", "1", "2", "1", "1", "1"]
  turns = _play(arms)
  assert [t[0] for t in turns] == [
      "arm 1: 0", "arm 2: 1", "arm 3: 0", "arm 2: 1", "arm 2: 1; round 2/3: new arms 1-3",
      "invalid", "arm 3: 1", "arm 3: 1", "arm 3: 1", "arm 3: 1; round 3/3: new arms 1-3",
      "arm 1: 1", "arm 2: 0", "arm 1: 1", "arm 1: 1", "arm 1: 1; done"]
  assert [t[1] for t in turns] == [0, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1]
  assert [t[2] for t in turns] == [False] * 14 + [True] and not any(t[3] for t in turns)
  assert [bool(t[4]["valid_action"]) for t in turns] == [a != "x" for a in arms]
  assert [float(t[4]["regret"]) for t in turns] == [1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0]
  assert [bool(t[4]["success"]) for t in turns] == [False] * 14 + [True]  # exploring early in a round is free


def test_success_needs_the_best_arm_in_the_last_pulls_of_every_round():
  best = ["2"] * 5 + ["3"] * 5 + ["1"] * 5
  assert _play(best)[-1][4]["success"]
  for t in (3, 4, 8, 14):  # a judged pull (the last 2 of a round) on a worse arm, or invalid
    for wrong in ("1" if best[t] != "1" else "2", "0", "4"):
      turns = _play(best[:t] + [wrong] + best[t + 1:])
      assert not turns[-1][4]["success"] and turns[-1][2]


def test_draws_and_payouts():
  keys = jax.random.split(jax.random.key(1), 256)
  states, _ = VRESET(keys)
  probs = np.asarray(states.probs_RxK)
  top = np.sort(probs, axis=-1)
  assert (top[..., -1] >= 0.7).all() and (top[..., -1] <= 0.9).all() and (top[..., :-1] <= 0.4).all()
  assert (top[..., :-1] >= 0.1).all() and len(np.unique(probs.argmax(-1))) == 3
  rewards = []
  for arm in range(3):
    action = jax.tree.map(lambda x: jnp.stack([x] * 256), ENV.action_tokens(str(arm + 1)))
    _, obs, reward, *_ = VSTEP(states, action, jax.random.split(jax.random.key(arm), 256))
    rewards.append(np.asarray(reward))
  rewards = np.stack(rewards, 1)
  assert abs(rewards.mean() - probs[:, 0].mean()) < 0.05
  best_rewards = rewards[np.arange(256), probs[:, 0].argmax(-1)]
  np.testing.assert_allclose(best_rewards.mean(), probs[:, 0].max(-1).mean(), atol=0.06)


def test_vmap_matches_single():
  keys = jax.random.split(jax.random.key(2), 256)
  states, _ = VRESET(keys)
  texts = [["1", "2", "3", "arm 9"][i % 4] for i in range(256)]
  actions = jax.tree.map(lambda *x: jnp.stack(x), *[ENV.action_tokens(t) for t in texts])
  out = VSTEP(states, actions, keys)
  for i in range(0, 256, 37):
    one = STEP(jax.tree.map(lambda x: x[i], states), jax.tree.map(lambda x: x[i], actions), keys[i])
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(out)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[i])


def test_contract_and_oracle_expert():
  check_contract(ENV)
  oracle = make("bandit_series", expert="oracle")
  episodes = check_expert_solves(oracle, n_episodes=3)
  assert all(len(turns) == 15 and sum(t["info"]["best_arm"] for t in turns) == 15 for turns in episodes)
  check_jit_matches_eager(ENV)
  with pytest.raises(ValueError, match="available"):
    make("bandit_series", expert="psychic")


def _expert_play(env, state, turns):
  step, arms = jax.jit(env.step), []
  for t in range(turns):
    arms.append(env.expert_action(jax.device_get(state)))
    state, *_ = step(state, env.action_tokens(arms[-1]), jax.random.key(t))
  return arms, state


def test_explore_commit_expert_reads_only_what_the_agent_saw():
  arms, state = _expert_play(ENV, SURE, 15)  # sure payouts: one pull of each arm tells the best one
  assert arms == ["1", "2", "3", "2", "2", "1", "2", "3", "3", "3", "1", "2", "3", "1", "1"]
  assert bool(state.judged_ok) and int(state.turn) == 15
  # the counts are this round's: after 2 pulls of round 3 (arms 1 and 2, both sure for arm 1)
  _, mid = _expert_play(ENV, SURE, 12)
  assert mid.pulls_K.tolist() == [1, 1, 0] and mid.wins_K.tolist() == [1, 0, 0]
  # On random arms it succeeds far above chance (0.14%) without reading the probabilities.
  success = [ENV.expert_episode(jax.random.key(s))[-1]["info"]["success"] for s in range(24)]
  assert np.mean(success) > 0.1


def test_blind_hides_the_payouts_only():
  blind = make("bandit_series", blind=True)
  seen, hidden = _play(["1", "2", "x", "3", "3"]), []
  state = SURE
  for t, arm in enumerate(["1", "2", "x", "3", "3"]):
    state, obs, reward, *_ = jax.jit(blind.step)(state, blind.action_tokens(arm), jax.random.key(t))
    hidden.append((blind.codec.text(obs), float(reward)))
  assert [h[0] for h in hidden] == ["arm 1: ?", "arm 2: ?", "invalid", "arm 3: ?", "arm 3: ?; round 2/3: new arms 1-3"]
  assert [h[1] for h in hidden] == [t[1] for t in seen]
  assert blind.obs_len == ENV.obs_len and blind.action_len == ENV.action_len
