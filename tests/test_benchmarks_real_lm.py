"""benchmarks/real_lm.py's measurements on a tiny model: pass@k replays the greedy eval's held-out
problems, and the multi-turn first-attempt / fix rates count what they say."""

import pathlib
import sys

import jax.numpy as jnp
import pytest

from jarl import train
from test_train import small_config

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import real_lm  # noqa: E402


def rg_run(tmp_path):
  c = small_config(tmp_path)
  c.env.name = "rg:chain_sum"
  c.env.kwargs = dict(max_turns=2, obs_len=72, action_len=4,
                      dataset_kwargs=dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1))
  c.agent.act_budget, c.sft.steps = 4, 0
  return train.build(c)


def test_pass_at_k_samples_the_greedy_evals_problems(tmp_path, monkeypatch):
  """(Rollout batches divide the 8 fake devices: 8 problems, chunks of 4 problems x 2 samples.)"""
  run = rg_run(tmp_path)
  seen = []
  reset = type(run.eval_env).reset
  monkeypatch.setattr(type(run.eval_env), "reset", lambda self, seeds: seen.extend(seeds) or reset(self, seeds))
  train.evaluate(run, run.lm.params, 8, seed=7)
  eval_seeds = list(seen)
  seen.clear()
  score = real_lm.pass_at_k(run, run.lm.params, n_tasks=8, eval_seed=7, k=2, chunk=4, n_scored=8)
  assert 0.0 <= score <= 1.0
  assert seen == [s for s in eval_seeds for _ in range(2)]  # the same problems, k rows each


def test_pass_at_k_is_none_for_in_graph_envs(tmp_path):
  run = train.build(small_config(tmp_path))
  assert real_lm.pass_at_k(run, run.lm.params, n_tasks=2, eval_seed=0) is None


def test_sampled_tokens_count_every_episode_of_every_iteration():
  config = small_config("unused")
  config.rollout.n_tasks, config.rollout.group_size = 4, 8
  assert real_lm.sampled_tokens([{"episode/response_tokens": 2.5}, {"episode/response_tokens": 3.0}], config) == 176


def test_first_and_fixed():
  class Traj:
    info = {"success": jnp.asarray([[True, False], [False, True], [False, False], [False, False]])}
    turn_live = jnp.asarray([[True, False], [True, True], [True, True], [True, False]])
    episode = {"success": jnp.asarray([True, True, False, False])}
  first, fixed = real_lm.first_and_fixed(Traj)
  assert (first, fixed) == (0.25, pytest.approx(1 / 3))


def test_constant_answer_control(tmp_path):
  run = rg_run(tmp_path)
  answer, accuracy = real_lm.constant_answer(run, n_tasks=16, eval_seed=7, n_train=200)
  train_answers = [str(run.env.problem(s)[1]["answer"]) for s in range(200)]
  assert train_answers.count(answer) == max(train_answers.count(a) for a in train_answers)
  held_out = [run.eval_env.problem(s)[1]["answer"] for s in real_lm.eval_seeds(16, 7)]
  assert accuracy == sum(str(a) == answer for a in held_out) / 16
  assert real_lm.constant_answer(train.build(small_config(tmp_path / "in_graph")), 2, 0) == (None, None)
