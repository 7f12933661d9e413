"""One GRPO iteration: jarl's jitted rollout + update against TRL's `GRPOTrainer`, side by side.

    python benchmarks/grpo_step.py                              # tiny and small, 3 timed iterations (~13 min, 2 cores)
    python benchmarks/grpo_step.py --presets tiny --repeats 1   # quicker
    python benchmarks/grpo_step.py --workloads variable         # completions that stop early only

Workload: presets `tiny` and `small` (Llama-style), float32, jarl's random weights in both
systems. One iteration = 8 prompts of 32 tokens x 8 samples (group size 8, batch 64),
each sampled at temperature 1 over the full vocabulary for exactly 64 tokens (the stop
/ EOS id is one past the model's vocabulary, so it is never drawn), a reward from the
completion text (`reward_from_text`: the fraction of the 64 tokens that are the letter
"a"; jarl computes it in the graph, TRL in Python, and the benchmark checks that jarl's
rewards equal the Python function on its decoded completions; on `small`, whose 32000 ids
are mostly not bytes, nearly every reward is 0, which changes no work), GRPO advantages
(group-normalised), the clipped PPO loss (clip 0.2, token mean, no KL term, no
reference model), and ONE AdamW step (lr 1e-5, betas 0.9/0.999, grad clip 1.0) over the
whole batch (1 epoch, 1 minibatch). Both systems reuse the sampling log-probs as the
old policy, so neither runs an extra forward before the update. The run asserts that
every iteration generated 64 completions of 64 tokens after 32-token prompts in both. That is
the "fixed" workload.

The "variable" workload (`--workloads`, each row's `workload`) stops completions as a real task's
answers stop: the preset runs `common.stop_rate_weights` (same shapes and FLOPs; each token is the
stop, now the vocabulary's last id and TRL's EOS, with probability 1 / 21, else uniform), so a
completion's length (stop included) is geometric with mean 21, cut at 64: the median completion
has 15 tokens and ~5% run the whole budget. jarl's decode loop ends when every row has stopped
and TRL's `generate` when every row has emitted EOS; the rewards still divide by 64; mean_len is
the completion tokens per row over the timed iterations, and completion_tokens_per_s and mfu count
those tokens (mfu's training forward/backward as if every row were prompt + mean_len long).

On the variable workload `jarl-packed` (a system of its own, alternating with the others) runs the same
iteration with the update over packed episodes (`AlgoConfig.pack_len` / `pack_rows`, `packing`): the
episodes' valid slots laid end to end into rows of 2 x 96 slots, attention kept within each episode, as
many rows as the expected valid slots fill plus 25% (23 rows for 64 episodes of 32 + ~21 tokens: 4,416
slots instead of 64 x 96 = 6,144), and the output head only at the trained slots (`AlgoConfig.head_len`:
each episode's completion laid end to end into 64 rows of 1.4 x the mean length, 29 slots instead of
64); the row reports the episodes that did not fit (their step is skipped) and the share of packed and
head slots in use.
`jarl-compact` is jarl-packed with live-row compaction in the rollout (`SamplingConfig.compact_every=1`):
the rows still sampling are decoded in the smallest of 64 / 32 / 16 / 8 rows that holds them, gathered
again (checked every step) once they fit a smaller one, so stopped completions stop costing decode compute.

jarl: a single-turn TextEnv defined here, `make_collect` (8 tasks x 8, act budget 64, the
never-sampled stop token) and `make_update` (grpo / ppo_clip) as ONE jitted program
(`learner.make_iteration`, as train.py builds it). TRL: `GRPOTrainer` on
`LlamaForCausalLM` loaded from jarl's params (`save_pretrained`) with a local byte-level
`PreTrainedTokenizerFast`, transformers `generate` (no vLLM), `use_cpu`, float32,
per_device_train_batch_size 64 = num_generations 8 x 8 prompts, gradient_accumulation_steps
1, steps_per_generation 1, num_iterations 1 (one generation and one optimizer step per
trainer step), beta 0, loss_type "dapo" (token mean), no gradient checkpointing,
logging, saving or evaluation.

Timing: TRL runs `trainer.train()` for 1 + repeats steps in its own process; a callback times
each step from `on_step_begin` to `on_step_end` (generation, rewards, forward/backward, clip,
optimizer step: everything of a step but the dataloader's collation of 64 strings), then
waits while this process runs one jarl iteration, so both systems alternate, see the same
machine load, and never share a process (jarl's XLA work ran about 35% slower after TRL had
run in the same process, for reasons not found). jarl's first call (compile) comes before.

Columns: seconds_per_iteration = median over `--repeats` iterations after the first;
completion_tokens_per_s = 64 x 64 / that; compile_s = what the first iteration took
beyond a typical one (XLA compile; torch warm-up); mfu = model FLOPs / time / the matmul
peak measured in the same run, where model FLOPs = 4 x one forward over the 96 tokens of
every row (1 for generation, 3 for the training forward + backward; a forward token
costs 2 x non-embedding params + attention over its context, as in generate.py);
speedup_vs_trl = TRL's seconds / jarl's; load_average = the highest 1-minute load
seen during the timed iterations. The notes split each system's time: jarl's rollout
and update, each jitted and timed alone after the run (`--no-breakdown` skips that);
TRL's generation (its trainer's `_generate`: tokenize, `generate`, decode) within a step.

The TRL process imports this module, so `jarl.host_memory` (imported with jarl: glibc keeps freed
host memory for reuse) applies to TRL's torch allocations too.

Reference (TRL 1.16 on a 2-core CPU of this class): about 1.4 s per iteration on tiny and
about 26 s on small; the target for jarl is >= 2x faster on both.

TRL is not a jarl dependency. Install it (it must not change torch or transformers):

    pip install trl        # 1.x; add --no-deps + its small missing deps if pip wants to move torch

Without it the TRL rows say "skipped" and why. torch's OpenMP threads spin-wait on a
shared machine; this script sets OMP_WAIT_POLICY=PASSIVE unless the environment sets
it (recorded in the results). Results: results/grpo_step.json and .md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its threads; see the docstring

import argparse
import dataclasses
import importlib.metadata
import itertools
import multiprocessing
import pathlib
import statistics
import sys
import tempfile
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

import common
from generate import flops_per_token
from jarl import learner, models
from jarl.agent import AgentConfig, Segment, make_layout
from jarl.envs.base import TextEnv
from jarl.envs.codec import Codec, Tokens
from jarl.rollout import make_collect
from jarl.sampling import SamplingConfig
from jarl.tokenizer import ByteTokenizer

COLUMNS = ("system", "workload", "preset", "batch", "group_size", "completion_tokens", "prompt_len", "mean_len",
           "seconds_per_iteration", "completion_tokens_per_s", "mfu", "compile_s", "speedup_vs_trl", "load_average",
           "note")
TARGET = "a"  # the rewarded letter
STOP = "<stop>"  # jarl's stop token: the id one past the model's vocabulary (fixed) or its last id (variable)
OPTIM = learner.OptimConfig(lr=1e-5, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, max_grad_norm=1.0)
ALGO = learner.AlgoConfig(advantage="grpo", policy_loss="ppo_clip", kl_coef=0.0, epochs=1, minibatches=1)


@dataclasses.dataclass(frozen=True)
class Workload(common.VariableWorkload):
  n_prompts: int = 8
  group_size: int = 8
  prompt_len: int = 32
  completion_tokens: int = 64
  mean_len: float = 0.0  # > 0: the variable workload, completions this long on average (stop included)

  @property
  def batch(self) -> int:
    return self.n_prompts * self.group_size


def reward_from_text(text: str, n_tokens: int) -> float:
  """The reward of both systems: the fraction of the completion's tokens that are the letter TARGET."""
  return text.count(TARGET) / n_tokens


