"""Reward models: pairs from env returns, Bradley-Terry training, RM and judge rewards vs slow references."""

import functools
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jarl import envs, learner, models, reward_model as rmod
from jarl.agent import AgentConfig
from jarl.rollout import make_collect
import toy_env  # noqa: F401  (registers guess_digit)

CFG = models.ModelConfig(vocab_size=512, d_model=32, n_layers=1, n_heads=4, n_kv_heads=4, head_dim=8, mlp_dim=64)
ENV = envs.make("guess_digit", max_turns=2)
AGENT = AgentConfig(act_budget=1, system="")
N_TASKS, G = 128, 2
KEY = jax.random.key(7)


def _oracle_vs_random(key, n_tasks, group_size):
  """Per task: sample 0 always answers the secret (return 1), the others guess digits at random."""
  task_keys = jnp.repeat(jax.random.split(jax.random.split(key, 3)[0], n_tasks), group_size, axis=0)
  secret_B = jax.vmap(ENV.reset)(task_keys)[0].secret
  oracle_B = jnp.arange(n_tasks * group_size) % group_size == 0

  def choose(logits_BxV, key):
    digit_B = jnp.where(oracle_B, secret_B, jax.random.randint(key, secret_B.shape, 0, 10))
    return (ord("0") + digit_B).astype(jnp.int32)
  return choose


@pytest.fixture(scope="module")
def rollout():
  lm = models.create(CFG, seed=0)
  collect = make_collect(lm, ENV, AGENT, n_tasks=N_TASKS, group_size=G, choose=_oracle_vs_random(KEY, N_TASKS, G))
  traj = jax.device_get(collect(lm.params, KEY))
  assert traj.episode["success"][0::G].all()  # the oracle
  return lm, collect, traj


def test_pairs_choose_the_higher_env_return(rollout):
  _, _, traj = rollout
  a, b = jax.tree.map(lambda x: x[0::2], traj), jax.tree.map(lambda x: x[1::2], traj)
  pairs = rmod.pairs_from_trajectories(a, b)
  ret_a, ret_b = a.episode["return_"], b.episode["return_"]
  keep = np.flatnonzero(ret_a != ret_b)
  assert pairs.size == len(keep) > 0 and (ret_a[keep] > ret_b[keep]).all()  # oracle rows always win here
  for p, row in enumerate(keep):
    for k in rmod.FIELDS:
      np.testing.assert_array_equal(pairs.chosen[k][p], getattr(a, k)[row])
      np.testing.assert_array_equal(pairs.rejected[k][p], getattr(b, k)[row])
  swapped = rmod.pairs_from_trajectories(b, a)  # the winner is chosen whichever side it is on
  chex.assert_trees_all_equal(swapped, pairs)
  by_group = rmod.pairs_from_groups(traj, G)  # G = 2: the same pairs
  chex.assert_trees_all_equal(by_group, pairs)


def test_bradley_terry_training_separates_held_out_pairs(rollout):
  _, _, traj = rollout
  pairs = rmod.pairs_from_groups(traj, G)
  n_train = pairs.size * 2 // 3
  train, held_out = pairs.take(slice(0, n_train)), pairs.take(slice(n_train, None))
  rm = models.create(CFG, seed=1, kind="reward")
  t0 = time.time()
  before = rmod.evaluate_pairs(rm, rm.params, held_out)
  params, history = rmod.train_reward_model(rm, train, learner.OptimConfig(lr=3e-3), steps=60, batch_size=32,
                                            seed=0, progress=False)
  after = rmod.evaluate_pairs(rm, params, held_out)
  print(f"\n{train.size} train / {held_out.size} held-out pairs; held-out accuracy {before:.3f} -> {after:.3f}; "
        f"loss {history[0]['rm/loss']:.3f} -> {history[-1]['rm/loss']:.3f}; {time.time() - t0:.1f}s")
  assert after >= 0.9
  assert history[-1]["rm/loss"] < 0.5 * history[0]["rm/loss"]
  assert history[-1]["rm/skipped_updates"] == 0
  assert all(np.isfinite(list(m.values())).all() for m in history)
  chex.assert_trees_all_equal(rm.params, models.create(CFG, seed=1, kind="reward").params)  # not donated away


