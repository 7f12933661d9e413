"""reasoning-gym datasets as host environments: construction errors, answer extraction, rewards, turns, seeds."""

import jax
import numpy as np
import pytest

pytest.importorskip("reasoning_gym")
import reasoning_gym  # noqa: E402

from jarl import models  # noqa: E402
from jarl.agent import AgentConfig  # noqa: E402
from jarl.envs.host import RowError, make_host, make_host_collect  # noqa: E402
from jarl.envs.reasoning_gym import EXTRACTORS, ReasoningGymEnv, answer_tag, last_number, whole  # noqa: E402
from jarl.tokenizer import ByteTokenizer  # noqa: E402

CFG = models.preset("tiny", d_model=32, n_layers=1, n_heads=4, n_kv_heads=4, head_dim=8, mlp_dim=64)
FEEDBACK = "That is incorrect. Try again."


def answer(env, seed):
  return env.problem(seed)[1]["answer"]


def test_make_host_builds_any_dataset_by_its_rg_name():
  env = make_host("rg:chain_sum", dataset_kwargs=(("max_terms", 3),), max_turns=2)
  assert isinstance(env, ReasoningGymEnv) and env.dataset == "chain_sum" and env.dataset_kwargs == {"max_terms": 3}
  assert (env.max_turns, env.obs_len, env.action_len, env.split) == (2, 128, 32, "train")
  assert env.instructions == "Give only the final answer."
  assert make_host("rg:letter_counting", dataset_kwargs=dict(min_words=1, max_words=3)).dataset == "letter_counting"
  with pytest.raises(ValueError, match=r"rg:<name>"):
    make_host("nope")


@pytest.mark.parametrize("kwargs, words", [
    (dict(dataset="chain_sums"), ["unknown reasoning-gym dataset 'chain_sums'", "mean ['chain_sum'", "'ab'"]),
    (dict(dataset="chain_sum", dataset_kwargs=dict(max_term=3)), ["max_term", "'max_terms'"]),
    (dict(dataset="chain_sum", dataset_kwargs=dict(min_terms=0)), ["min_terms must be positive"]),
    (dict(dataset="chain_sum", dataset_kwargs=dict(seed=3)), ["seed"]),
    (dict(dataset="chain_sum", answer="first_number"), ["'first_number'", "'last_number'", "'answer_tag'"]),
    (dict(dataset="chain_sum", split="test"), ["'test'", "'train'", "'eval'"]),
    (dict(dataset="chain_sum", max_turns=0), ["max_turns"]),
])
def test_construction_errors_name_the_bad_value_and_what_is_allowed(kwargs, words):
  with pytest.raises(ValueError) as e:
    ReasoningGymEnv(**kwargs)
  for word in words:
    assert word in str(e.value)


@pytest.mark.parametrize("reply, want", [
    ("The answer is 42.", "42"),
    ("8 - 3 = 5", "5"),
    ("It is -17", "-17"),
    ("x = -3.25, so", "-3.25"),
    ("about +7", "7"),
    ("1,234,567 apples", "1234567"),
    ("the list 1,2,3", "3"),
    ("2 then 10-4", "4"),  # a '-' right after a digit is an operator, not a sign
    ("3.14159", "3.14159"),
    ("It is -1,234.5.", "-1234.5"),
    ("no number here", None),
    ("", None),
])
def test_last_number(reply, want):
  assert last_number(reply) == want


@pytest.mark.parametrize("reply, want", [
    ("<answer>12</answer>", "12"),
    ("think <answer>1</answer> again <answer> two words \n</answer> done", "two words"),
    ("<answer>\n</answer>", None),
    ("<answer>cut off", None),
    ("no tag 5", None),
])
def test_answer_tag(reply, want):
  assert answer_tag(reply) == want


def test_whole_and_the_registry():
  assert whole("  yes \n") == "yes" and whole(" \n ") is None
  assert sorted(EXTRACTORS) == ["answer_tag", "last_number", "whole"]
  env = ReasoningGymEnv(dataset="chain_sum", answer="answer_tag")
  assert "<answer>" in env.instructions
  env.reset([0])
  assert env.step([f"5 <answer>{answer(env, 0)}</answer>"], [True]).reward == [1.0]


def test_single_turn_rewards_use_the_dataset_answers():
  env = make_host("rg:chain_sum")
  seeds = [0, 0, 1, 1]
  assert env.reset(seeds) == [env.problem(s)[1]["question"] for s in seeds]
  right, wrong = answer(env, 0), str(int(answer(env, 1)) + 1)
  out = env.step([f"So the result is {right}.", "it is 7 or so", f"{wrong}", "I do not know"], [True] * 4)
  assert out.reward == [1.0, 0.0, 0.0, 0.0]
  assert [i["success"] for i in out.info] == [True, False, False, False]
  assert [i["valid_action"] for i in out.info] == [True, True, True, False]
  assert out.terminated == [True, False, False, False] and out.truncated == [False, True, True, True]
  assert out.obs[1:] == [FEEDBACK] * 3