def model_flops(cfg: models.ModelConfig, w: Workload, completion_tokens: float | None = None) -> float:
  """Generation forward + training forward/backward (3x) over every row's prompt + completion
  (`completion_tokens` per row, default the budget)."""
  n = w.prompt_len + (w.completion_tokens if completion_tokens is None else completion_tokens)
  forward = w.batch * sum(flops_per_token(cfg, t) * min(1.0, n - t + 1) for t in range(1, int(np.ceil(n)) + 1))
  return 4 * forward


class StopTokenizer(ByteTokenizer):
  """The ByteTokenizer over the model's vocabulary with STOP at `stop_id`: by default one id past it,
  a stop the model cannot sample, so every completion runs its whole budget (the fixed workload)."""

  def __init__(self, model_vocab: int, stop_id: int | None = None):
    self.stop_id = model_vocab if stop_id is None else stop_id
    super().__init__(max(model_vocab, self.stop_id + 1))

  def encode(self, text: str, add_bos: bool = False) -> list[int]:
    return [self.stop_id] if text == STOP else super().encode(text, add_bos)

  def token_bytes(self, token_id: int) -> bytes:
    return STOP.encode() if token_id == self.stop_id else super().token_bytes(token_id)


class CompletionEnv(TextEnv):
  """Single turn: reset draws a prompt of `obs_len` lowercase letters; step scores the action with
  `reward_from_text` (in the graph: TARGET bytes / action_len) and terminates."""

  def __init__(self, codec: Codec, prompt_len: int, completion_tokens: int):
    super().__init__(codec, obs_len=prompt_len, action_len=completion_tokens, max_turns=1)

  def reset(self, key):
    ids_P = jax.random.randint(key, (self.obs_len,), ord("a"), ord("z") + 1, jnp.int32)
    return jnp.zeros((), jnp.int32), Tokens(ids_P, jnp.int32(self.obs_len))

  def step(self, state, action, key):
    bytes_N, n = self.codec.to_bytes(action, self.action_len * self.codec.max_token_bytes)
    hits = ((bytes_N == ord(TARGET)) & (jnp.arange(bytes_N.shape[0]) < n)).sum()
    reward = (hits / self.action_len).astype(jnp.float32)
    obs = Tokens(jnp.full((self.obs_len,), self.codec.pad_id, jnp.int32), jnp.int32(0))
    info = dict(valid_action=jnp.bool_(True), success=reward > 0)
    return state, obs, reward, jnp.bool_(True), jnp.bool_(False), info

  def expert_action(self, state) -> str:
    return TARGET * self.action_len

  def render(self, state) -> str:
    return ""


