"""Per-segment credit: both branches of every turn in the rollout, credits against slow references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jarl import envs, learner, models
from jarl.agent import AgentConfig, Segment, make_layout
from jarl.algos import credit
from jarl.rollout import make_collect
import toy_env  # noqa: F401  (registers guess_digit)

CFG = models.ModelConfig(vocab_size=512, d_model=32, n_layers=1, n_heads=4, n_kv_heads=4, head_dim=8, mlp_dim=64)
ENV = envs.make("guess_digit", max_turns=2)
AGENT = AgentConfig(act_budget=2, critique_budget=2, system="")
G = 4
SMALL = jnp.asarray([ord(c) for c in "0123456789yn\n"])


def _digits(logits_BxV, key):
  """A scripted policy over digits, the verdict letters and the stop token (whatever is allowed)."""
  ok_BxS = jnp.isfinite(logits_BxV[:, SMALL])
  return SMALL[jnp.argmax(jnp.where(ok_BxS, jax.random.gumbel(key, ok_BxS.shape), -jnp.inf), axis=1)]


@pytest.fixture(scope="module")
def rollout():
  lm = models.create(CFG, seed=0)
  key = jax.random.key(1)
  traj = make_collect(lm, ENV, AGENT, n_tasks=8, group_size=G, choose=_digits)(lm.params, key)
  return lm, key, jax.device_get(traj)


def _segment_text(traj, b, turn, segment):
  on = traj.valid[b] & traj.loss_mask[b] & (traj.turn[b] == turn) & (traj.segment[b] == segment)
  return bytes(int(t) for t in traj.tokens[b][on] if t < 256).decode().rstrip("\n")


def test_both_branches_are_stepped_from_the_turn_state(rollout):
  _, key, traj = rollout
  a, live, revise = traj.attempts, traj.turn_live, traj.verdict == 1
  assert revise[live].any() and (~revise[live]).any(), "need both verdicts"
  chosen = np.where(revise, a["revised_reward"], a["first_reward"])
  np.testing.assert_array_equal(np.where(live, chosen, 0), traj.turn_reward)
  # Turn 0 by hand: reset each task from the rollout's keys and step the sampled texts.
  task_keys = jnp.repeat(jax.random.split(jax.random.split(key, 3)[0], 8), G, axis=0)
  reset, step = ENV.jitted
  checked = 0
  for b in range(traj.tokens.shape[0]):
    state, _ = reset(task_keys[b])
    texts = {"first": _segment_text(traj, b, 0, Segment.ACT)}
    if revise[b, 0]:
      texts["revised"] = _segment_text(traj, b, 0, Segment.REVISE)
    else:  # an accepted turn keeps no REVISE tokens: its revision was dropped from the context
      assert not (traj.loss_mask[b] & (traj.turn[b] == 0) & (traj.segment[b] == Segment.REVISE)).any()
    for name, text in texts.items():
      reward = step(state, ENV.action_tokens(text), jax.random.key(0))[2]
      assert float(reward) == a[f"{name}_reward"][b, 0], (b, name, text)
      checked += 1
  assert checked > traj.tokens.shape[0]


def test_no_attempts_without_a_critique():
  lm = models.create(CFG, seed=0)
  traj = make_collect(lm, ENV, AgentConfig(act_budget=2), n_tasks=2, group_size=2)(lm.params, jax.random.key(0))
  assert traj.attempts == {}
  with pytest.raises(ValueError, match="needs a critique"):
    credit.counterfactual(traj, group_size=2)


def _hand_traj(rng, B=8, N=3):
  """Random per-turn records with attempts (the credits read only these)."""
  live = np.cumprod(rng.random((B, N)) < 0.8, axis=1).astype(bool)
  live[:, 0] = True
  verdict = np.where(live, rng.integers(0, 2, (B, N)), -1)
  first, second = (rng.integers(0, 2, (B, N)).astype(bool) & live for _ in range(2))
  attempts = dict(first_reward=first.astype(np.float32) * rng.uniform(0.5, 1, (B, N)).astype(np.float32),
                  revised_reward=second.astype(np.float32), first_success=first, revised_success=second)
  return _Traj(turn_live=live, verdict=verdict, attempts=attempts)


class _Traj:
  def __init__(self, **kw):
    self.__dict__.update(kw)


def _ref_group_centered(x, live, G, scale):
  out = np.zeros_like(x)
  for g in range(x.shape[0] // G):
    for n in range(x.shape[1]):
      rows = [b for b in range(g * G, g * G + G) if live[b, n]]
      if rows:
        vals = x[rows, n]
        adv = vals - vals.mean()
        out[rows, n] = adv / (vals.std() + 1e-6) if scale else adv
  return out


def test_credits_against_slow_references():
  rng = np.random.default_rng(0)
  t = _hand_traj(rng)
  a, live, revise = t.attempts, t.turn_live, t.verdict == 1
  r1, r2 = a["first_reward"], a["revised_reward"]
  np.testing.assert_allclose(credit.first_attempt(t, group_size=4), _ref_group_centered(r1, live, 4, True),
                             atol=1e-5)
  np.testing.assert_allclose(credit.score(t, group_size=4, alpha=0.5),
                             _ref_group_centered(r2 + 0.5 * (r2 - r1), live, 4, False), atol=1e-5)
  expected = np.zeros(live.shape)
  for b, n in zip(*np.nonzero(live)):
    gain = r2[b, n] - r1[b, n]
    right = revise[b, n] == (not a["first_success"][b, n])
    expected[b, n] = (gain if revise[b, n] else -gain) + 0.3 * (1 if right else -1) - 0.1 * revise[b, n]
  np.testing.assert_allclose(credit.counterfactual(t, group_size=4, calibration=0.3, revise_cost=0.1), expected,
                             atol=1e-6)


def test_critique_metrics_by_hand():
  rng = np.random.default_rng(1)
  t = _hand_traj(rng)
  m = jax.device_get(credit.critique_metrics(t))
  a, live, revise = t.attempts, t.turn_live, (t.verdict == 1) & t.turn_live
  first, second = a["first_success"], a["revised_success"]
  turns = [(b, n) for b, n in zip(*np.nonzero(live))]
  final = [second[b, n] if revise[b, n] else first[b, n] for b, n in turns]
  assert m["final_success"] == pytest.approx(np.mean(final))
  assert m["first_success"] == pytest.approx(np.mean([first[b, n] for b, n in turns]))
  flips = [revise[b, n] and not first[b, n] and second[b, n] for b, n in turns]
  assert m["wrong_to_right"] == pytest.approx(np.mean(flips))
  wrong = [(b, n) for b, n in turns if not first[b, n]]
  assert m["verdict_recall"] == pytest.approx(np.mean([revise[b, n] for b, n in wrong]))
  revised = [(b, n) for b, n in turns if revise[b, n]]
  assert m["verdict_precision"] == pytest.approx(np.mean([not first[b, n] for b, n in revised]))


def test_apply_writes_each_segments_credit_on_its_tokens(rollout):
  _, _, traj = rollout
  base_BxT = np.where(traj.loss_mask, 7.0, 0.0)
  spec = learner.AlgoConfig(segment_credit={"verdict": "counterfactual", "act": "first_attempt"}).segment_credit
  out = np.asarray(credit.apply(traj, jnp.asarray(base_BxT), spec, G))
  cf, fa = np.asarray(credit.counterfactual(traj, group_size=G)), np.asarray(credit.first_attempt(traj, group_size=G))
  for b, s in zip(*np.nonzero(traj.loss_mask)):
    seg, n = traj.segment[b, s], traj.turn[b, s]
    want = {Segment.VERDICT: cf[b, n], Segment.ACT: fa[b, n]}.get(Segment(seg), 7.0)
    assert out[b, s] == pytest.approx(want), (b, s, Segment(seg))
  assert (out[~traj.loss_mask] == 0).all()


def test_update_with_segment_credit_and_metrics(rollout):
  lm, _, traj = rollout
  optim = learner.OptimConfig(lr=1e-2)
  algo = learner.AlgoConfig(segment_credit={"verdict": {"name": "counterfactual", "calibration": 0.5},
                                            "revise": "score"}, filter_zero_variance=True)
  state, metrics = jax.jit(learner.make_update(lm, algo, optim, G, make_layout(AGENT, ENV).policy_slots))(
      learner.init_state(lm, optim), traj)
  assert np.isfinite(float(metrics["policy/entropy"])) and float(metrics["policy/grad_norm"]) > 0
  assert not np.allclose(jax.tree.leaves(state.params)[0], jax.tree.leaves(lm.params)[0])
  rollout_metrics = jax.device_get(learner.rollout_metrics(traj))
  assert 0 <= rollout_metrics["critique/verdict_precision"] <= 1 and "critique/wrong_to_right" in rollout_metrics
  with pytest.raises(ValueError, match="unknown segment 'feedback'"):
    learner.AlgoConfig(segment_credit={"feedback": "score"})
  with pytest.raises(ValueError, match="unknown segment credit 'nope'"):
    learner.AlgoConfig(segment_credit={"act": "nope"})


def test_warm_start_revision_examples():
  from jarl.sft import expert_batch
  layout = make_layout(AGENT, ENV)
  data = expert_batch(layout, n_episodes=6, seed=0, revise_fraction=1.0)
  for b in range(6):
    tokens, loss = data["tokens"][b][data["valid"][b]], data["loss_mask"][b][data["valid"][b]]
    text = bytes(int(t) for t in tokens if t < 256).decode()
    first, verdict, revised = (text.split(h)[1].split("\n")[0] for h in ("act: ", "ok? ", "revise: "))
    assert verdict.startswith("n")  # the verdict says revise (with no loss on it)
    trained = bytes(int(t) for t in tokens[loss] if t < 256).decode()
    assert trained == revised + "\n"  # only the revision is trained on in such turns
    assert first.isdigit() and revised.isdigit()
  with pytest.raises(ValueError, match="need a critique"):
    expert_batch(make_layout(AgentConfig(act_budget=2), ENV), n_episodes=2, seed=0, revise_fraction=1.0)


PLAN_AGENT = AgentConfig(plan_budget=3, act_budget=2, system="")


@pytest.fixture(scope="module")
def plan_rollout():
  lm = models.with_value_head(models.create(CFG, seed=0))
  traj = make_collect(lm, ENV, PLAN_AGENT, n_tasks=4, group_size=G, choose=_digits)(lm.params, jax.random.key(2))
  return lm, jax.device_get(traj)


def test_plan_value_credit_against_a_slow_reference(plan_rollout):
  _, traj = plan_rollout
  values = np.random.default_rng(3).normal(size=traj.tokens.shape).astype(np.float32)
  got = np.asarray(credit.plan_value(traj, group_size=G, values_BxT=jnp.asarray(values)))
  B, N = traj.turn_reward.shape
  checked = 0
  for b in range(B):
    for n in range(N):
      slots = np.nonzero(traj.loss_mask[b] & (traj.segment[b] == Segment.PLAN) & (traj.turn[b] == n))[0]
      if not traj.turn_live[b, n] or not len(slots):
        assert got[b, n] == 0
        continue
      before = max(s for s in range(slots[0]) if traj.valid[b, s])  # the slot that predicted the plan
      assert got[b, n] == pytest.approx(values[b, slots[-1]] - values[b, before])
      checked += 1
  assert checked >= B  # every row planned on its first turn


def test_plan_value_credit_needs_a_critic(plan_rollout):
  lm, traj = plan_rollout
  optim, slots = learner.OptimConfig(lr=1e-2), make_layout(PLAN_AGENT, ENV).policy_slots
  with pytest.raises(ValueError, match="reads the critic"):
    learner.make_update(lm, learner.AlgoConfig(segment_credit={"plan": "plan_value"}), optim, G, slots)
  with pytest.raises(ValueError, match="reads the critic"):
    credit.apply(traj, jnp.zeros(traj.tokens.shape), credit.spec({"plan": "plan_value"}), G)
  algo = learner.AlgoConfig(advantage="gae_turns", segment_credit={"plan": "plan_value"})
  state, metrics = jax.jit(learner.make_update(lm, algo, optim, G, slots))(learner.init_state(lm, optim), traj)
  assert np.isfinite(float(metrics["policy/value_loss"])) and float(metrics["policy/grad_norm"]) > 0