def test_reward_from_lm_reads_the_policy_backbone():
  lm = models.create(CFG, seed=5)
  rm = models.reward_from_lm(lm, seed=6)
  tokens = jax.random.randint(jax.random.key(0), (2, 9), 0, CFG.vocab_size)
  valid = jnp.arange(9)[None, :] < jnp.array([[9], [5]])
  h_BxTxD, _ = lm.apply(lm.params, tokens, None, None, valid, method="hidden")
  head = rm.params["head"]
  expected_B = (h_BxTxD @ head["kernel"] + head["bias"])[jnp.arange(2), jnp.array([8, 4])]
  np.testing.assert_allclose(rm.apply(rm.params, tokens, None, valid), expected_B, rtol=1e-5, atol=1e-5)
  assert "lm_head" not in rm.params["backbone"] and float(jnp.std(head["kernel"])) > 0
  with pytest.raises(ValueError, match="'lm' handle"):
    models.reward_from_lm(rm)


@functools.lru_cache
def _forward(lm):
  """lm.apply on one packed row (jitted: episodes here have only a few distinct lengths)."""
  return jax.jit(lambda params, ids_1xL: lm.apply(params, ids_1xL))


def _rm_score_slow(rm, params, tokens, positions, valid):
  """One row, its valid tokens only (packed, default positions 0..L-1), through the RM: the score at its last token."""
  assert (positions[valid] == np.arange(valid.sum())).all()
  return float(_forward(rm)(params, jnp.asarray(tokens[valid])[None])[0])


def _placed_slow(traj, score_B, env_weight):
  """numpy: env rewards scaled, score on the last live turn and at that turn's last sampled slot."""
  reward, turn_reward = env_weight * traj.reward.copy(), env_weight * traj.turn_reward.copy()
  for b in range(traj.tokens.shape[0]):
    n = np.flatnonzero(traj.turn_live[b]).max()
    end = np.flatnonzero(traj.loss_mask[b] & (traj.turn[b] == n)).max()
    turn_reward[b, n] += score_B[b]
    reward[b, end] += score_B[b]
  return reward, turn_reward, env_weight * traj.episode["return_"] + score_B


def _check_placed(got, traj, score_B, env_weight):
  reward, turn_reward, return_ = _placed_slow(traj, score_B, env_weight)
  np.testing.assert_allclose(got.reward, reward, atol=1e-5)
  np.testing.assert_allclose(got.turn_reward, turn_reward, atol=1e-5)
  np.testing.assert_allclose(got.episode["return_"], return_, atol=1e-5)
  np.testing.assert_allclose(got.episode["model_score"], score_B, atol=1e-5)
  np.testing.assert_array_equal(got.episode["env_return"], traj.episode["return_"])
  np.testing.assert_allclose(got.reward.sum(1), got.episode["return_"], atol=1e-5)


def _small(traj, rows=12):
  return jax.tree.map(lambda x: x[:rows], traj)


@pytest.mark.parametrize("jit", [False, True])
def test_rm_reward_goes_to_the_last_played_turn(rollout, jit):
  _, _, traj = rollout
  traj = _small(traj)
  assert set(traj.episode["turns"]) == {1, 2}  # episodes that end at different turns
  rm = models.create(CFG, seed=2, kind="reward")
  reward = rmod.make_rm_reward([(rm, rm.params)])
  got = jax.device_get((jax.jit(reward) if jit else reward)(traj, None))
  score_B = np.array([_rm_score_slow(rm, rm.params, traj.tokens[b], traj.positions[b], traj.valid[b])
                      for b in range(traj.tokens.shape[0])])
  assert np.abs(score_B).min() > 1e-4
  _check_placed(got, traj, score_B, env_weight=1.0)


def test_several_weighted_rms_and_env_weight(rollout):
  _, _, traj = rollout
  traj = _small(traj)
  rms = [models.create(CFG, seed=s, kind="reward") for s in (3, 4)]
  weights, env_weight = (0.5, -2.0), 0.25
  reward = jax.jit(rmod.make_rm_reward([(rm, rm.params) for rm in rms], weights, env_weight=env_weight))
  got = jax.device_get(reward(traj, None))
  score_B = sum(w * np.array([_rm_score_slow(rm, rm.params, traj.tokens[b], traj.positions[b], traj.valid[b])
                              for b in range(traj.tokens.shape[0])]) for rm, w in zip(rms, weights))
  _check_placed(got, traj, score_B, env_weight)
  with pytest.raises(ValueError, match="one weight per reward model"):
    rmod.make_rm_reward([(rm, rm.params) for rm in rms], (1.0,))