def packing(w: Workload) -> dict:
  """The packed update's rows (`AlgoConfig.pack_len` / `pack_rows`): two episodes' slots long, as many as the
  batch's expected valid slots (prompt + mean_len a row) fill, plus 25% for next-fit's gaps and the spread;
  and the output head's (`head_len`): the expected trained slots a row plus 40% (about 3 standard deviations
  of a 64-row batch's total under the geometric lengths)."""
  length = 2 * (w.prompt_len + w.completion_tokens)
  return dict(pack_len=length, pack_rows=int(np.ceil(1.25 * w.batch * (w.prompt_len + w.mean_len) / length)),
              head_len=int(np.ceil(1.4 * w.mean_len)))


# jarl's systems: (update over packed episodes, live-row compaction in decode every this many steps)
JARLS = {"jarl": (False, 0), "jarl-packed": (True, 0), "jarl-compact": (True, 1)}  # (packed, compact_every)


class Jarl:
  """Rollout + GRPO update as one jitted iteration, as train.py builds it; `packed`: the update over
  episodes laid end to end (`packing`); `compact_every`: live-row compaction in decode."""

  def __init__(self, lm: models.LM, w: Workload, name: str = "jarl"):
    """`lm`: the variable workload's stop_rate_weights already (`stop_id`: its last id)."""
    self.w, self.tokenizer = w, StopTokenizer(lm.config.vocab_size, stop_id(lm.config, w))
    self.name = name
    packed, compact_every = JARLS[name]
    env = CompletionEnv(Codec.from_tokenizer(self.tokenizer), w.prompt_len, w.completion_tokens)
    agent = AgentConfig(act_budget=w.completion_tokens, system="", act_header="", stop=STOP)
    self.collect = make_collect(lm, env, agent, w.n_prompts, w.group_size,
                                SamplingConfig(compact_every=compact_every))
    slots = make_layout(agent, env).policy_slots
    algo = dataclasses.replace(ALGO, **packing(w)) if packed else ALGO
    self.update = learner.make_update(lm, algo, OPTIM, w.group_size, policy_slots=slots)
    self.iteration = learner.make_iteration(self.collect, self.update)
    params = jax.tree.map(jnp.copy, lm.params)  # the iteration donates its state; lm.params stay for TRL
    self.state = learner.init_state(lm.replace(params=params), OPTIM, seed=0)
    self.generated = []  # completion tokens of each iteration
    self.row_fractions = []  # the share of budget x batch rows the decode computed, per iteration
    self.packing = []  # the packed update's (episodes that did not fit, share of packed / head slots in use) per step

  def step(self) -> float:
    """One iteration (blocking), checked after the clock stops; returns its seconds."""
    start = time.perf_counter()
    self.state, metrics, traj = jax.block_until_ready(self.iteration(self.state))
    seconds = time.perf_counter() - start
    self.generated.append(self.check(traj))
    ep = traj.episode
    self.row_fractions.append(float(ep["decode_rows"][0] / max(int(ep["decode_budget"][0]) * self.w.batch, 1)))
    if "policy/pack_overflow" in metrics:
      self.packing.append(tuple(float(metrics[f"policy/{k}"]) for k in ("pack_overflow", "pack_fill", "head_fill")))
    return seconds

  def check(self, traj) -> int:
    """Completions after 32-token prompts (fixed: 64 x 64 tokens; variable: each up to its first stop),
    rewards equal to `reward_from_text` on the text before the stop; returns the completion tokens."""
    w = self.w
    tokens, valid, segment, mask = (np.asarray(x) for x in (traj.tokens, traj.valid, traj.segment, traj.loss_mask))
    prompt_B = ((segment == Segment.PROMPT) & valid).sum(1)
    completion_B = mask.sum(1)
    assert mask.shape[0] == w.batch and (prompt_B == w.prompt_len).all(), prompt_B
    assert (completion_B == w.completion_tokens).all() or w.variable, completion_B
    texts = []
    for row, m in zip(tokens, mask):
      ids = row[m].tolist()
      assert w.variable or self.tokenizer.stop_id not in ids
      assert ids.count(self.tokenizer.stop_id) <= 1 and (len(ids) == w.completion_tokens
                                                           or ids[-1] == self.tokenizer.stop_id), ids
      texts.append(self.tokenizer.decode([i for i in ids if i != self.tokenizer.stop_id]))
    expected_B = np.array([reward_from_text(t, w.completion_tokens) for t in texts], np.float32)
    np.testing.assert_allclose(np.asarray(traj.episode["return_"]), expected_B, atol=1e-6)
    return int(completion_B.sum())

  def breakdown(self, repeats: int) -> tuple[float, float]:
    """Median seconds of the rollout alone and of the update alone, each its own jit."""
    key = jax.random.key(1)
    traj = self.collect(self.state.params, key)
    update = jax.jit(self.update)
    rollout = common.time_call(lambda: jax.block_until_ready(self.collect(self.state.params, key)), repeats)
    step = common.time_call(lambda: jax.block_until_ready(update(self.state, traj)), repeats)
    return rollout.median_s, step.median_s


