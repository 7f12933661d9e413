"""Can a learned reward model stand in for the env's reward? GRPO on a Bradley-Terry RM against GRPO on the env.

    python benchmarks/rm_reward.py                       # 2 variants x seeds 0 1 2 (env reuses the reference runs)
    python benchmarks/rm_reward.py --variants rm --seeds 0

configs/reference.py:frozenlake (tiny model, 4x4 lakes in 6 turns; a warm start on the BFS
expert, then 40 GRPO iterations of 8 tasks x 8 samples at temperature 1.5), two variants with the
same warm start and the same RL budget:

  env  the reference run: GRPO on the env's reward (1 for reaching the goal)
  rm   GRPO on a reward model's score alone (`reward_model.env_weight = 0`): the env's reward is
       never seen by RL. The RM (`jarl.reward_model`) starts from the warm-started policy's backbone
       (`models.reward_from_lm`) with a fresh scalar head and is fitted by Bradley-Terry on
       preference pairs from the warm-started policy's own rollouts: 20 batches of 8 training tasks
       x 8 samples (1280 episodes, the env's return decides each pair of one task's samples, ties
       dropped), 100 steps of 32 pairs. An episode's tokens end with its last action (the last
       observation, which would show the outcome, is not part of it), so the RM must judge whether
       the moves reach the goal. Pair accuracy is measured on pairs from 5 more batches of other tasks.

Held-out evaluation (128 lakes, eval seed 10000 + seed): greedy success by the env after the warm
start and after RL. The rm variant also spends the 1280 pair-collection episodes (as many as 20
RL iterations sample). Reward hacking check: the seed's RM judges pairs sampled from each variant's
final policy (the held-out pairs' tasks; `rm_accuracy_final_policy`). If RL on the RM steered the
policy to where the RM is wrong, its accuracy there falls below its accuracy on the env-trained
policy's pairs, a policy the RM did not shape. Writes benchmarks/results/rm_reward.json (+ .md).
"""

from __future__ import annotations

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from ml_collections import ConfigDict  # noqa: E402

from jarl import learner, models, reward_model  # noqa: E402
from jarl.rollout import make_collect  # noqa: E402

ENV = "frozenlake"
TRAIN_BATCHES, HELD_OUT_BATCHES, RM_STEPS, RM_BATCH, RM_LR = 20, 5, 100, 32, 3e-4
VARIANTS = ("env", "rm")
COLUMNS = ("variant", "seed", "success_before", "success_after", "rm_pairs", "rm_accuracy_before",
           "rm_accuracy_after", "final_policy_pairs", "rm_accuracy_final_policy", "rl_steps", "wall_time_s")


def collect_pairs(run, params, seed: int, first: int, n_batches: int) -> reward_model.PreferencePairs:
  """Preference pairs from `n_batches` rollouts of the training recipe (keys apart from training's and eval's)."""
  rollout = run.config.rollout
  collect = make_collect(run.lm, run.env, run.agent, rollout.n_tasks, rollout.group_size, run.sampling, run.mesh)
  pairs = [reward_model.pairs_from_groups(collect(params, jax.random.key(20_000 + 1000 * seed + first + i)),
                                          rollout.group_size) for i in range(n_batches)]
  return jax.tree.map(lambda *xs: np.concatenate(xs), *pairs)


def train_rm(seed: int, workdir: pathlib.Path, rerun: bool) -> dict:
  """Warm start (RL steps 0), pairs from its rollouts, the RM fitted and saved to workdir/rm (reused
  with its numbers from workdir/rm.json when the warm start is)."""
  config = common.config_module("reference").get_config(ENV)
  config.seed, config.workdir, config.train.steps = seed, str(workdir / "warm_start"), 0
  done = workdir / "rm.json"
  if done.exists() and not rerun and common.finished(config):
    return json.loads(done.read_text())
  common.train_or_reuse(config, rerun)
  run, params = common.restore_final(config)
  train_pairs = collect_pairs(run, params, seed, 0, TRAIN_BATCHES)
  held_out = collect_pairs(run, params, seed, TRAIN_BATCHES, HELD_OUT_BATCHES)
  rm = models.reward_from_lm(run.lm.replace(params=params), seed=seed)
  before = reward_model.evaluate_pairs(rm, rm.params, held_out)
  rm_params, _ = reward_model.train_reward_model(rm, train_pairs, learner.OptimConfig(lr=RM_LR), RM_STEPS,
                                                 RM_BATCH, seed=seed)
  reward_model.save(workdir / "rm", rm, rm_params)
  out = dict(rm_pairs=train_pairs.size, rm_held_out_pairs=held_out.size, rm_accuracy_before=before,
             rm_accuracy_after=reward_model.evaluate_pairs(rm, rm_params, held_out))
  done.write_text(json.dumps(out) + "\n")
  return out


def final_policy_accuracy(config, seed: int, rm_dir: pathlib.Path) -> dict:
  """The RM's pair accuracy on pairs from the finished run's final policy (the held-out batches' tasks)."""
  run, params = common.restore_final(config)
  pairs = collect_pairs(run, params, seed, TRAIN_BATCHES, HELD_OUT_BATCHES)
  rm = reward_model.load(rm_dir)
  return dict(final_policy_pairs=pairs.size, rm_accuracy_final_policy=reward_model.evaluate_pairs(rm, rm.params, pairs))


def run(variant: str, seed: int, workdir: pathlib.Path, rerun: bool) -> dict:
  config = common.config_module("reference").get_config(ENV)
  rm_workdir = workdir.with_name(workdir.name.replace(f"{variant}_seed", "rm_seed"))
  rm = train_rm(seed, rm_workdir, rerun)
  if variant == "env":  # the reference run's own directory (reference.py and search.py read it too)
    row = common.before_after(config, variant, seed, ROOT / "runs" / f"reference_{ENV}_seed{seed}", rerun)
  else:
    config.reward_model = ConfigDict(dict(paths=[str(rm_workdir / "rm")], env_weight=0.0))
    row = dict(common.before_after(config, variant, seed, workdir / "rl", rerun), **rm)
  return dict(row, **final_policy_accuracy(config, seed, rm_workdir / "rm"))


if __name__ == "__main__":
  common.variant_sweep("rm_reward", VARIANTS, run, COLUMNS, description=__doc__.splitlines()[0],
                       notes="Greedy held-out success by the env's judgement on 128 lakes after the warm start "
                             "(before) and after 40 GRPO iterations (after); rm_accuracy: the RM's held-out pair "
                             "accuracy before and after its Bradley-Terry fit; rm_accuracy_final_policy: the same "
                             "seed's fitted RM on final_policy_pairs pairs sampled from the variant's final policy.")