def test_judge_scores_match_a_forward_over_the_concatenated_prompt(rollout):
  lm, _, traj = rollout
  traj = _small(traj)
  codec, prompt, weight = ENV.codec, "\nIs this answer correct? ", 0.7
  prompt_ids, yes, no = codec.encode(prompt), int(codec.encode("y")[0]), int(codec.encode("n")[0])
  judge = models.create(CFG, seed=5)
  fixed = rmod.make_judge_reward(judge, judge.params, codec, prompt, weight=weight, env_weight=0.5)
  got = jax.device_get(jax.jit(fixed)(traj, lm.params))  # a fixed judge ignores the policy params
  logp_BxV, forward = [], _forward(judge)
  for b in range(traj.tokens.shape[0]):  # slow: packed episode tokens + prompt, default positions
    ids = np.concatenate([traj.tokens[b][traj.valid[b]], prompt_ids])
    logits, _ = forward(judge.params, jnp.asarray(ids)[None])
    logp_BxV.append(np.asarray(jax.nn.log_softmax(logits[0, -1])))
  logp_BxV = np.stack(logp_BxV)
  score_B = weight * (logp_BxV[:, yes] - logp_BxV[:, no])
  _check_placed(got, traj, score_B, env_weight=0.5)
  # the policy as its own judge: the params come with the call
  self_judge = jax.jit(rmod.make_judge_reward(judge, None, codec, prompt, weight=weight, env_weight=0.5))
  chex.assert_trees_all_close(self_judge(traj, judge.params), got, atol=1e-5)
  prob = rmod.make_judge_reward(judge, judge.params, codec, prompt, env_weight=0.0, prob=True)(traj)
  np.testing.assert_allclose(prob.episode["return_"], np.exp(logp_BxV[:, yes]), rtol=1e-4)
  with pytest.raises(ValueError, match="exactly one token"):
    rmod.make_judge_reward(judge, None, codec, yes="yes")


def test_iteration_applies_the_reward_between_rollout_and_update(rollout):
  lm, collect, _ = rollout
  optim = learner.OptimConfig(lr=1e-3)
  update = learner.make_update(lm, learner.AlgoConfig(advantage="grpo"), optim, group_size=G)
  rm = models.create(CFG, seed=6, kind="reward")
  rm_reward = rmod.make_rm_reward([(rm, rm.params)], env_weight=0.5)
  judge = rmod.make_judge_reward(lm, None, ENV.codec, weight=0.1)  # the current policy judges itself
  iteration = learner.make_iteration(collect, update, reward=lambda traj, p: judge(rm_reward(traj, p), p))
  state = learner.init_state(lm, optim)
  state, metrics, traj = iteration(state)
  assert int(state.step) == 1
  assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(metrics))
  ep = jax.device_get(traj.episode)
  assert np.abs(ep["model_score"]).min() > 0
  np.testing.assert_allclose(ep["return_"], 0.5 * ep["env_return"] + ep["model_score"], atol=1e-5)
  np.testing.assert_allclose(float(metrics["episode/return"]), ep["return_"].mean(), rtol=1e-5)


def test_lora_reward_model_trains_adapters_and_head_and_round_trips(rollout, tmp_path):
  _, _, traj = rollout
  pairs = jax.device_get(rmod.pairs_from_groups(traj, G).take(slice(0, 16)))
  rm = models.create(CFG, seed=1, kind="reward")
  with pytest.raises(ValueError, match="also_train"):
    rmod.make_rm_step(models.lora.add(rm, models.LoRAConfig(rank=2)), learner.OptimConfig())
  rm_lora = models.lora.add(rm, models.LoRAConfig(rank=2, also_train=("head",)), seed=0)
  params, history = rmod.train_reward_model(rm_lora, pairs, learner.OptimConfig(lr=1e-2), steps=2, batch_size=8,
                                            progress=False)
  trainable, frozen = models.lora.split(rm_lora, params)
  chex.assert_trees_all_equal(frozen, models.lora.split(rm_lora, rm_lora.params)[1])
  assert np.abs(np.asarray(trainable["head"]["kernel"]) - np.asarray(rm_lora.params["head"]["kernel"])).max() > 0
  rmod.save(tmp_path / "rm", rm_lora, params)
  loaded = rmod.load(tmp_path / "rm")
  assert loaded.kind == "reward" and loaded.lora is None and loaded.config == CFG
  args = (traj.tokens[:4], traj.positions[:4], traj.valid[:4])
  np.testing.assert_allclose(rmod.score(loaded, loaded.params, *args), rmod.score(rm_lora, params, *args), atol=1e-5)
  # the `reward_model` config section: the saved RMs, weighted, as a reward
  small = _small(traj, 4)
  reward = rmod.from_config(dict(paths=[str(tmp_path / "rm")] * 2, weights=[1.0, 0.5], env_weight=0.0))
  np.testing.assert_allclose(reward(small, None).episode["return_"], 1.5 * rmod.score(loaded, loaded.params, *args),
                             rtol=1e-5)
  assert rmod.from_config(None) is None and rmod.from_config(dict(paths=[])) is None
  with pytest.raises(ValueError, match="unknown reward_model keys"):
    rmod.from_config(dict(path="x"))