def stop_id(cfg: models.ModelConfig, w: Workload) -> int:
  """The stop / EOS id: one past the vocabulary (never drawn) on the fixed workload, its last id on the variable."""
  return cfg.vocab_size - 1 if w.variable else cfg.vocab_size


def hf_tokenizer(model_vocab: int, eos_id: int | None = None):
  """A byte-level PreTrainedTokenizerFast: ids 0-255 are bytes (no merges), 256 is <pad>, and <eos> is
  `eos_id`, by default `model_vocab`, one past the model's vocabulary, so generation never stops
  early. Ids the tokenizer does not know (257 .. model_vocab - 1) decode to nothing, as in jarl's tokenizer."""
  import tokenizers
  import transformers
  from transformers.convert_slow_tokenizer import bytes_to_unicode
  byte_chars = bytes_to_unicode()
  vocab = {byte_chars[b]: b for b in range(256)} | {"<pad>": 256, "<eos>": model_vocab if eos_id is None else eos_id}
  tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


class Trl:
  """TRL's GRPOTrainer on the weights saved in `workdir`; `run` times each trainer step with a callback."""
  name = "trl"

  def __init__(self, w: Workload, steps: int, workdir: str):
    import datasets
    import torch
    import transformers
    import trl
    self.w, self.steps, self.torch, self.transformers = w, steps, torch, transformers
    self.tokenizer = transformers.AutoTokenizer.from_pretrained(workdir)
    model = transformers.LlamaForCausalLM.from_pretrained(workdir, dtype=torch.float32)
    rng = np.random.default_rng(0)
    letters = list("abcdefghijklmnopqrstuvwxyz")  # 32 letters = 32 tokens, like jarl's prompts
    prompts = ["".join(rng.choice(letters, w.prompt_len)) for _ in range(w.n_prompts * steps)]
    self.generated = []  # completion tokens of every generation batch

    def letter_fraction(prompts, completions, completion_ids, **_):
      """reward_from_text on each completion; also checks the workload."""
      prompt_lens = {len(ids) for ids in self.tokenizer(prompts)["input_ids"]}
      lens = [len(ids) for ids in completion_ids]  # up to and with EOS
      assert len(lens) == w.batch and prompt_lens == {w.prompt_len}, (len(lens), prompt_lens)
      assert set(lens) == {w.completion_tokens} or (w.variable and max(lens) <= w.completion_tokens), set(lens)
      self.generated.append(sum(lens))
      return [reward_from_text(text, w.completion_tokens) for text in completions]

    config = trl.GRPOConfig(
        output_dir=workdir, use_cpu=True, bf16=False, fp16=False, seed=0, max_steps=steps,
        per_device_train_batch_size=w.batch, num_generations=w.group_size, gradient_accumulation_steps=1,
        steps_per_generation=1, num_iterations=1, max_completion_length=w.completion_tokens,
        temperature=1.0, top_p=1.0, top_k=0, beta=0.0, epsilon=0.2, loss_type="dapo", scale_rewards="group",
        learning_rate=OPTIM.lr, lr_scheduler_type="constant", adam_beta1=OPTIM.b1, adam_beta2=OPTIM.b2,
        adam_epsilon=OPTIM.eps, weight_decay=OPTIM.weight_decay, max_grad_norm=OPTIM.max_grad_norm,
        gradient_checkpointing=False, logging_strategy="no", save_strategy="no", eval_strategy="no",
        report_to="none", disable_tqdm=True, dataloader_num_workers=0, log_completions=False)
    assert config.generation_batch_size == w.batch and config.steps_per_generation == 1
    self.trainer = trl.GRPOTrainer(model=model, reward_funcs=letter_fraction, args=config,
                                   processing_class=self.tokenizer,
                                   train_dataset=datasets.Dataset.from_dict({"prompt": prompts}))
    self.generate_s = []  # seconds of each step's generation (tokenize, generate, decode), for the note
    generate = self.trainer._generate

    def timed_generate(*args, **kwargs):
      start = time.perf_counter()
      out = generate(*args, **kwargs)
      self.generate_s.append(time.perf_counter() - start)
      return out

    self.trainer._generate = timed_generate
    self.note = (f"trl {trl.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
                 f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}")

  def run(self, after_step) -> list[float]:
    """trainer.train() for `steps` steps; returns each step's seconds (also in `step_s`), calling
    after_step(i) between them."""
    times = self.step_s = []

    class StepTimer(self.transformers.TrainerCallback):
      def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

      def on_step_end(self, args, state, control, **kwargs):
        times.append(time.perf_counter() - self.start)
        after_step(len(times) - 1)

    self.trainer.add_callback(StepTimer())
    start = time.perf_counter()
    self.trainer.train()
    self.train_wall_s = time.perf_counter() - start
    assert len(times) == self.steps and len(self.generated) == self.steps, (len(times), self.generated)
    assert self.w.variable or set(self.generated) == {self.w.batch * self.w.completion_tokens}, self.generated
    return times