def test_multi_turn_feedback_then_right_or_out_of_turns():
  env = make_host("rg:chain_sum", max_turns=3, feedback="Wrong.")
  env.reset([5, 5])
  right = answer(env, 5)
  wrong = str(int(right) + 1)
  out = env.step([wrong, wrong], [True, True])
  assert out.obs == ["Wrong.", "Wrong."] and out.reward == [0.0, 0.0]
  assert not any(out.terminated) and not any(out.truncated)
  out = env.step([right, "none"], [True, True])
  assert out.reward == [1.0, 0.0] and out.terminated == [True, False] and out.truncated == [False, False]
  assert out.info[0]["success"] and not out.info[1]["valid_action"]
  out = env.step(["", wrong], [False, True])
  assert out.reward[1] == 0.0 and not out.terminated[1] and out.truncated[1] and not out.info[1]["success"]


def test_score_is_step_without_advancing():
  """A critique's other branch is scored from the same state: score never moves the episode on."""
  env = make_host("rg:chain_sum", max_turns=2, feedback="Wrong.")
  env.reset([5, 5])
  right = answer(env, 5)
  wrong = str(int(right) + 1)
  for _ in range(3):  # however often a row is scored, it stays at its first turn
    scored = env.score([right, wrong], [True, True])
    assert scored.reward == [1.0, 0.0] and scored.terminated == [True, False] and scored.truncated == [False, False]
  out = env.step([wrong, wrong], [True, True])
  assert out.truncated == [False, False]  # the first of 2 turns
  scored = env.score([wrong, right], [True, True])
  assert scored.truncated == [True, False] and scored.reward == [0.0, 1.0]  # scored as the last turn
  assert env.step([wrong, right], [True, True]).truncated == [True, False]


@pytest.mark.parametrize("dataset", ["chain_sum", "letter_counting"])
def test_partial_credit_is_opt_in_and_never_success(dataset):
  """reasoning-gym's default scorer pays len(answer)/len(reply) for a reply containing the answer."""
  strict, lenient = (make_host(f"rg:{dataset}", partial_credit=p) for p in (False, True))
  right = answer(strict, 3)
  padded = right + "0"  # "1" -> "10": contains the answer, is not it
  partial = len(right) / len(padded)
  for env, reward in ((strict, 0.0), (lenient, partial)):
    env.reset([3])
    out = env.step([padded], [True])
    assert out.reward == [pytest.approx(reward)] and out.info[0]["score"] == pytest.approx(partial)
    assert not out.info[0]["success"] and out.info[0]["valid_action"]
  lenient.reset([3])
  assert lenient.step([right], [True]).reward == [1.0]


def test_seeds_and_splits():
  kwargs = dict(dataset_kwargs=dict(min_terms=3, max_terms=4, min_digits=2, max_digits=3))
  train, again, held_out = (make_host("rg:chain_sum", split=split, **kwargs) for split in ("train", "train", "eval"))
  seeds = list(range(6))
  questions = train.reset(seeds)
  assert again.reset(seeds) == questions and train.reset(seeds) == questions
  held = held_out.reset(seeds)
  assert all(a != b for a, b in zip(questions, held))
  for split, got in (("train", questions), ("eval", held)):  # the documented scheme: seed 2s (train), 2s+1 (eval)
    for s in seeds:
      ds = reasoning_gym.create_dataset("chain_sum", seed=2 * s + (split == "eval"), size=1, **kwargs["dataset_kwargs"])
      assert ds[0]["question"] == got[s]


def test_rows_not_live_are_ignored_and_bad_rows_fail_alone():
  env = make_host("rg:chain_sum", max_turns=2)
  first = env.reset([1, 2, -1])
  assert isinstance(first[2], RowError) and "-1" in first[2].message and isinstance(first[1], str)
  out = env.step(["0", "anything", "x"], [True, False, False])
  assert out.obs[1:] == ["", ""] and out.reward[1:] == [0.0, 0.0] and not any(out.terminated[1:] + out.truncated[1:])
  out = env.step(["", "nope", "x"], [False, True, True])  # row 1's first attempt: not its last
  assert out.obs[1] == FEEDBACK and not out.truncated[1] and isinstance(out.obs[2], RowError)


def test_a_raising_scorer_or_extractor_is_a_wrong_answer():
  def boom(reply):
    raise RuntimeError("extractor exploded")

  env = make_host("rg:chain_sum", answer=boom)
  env.reset([0])
  out = env.step(["5"], [True])
  assert out.reward == [0.0] and out.info[0] == dict(success=False, valid_action=False, score=0.0)


def test_host_rollout_on_chain_sum():
  lm = models.create(CFG, seed=0)
  env = make_host("rg:chain_sum", max_turns=2, obs_len=48, action_len=6,
                  dataset_kwargs=dict(max_terms=3, max_digits=1))
  agent = AgentConfig()
  collect = make_host_collect(lm, env, ByteTokenizer(), agent, n_tasks=2, group_size=2)
  traj = jax.device_get(collect(lm.params, jax.random.key(0)))
  assert collect.last_errors == []
  B, T = traj.tokens.shape
  assert B == 4 and traj.valid.shape == traj.loss_mask.shape == traj.reward.shape == (4, T)
  assert traj.turn_reward.shape == traj.turn_live.shape == traj.terminated.shape == (4, 2)
  assert set(np.unique(traj.turn_reward)) <= {0.0, 1.0} and set(np.unique(traj.reward)) <= {0.0, 1.0}
  assert traj.turn_live[:, 0].all() and (np.asarray(traj.terminated | traj.truncated).sum(1) == 1).all()
  np.testing.assert_array_equal(traj.episode["success"], traj.turn_reward.sum(1) == 1)
  assert not traj.episode["host_error"].any()