def trl_worker(conn, w: Workload, steps: int, workdir: str) -> None:
  """The TRL process: after each trainer step, send ("step", seconds) and wait for the parent's go;
  at the end send ("done", details), or ("error", traceback) if anything failed."""
  try:
    trl_sys = Trl(w, steps, workdir)

    def after_step(i: int) -> None:
      conn.send(("step", trl_sys.step_s[-1]))
      conn.recv()

    trl_sys.run(after_step)
    conn.send(("done", dict(times=trl_sys.step_s, generate_s=trl_sys.generate_s, note=trl_sys.note,
                            train_wall_s=trl_sys.train_wall_s, generated=trl_sys.generated)))
  except BaseException:  # noqa: BLE001 - reported to the parent, which raises
    conn.send(("error", traceback.format_exc()))


def run_trl(lm: models.LM, w: Workload, steps: int, workdir: str, after_step) -> dict:
  """TRL in its own process on lm's weights, alternating with `after_step(i)` in this one (run after
  each TRL step while the TRL process waits); returns the worker's details (times, generate_s, ...)."""
  models.save_pretrained(lm, workdir)
  hf_tokenizer(lm.config.vocab_size, stop_id(lm.config, w)).save_pretrained(workdir)
  ctx = multiprocessing.get_context("spawn")
  conn, child_conn = ctx.Pipe()
  worker = ctx.Process(target=trl_worker, args=(child_conn, w, steps, workdir), daemon=True)
  worker.start()
  try:
    for i in itertools.count():
      kind, payload = conn.recv()
      if kind == "error":
        raise RuntimeError(f"the TRL process failed:\n{payload}")
      if kind == "done":
        return payload
      after_step(i)
      conn.send("go")
  finally:
    worker.join(timeout=60)
    if worker.is_alive():
      worker.kill()


def measure(preset: str, lm: models.LM, w: Workload, systems: list[str], repeats: int, peak: float,
            breakdown: bool) -> list[dict]:
  """jarl (compiled first; on the variable workload also jarl-packed and jarl-compact), then TRL's steps in their own
  process with one iteration of each jarl system after each timed TRL step, so they alternate on the same
  machine and jarl never shares TRL's process."""
  base = dict(workload=w.name, preset=preset, batch=w.batch, group_size=w.group_size,
              completion_tokens=w.completion_tokens, prompt_len=w.prompt_len)
  jarls = [Jarl(lm, w, name) for name in JARLS if name in systems and (w.variable or name == "jarl")]
  firsts = []
  for jarl in jarls:
    firsts.append(jarl.step())
    print(f"  {jarl.name} {preset}: first iteration (compile) {firsts[-1]:.1f} s", flush=True)
  trl_out, rows, skipped = None, [], None
  if "trl" in systems:
    try:
      import trl  # noqa: F401
    except ImportError as e:
      skipped = f"skipped: {e} (pip install trl; see the docstring)"
      print(f"  trl: {skipped}", flush=True)
  jarl_times, loads = [[] for _ in jarls], []

  def jarl_step(i: int) -> None:
    if i == 0:  # TRL's warm-up step: jarl is already compiled
      return
    loads.append(os.getloadavg()[0])
    for jarl, times in zip(jarls, jarl_times):
      times.append(jarl.step())

  with tempfile.TemporaryDirectory() as workdir:
    if "trl" in systems and skipped is None:
      trl_out = run_trl(lm, w, 1 + repeats, workdir, jarl_step)
    else:
      for i in range(1, repeats + 1):
        jarl_step(i)
  def row(system, timing: common.Timing, generated: list[int], note: str, **extra) -> dict:
    s, mean_len = timing.median_s, statistics.mean(generated) / w.batch  # the timed iterations' completions
    flops = model_flops(lm.config, w, mean_len)
    return dict(system=system, **base, mean_len=mean_len, seconds_per_iteration=s,
                completion_tokens_per_s=sum(generated) / sum(timing.times_s), mfu=flops / s / peak,
                compile_s=timing.compile_s, load_average=max(loads), note=note, seconds=timing.times_s,
                first_call_s=timing.first_s, model_flops=flops, **extra)

  for jarl, first, times in zip(jarls, firsts, jarl_times):
    extra, note = {}, "one jit: make_iteration(make_collect, make_update)"
    extra["decode_row_fraction"] = statistics.mean(jarl.row_fractions[1:1 + len(times)])
    if jarl.packing:
      overflow = int(sum(o for o, _, _ in jarl.packing[1:]))
      fill, head_fill = (statistics.mean(f[i] for f in jarl.packing[1:]) for i in (1, 2))
      extra.update(packing(w), pack_overflow=overflow, pack_fill=fill, head_fill=head_fill)
      note += (f"; update packed: {extra['pack_rows']} rows of {extra['pack_len']} slots ({fill:.0%} in use, "
               f"{overflow} episodes did not fit), output head over {extra['head_len']} slots a row "
               f"({head_fill:.0%} in use)")
    if breakdown:
      rollout_s, update_s = jarl.breakdown(repeats)
      extra.update(rollout_s=rollout_s, update_s=update_s)
      note += f"; alone: rollout {rollout_s:.3g} s + update {update_s:.3g} s"
    rows.append(row(jarl.name, common.Timing(first, times), jarl.generated[1:1 + len(times)], note, **extra))
  if trl_out is not None:
    generate_s, trl_times = statistics.median(trl_out["generate_s"][1:]), trl_out["times"]
    rows.append(row("trl", common.Timing(trl_times[0], trl_times[1:]), trl_out["generated"][1:],
                    f"{trl_out['note']}; generation {generate_s:.3g} s of each step", generate_s=generate_s,
                    train_wall_s=trl_out["train_wall_s"]))
    for r in rows:
      r["speedup_vs_trl"] = rows[-1]["seconds_per_iteration"] / r["seconds_per_iteration"]
  elif skipped is not None:
    rows.append(dict(system="trl", **base, note=skipped))
  for r in rows:
    if "seconds_per_iteration" in r:
      print(f"  {r['system']:11s} {w.name:8s} {preset:5s}: {r['seconds_per_iteration']:7.3f} s/iteration, "
            f"{r['completion_tokens_per_s']:7.0f} completion tokens/s, mfu {r['mfu']:.3f}, "
            f"compile {r['compile_s']:.1f} s", flush=True)
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--presets", default="tiny,small")
  parser.add_argument("--repeats", type=int, default=3, help="timed iterations after the first")
  parser.add_argument("--systems", default="jarl,jarl-packed,jarl-compact,trl",
                      help="jarl-packed: the variable workload's update over packed episodes; jarl-compact: and "
                           "live-row compaction in decode")
  parser.add_argument("--prompts", type=int, default=8)
  parser.add_argument("--group-size", type=int, default=8)
  parser.add_argument("--prompt-len", type=int, default=32)
  parser.add_argument("--completion-tokens", type=int, default=64)
  parser.add_argument("--no-breakdown", action="store_true", help="skip timing jarl's rollout and update alone")
  parser.add_argument("--workloads", default=",".join(common.WORKLOADS), help="fixed and/or variable")
  parser.add_argument("--mean-len", type=float, default=21.0, help="variable: completion tokens per row on average")
  parser.add_argument("--results-dir", default=None, help="write the results here instead of benchmarks/results")
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parser.parse_args(argv)
  names = common.workloads(parser, args.workloads)
  works = [Workload(args.prompts, args.group_size, args.prompt_len, args.completion_tokens,
                    args.mean_len if name == "variable" else 0.0) for name in names]
  systems = args.systems.split(",")
  if args.results_dir:
    common.RESULTS = pathlib.Path(args.results_dir)

  machine = common.machine_info()
  try:
    machine["versions"]["trl"] = importlib.metadata.version("trl")
  except importlib.metadata.PackageNotFoundError:
    pass
  peak = common.matmul_peak_flops()
  machine["matmul_peak_flops"] = peak
  print(f"{machine['cpu']}, {machine['cores']} cores, load {machine['load_average_at_start']}, "
        f"float32 matmul peak {peak / 1e9:.0f} GFLOP/s", flush=True)
  rows = []
  start = time.perf_counter()
  for preset in args.presets.split(","):
    lm = models.create(models.preset(preset, dtype="float32", param_dtype="float32"), seed=0)
    for w in works:
      run_lm = common.stop_rate_weights(lm, stop_id(lm.config, w), w.mean_len) if w.variable else lm
      rows += measure(preset, run_lm, w, systems, args.repeats, peak, not args.no_breakdown)
  machine["benchmark_seconds"] = round(time.perf_counter() - start)
  env = "".join(f"{k}={v} " for k, v in machine["env"].items())
  return common.write_results(
      "grpo_step", machine, rows, COLUMNS,
      notes=f"Command: `{env}python benchmarks/grpo_step.py{''.join(' ' + a for a in argv)}`. See the "
            "docstring of benchmarks/grpo_step.py for the workload, the TRL settings and what each column measures.")


if __name__ == "__main__":
  main()
