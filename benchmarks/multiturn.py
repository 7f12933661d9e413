"""Multi-turn rollout throughput: jarl's whole-episode jit vs a Python agent loop over transformers' `generate`.

    python benchmarks/multiturn.py                              # tiny and small, 3 repeats (~3 min on 2 cores)
    python benchmarks/multiturn.py --presets tiny --repeats 1   # a quick look
    python benchmarks/multiturn.py --workloads variable         # only the variable-length one

Workload (the same in both systems, same weights): 64 episodes run as one batch, 4 turns
each, 16 sampled tokens per turn (temperature 1 over the full vocabulary, no early stop:
the stop token lies outside the model's vocabulary), an 8-token observation after every
turn but the last, a 32-token prompt (24 system + 8 first observation); presets `tiny`
and `small`, float32, random weights, byte tokens (ids < 256, valid in both vocabularies).
The env (`DigitCount`, defined here) counts the ASCII digits of the action text and
answers "n=DD t=T" (reward = digits / 16); it truncates after 4 turns. That is the "fixed" workload.

The "variable" workload (`--workloads`, each row's `workload`) has the spread of a real agent's
episodes: the preset runs `common.stop_rate_weights` (same shapes and FLOPs; each sampled token is
the stop, now the vocabulary's last id, with probability 1 / 8, else uniform), so a turn's reply
stops after a geometric number of tokens (mean 8 with the stop, cut at 16), and a reply of at most
3 tokens before its stop ends the episode (DigitCount terminates: a short final answer), which
happens on 41% of turns: about 41% / 24% / 14% / 21% of episodes play 1 / 2 / 3 / 4 turns. The
python loop generates with the stop as EOS (a row's reply ends at its first stop; `generate` runs
until every row of the call has stopped) and steps only the episodes still running, so its batch
shrinks turn by turn; jarl runs every row in one program, ends a turn's decode loop when every row
has stopped and skips turns in which every episode has ended.
On the variable workload `jarl-compact` is jarl with live-row compaction (`SamplingConfig.compact_every=1`):
the rows still sampling (their episode running, their reply not stopped) are decoded in the smallest of
64 / 32 / 16 / 8 rows that holds them, gathered again (checked every step) once they fit a smaller one;
its `decode_row_fraction` (json and table; jarl's too) is the share of budget x batch rows the decode
computed.
  jarl         `make_collect`: reset, prompt, 4 x (16 sampled slots, env step, observation
               forced as one chunk) in ONE jitted program with one KV cache.
  python-loop  what RAGEN / verl-style agent loops do: per turn, one `generate` call on the
               full left-padded history (attention mask, max_new_tokens = min_new_tokens =
               16, do_sample=True), then per episode decode the tokens to text, step a
               Python twin of the env, encode the observation and append it to the history.

Columns: episodes_per_s = episodes / seconds; tokens_per_s = generated tokens (fixed: episodes x
turns x gen_tokens_per_turn; variable: the tokens the calls sampled, stops included) / seconds;
mean_turns / mean_reply = turns per episode / tokens per reply over the timed calls; seconds = the median over `--repeats` whole
batches of episodes (after a warm-up; the systems take turns so that both see the same
load); compile_s = what jarl's first call took beyond a typical one (XLA compilation);
speedup_vs_python_loop = episodes_per_s / the python loop's; load_average = the highest
1-minute load seen during the timed calls. jarl rows also record (json only) where their
time goes, from the bare model forwards timed alone at this batch and cache length
(total_len slots): ms_per_decode_step (one T=1 forward), ms_per_obs_chunk / ms_per_system_chunk
(one forced chunk of feedback_len slots / of the instructions at one row: the prompt is the instructions
prefilled once and copied to every row, then the first observation; the empty ACT header runs no forward);
decode_s and forced_s = those times the number of such forwards in one rollout; other_s = seconds - both (sampling, slot writes, env).

Both systems run in one process, so `jarl.host_memory` (glibc keeps freed host memory for
reuse) applies to the python loop's torch allocations too.

Reference (the issue, this machine class, 2 cores): the python loop does about 52
episodes/s on tiny and 6 on small; the target is jarl >= 5x on tiny and >= 3x on small.

Threads as in benchmarks/generate.py: torch's default (one per core). OMP_WAIT_POLICY
defaults to PASSIVE here (set it to override): on a shared machine torch's spin-waiting
OpenMP threads stalled the python loop 7-90x (1.3-17 s instead of 0.19 s for 4 episodes).
The results record the setting. Results: results/multiturn.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import pathlib
import sys
import tempfile
import time

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads OpenMP: before any torch import
import common  # noqa: E402
from jarl import models  # noqa: E402
from jarl.agent import AgentConfig, Layout, Segment, header_slots, make_layout  # noqa: E402
from jarl.envs.base import TextEnv  # noqa: E402
from jarl.envs.codec import Codec, Tokens  # noqa: E402
from jarl.rollout import make_collect  # noqa: E402
from jarl.sampling import SamplingConfig  # noqa: E402
from jarl.tokenizer import ByteTokenizer  # noqa: E402

COMPACT_EVERY = 1  # jarl-compact's decode steps between checks for a smaller bucket (B, B/2, B/4, B/8)
COLUMNS = ("system", "workload", "preset", "batch", "episodes", "turns", "gen_tokens_per_turn", "obs_tokens_per_turn",
           "prompt_len", "mean_turns", "mean_reply", "episodes_per_s", "tokens_per_s", "seconds", "compile_s",
           "speedup_vs_python_loop", "decode_row_fraction", "load_average")
DIGITS = "0123456789"


@dataclasses.dataclass(frozen=True)
class Workload(common.VariableWorkload):
  episodes: int = 64  # all in one batch
  turns: int = 4
  gen_tokens: int = 16  # per turn
  obs_tokens: int = 8  # per observation
  prompt_len: int = 32  # system + first observation
  mean_len: float = 0.0  # > 0: the variable workload, replies of this many tokens on average (stop included)
  end_len: int = 3  # variable: a reply of at most this many tokens before its stop ends the episode

  @property
  def generated(self) -> int:
    """Tokens a batch of episodes samples (the fixed workload's; the variable one's are counted)."""
    assert not self.variable, "the variable workload's lengths are random: count them"
    return self.episodes * self.turns * self.gen_tokens

  def ends(self, n_text_tokens: int, stopped: bool) -> bool:
    """Whether a reply ends its episode (variable: a short one, stopped within end_len + 1 tokens)."""
    return self.variable and stopped and n_text_tokens <= self.end_len


class BenchTokenizer(ByteTokenizer):
  """The byte tokenizer with a stop token STOP at `stop_id`: by default just past the model's
  vocabulary (a stop the sampler never draws: the fixed workload), or the model's last id (the
  variable workload's stop_rate_weights draw it)."""

  STOP = "\u2403"  # "␃"

  def __init__(self, model_vocab: int, stop_id: int | None = None):
    self.stop_id = model_vocab if stop_id is None else stop_id
    super().__init__(max(model_vocab, self.stop_id + 1))

  def encode(self, text: str, add_bos: bool = False) -> list[int]:
    first, *rest = text.split(self.STOP)
    ids = super().encode(first, add_bos)
    for piece in rest:
      ids += [self.stop_id] + super().encode(piece)
    return ids

  def token_bytes(self, token_id: int) -> bytes:
    return self.STOP.encode() if token_id == self.stop_id else super().token_bytes(token_id)


def observation(count: int, turn: int, obs_len: int) -> str:
  """The env's answer as text: "n=DD t=T", padded with dots to obs_len characters."""
  return f"n={count:02d} t={turn % 10}".ljust(obs_len, ".")


def py_step(turn: int, action_text: str, work: Workload, n_tokens: int | None = None,
            stopped: bool = False) -> tuple[int, str, float, bool]:
  """The Python twin of DigitCount.step: (turn, observation text, reward, done). `n_tokens`: the
  reply's tokens before its stop (default: its characters), `stopped`: whether it ended at a stop."""
  count = sum(c in DIGITS for c in action_text)
  turn += 1
  n = len(action_text) if n_tokens is None else n_tokens
  done = turn >= work.turns or work.ends(n, stopped)
  return turn, observation(count, turn, work.obs_tokens), count / work.gen_tokens, done


@flax.struct.dataclass
class CountState:
  turn: jax.Array


class DigitCount(TextEnv):
  """Count the ASCII digits of the action; observation "n=DD t=T" (obs_len tokens); truncated after max_turns;
  on the variable workload a reply of at most end_len tokens that stopped terminates."""

  instructions = "Write digits; I count."

  def __init__(self, codec: Codec, work: Workload):
    if work.obs_tokens < 8:
      raise ValueError(f"DigitCount's observation needs >= 8 tokens, got {work.obs_tokens}")
    super().__init__(codec, obs_len=work.obs_tokens, action_len=work.gen_tokens, max_turns=work.turns)
    self.work = work
    self.template = jnp.asarray(self._encode(observation(0, 0, work.obs_tokens)))
    self.digit_ids = jnp.asarray([self._encode(d)[0] for d in DIGITS])

  def _encode(self, text: str) -> np.ndarray:
    ids = self.codec.encode(text)
    if len(ids) != len(text):
      raise ValueError(f"DigitCount needs one token per character, {text!r} encodes to {ids.tolist()}")
    return ids

  def _obs(self, count, turn) -> Tokens:
    d = self.digit_ids
    ids = self.template.at[2].set(d[count // 10 % 10]).at[3].set(d[count % 10]).at[7].set(d[turn % 10])
    return Tokens(ids, jnp.int32(self.obs_len))

  def reset(self, key):
    return CountState(jnp.int32(0)), self._obs(0, 0)

  def step(self, state, action, key):
    bytes_N, n = self.codec.to_bytes(action, self.action_len * self.codec.max_token_bytes)
    live_N = jnp.arange(bytes_N.shape[0]) < n
    count = jnp.sum(live_N & (bytes_N >= ord("0")) & (bytes_N <= ord("9")), dtype=jnp.int32)
    turn = state.turn + 1
    info = dict(valid_action=count > 0, success=jnp.bool_(False))
    # a reply shorter than its budget stopped (the rollout cuts the stop); variable: a short one ends it
    ends = jnp.bool_(self.work.variable) & (action.length <= self.work.end_len)
    return (CountState(turn), self._obs(count, turn), count.astype(jnp.float32) / self.action_len,
            ends, (turn >= self.max_turns) & ~ends, info)

  def expert_action(self, state) -> str:
    return DIGITS[:self.action_len]

  def render(self, state) -> str:
    return f"turn={int(state.turn)}"


def agent_config(work: Workload) -> AgentConfig:
  """Empty headers, a system text that makes the prompt exactly prompt_len, and the never-sampled stop."""
  n = work.prompt_len - work.obs_tokens - 1
  system = (DigitCount.instructions + " " * n)[:n] + "\n"
  return AgentConfig(act_budget=work.gen_tokens, system=system, act_header="", feedback_header="",
                     stop=BenchTokenizer.STOP)


class Jarl:
  """`compact_every` > 0: live-row compaction in decode (`SamplingConfig.compact_every`), system jarl-compact."""

  def __init__(self, lm: models.LM, env: DigitCount, work: Workload, compact_every: int = 0):
    self.lm, self.env, self.work = lm, env, work
    self.name = "jarl-compact" if compact_every else "jarl"
    self.agent = agent_config(work)
    self.layout = make_layout(self.agent, env)
    L = self.layout  # an empty header still takes one (invalid) slot: count tokens, not slots
    prompt_tokens = int(L.system.length) + int(L.feedback_header.length) + env.obs_len
    assert prompt_tokens == work.prompt_len, (prompt_tokens, work.prompt_len)
    assert work.variable or self.layout.stop_id >= lm.config.vocab_size, "a fixed workload's stop is never drawn"
    self.collect = make_collect(lm, env, self.agent, n_tasks=work.episodes, group_size=1,
                                sampling=SamplingConfig(temperature=1.0, compact_every=compact_every))
    self.seeds = iter(range(10 ** 6))

  def __call__(self):
    return jax.block_until_ready(self.collect(self.lm.params, jax.random.key(next(self.seeds))))

  def check(self, traj, tok: BenchTokenizer) -> tuple[int, int]:
    """The workload is what it claims (fixed: every episode has `turns` live turns of gen_tokens sampled
    tokens; variable: an episode ends exactly at its first short stopped reply), and the in-graph env
    gave the rewards its Python twin gives for the same actions; returns (sampled tokens, turns played)."""
    w = self.work
    traj = jax.device_get(traj)
    ep = traj.episode
    self.row_fraction = float(ep["decode_rows"][0] / (ep["decode_budget"][0] * w.episodes))
    sampled, turns_B = int(traj.loss_mask.sum()), traj.turn_live.sum(1)
    prompt_slots = (traj.segment == int(Segment.PROMPT)) & traj.valid
    assert (prompt_slots.sum(1) == w.prompt_len).all(), "prompt tokens per episode"
    obs_slots = (traj.segment == int(Segment.FEEDBACK)) & traj.valid
    assert (obs_slots.sum(1) == w.obs_tokens * (turns_B - 1)).all(), "observation tokens per episode"
    if not w.variable:
      assert sampled == w.generated, f"jarl sampled {sampled} tokens, the workload is {w.generated}"
      assert (turns_B == w.turns).all(), f"live turns per episode: {turns_B}"
      assert (traj.loss_mask.reshape(w.episodes, -1).sum(1) == w.turns * w.gen_tokens).all()
    for b in range(w.episodes):
      turn, done = 0, False
      for n in range(w.turns):
        ids = traj.tokens[b][traj.loss_mask[b] & (traj.turn[b] == n)].tolist()
        assert bool(traj.turn_live[b, n]) == (not done), (b, n, "turns after the episode's end")
        if done:
          continue
        stopped = bool(ids) and ids[-1] == tok.stop_id
        text = ids[:-1] if stopped else ids
        turn, _, reward, done = py_step(turn, tok.decode(text), w, len(text), stopped)
        assert abs(reward - traj.turn_reward[b, n]) < 1e-6, (b, n, reward, traj.turn_reward[b, n])
    return sampled, int(turns_B.sum())


class PythonLoop:
  name = "python-loop"

  def __init__(self, lm: models.LM, tok: BenchTokenizer, work: Workload, prompt: list[int]):
    """`lm`'s weights in transformers; the variable workload's replies end at tok.stop_id."""
    import torch
    import transformers
    self.torch, self.tok, self.work, self.prompt = torch, tok, work, prompt
    with tempfile.TemporaryDirectory() as path:
      models.save_pretrained(lm, path)
      self.model = transformers.LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    self.model.generation_config.eos_token_id = tok.stop_id if work.variable else None  # fixed: never stop
    torch.manual_seed(0)
    self.note = (f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
                 f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}")

  def _batch(self, histories: list[list[int]]):
    """Left-padded ids [B, L] and attention mask."""
    L = max(map(len, histories))
    ids = np.full((len(histories), L), self.tok.pad_id, np.int64)
    mask = np.zeros((len(histories), L), np.int64)
    for row, h in enumerate(histories):
      ids[row, L - len(h):], mask[row, L - len(h):] = h, 1
    return self.torch.from_numpy(ids), self.torch.from_numpy(mask)

  def __call__(self) -> tuple[int, int]:
    """One batch of episodes; returns (tokens generated, turns played)."""
    w, tok, torch = self.work, self.tok, self.torch
    histories = [list(self.prompt) for _ in range(w.episodes)]
    turns, alive, generated = [0] * w.episodes, list(range(w.episodes)), 0
    lengths = {} if w.variable else dict(min_new_tokens=w.gen_tokens)
    while alive:
      ids, mask = self._batch([histories[i] for i in alive])
      with torch.inference_mode():
        out = self.model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                                  top_p=1.0, max_new_tokens=w.gen_tokens, pad_token_id=tok.pad_id, **lengths)
      new = out[:, ids.shape[1]:].tolist()
      assert len(new) == len(alive) and all(len(a) <= w.gen_tokens for a in new), "python-loop token count"
      still = []
      for i, action in zip(alive, new):
        stopped = tok.stop_id in action
        if stopped:  # the reply ends at its first stop (generate pads the rows that stopped before others)
          action = action[:action.index(tok.stop_id) + 1]
        text = action[:-1] if stopped else action
        turns[i], obs, _, done = py_step(turns[i], tok.decode(text), w, len(text), stopped)
        histories[i] += action
        generated += len(action)
        if not done:
          histories[i] += tok.encode(obs)
          still.append(i)
      alive = still
    if not w.variable:
      assert generated == w.generated and all(t == w.turns for t in turns), "python-loop workload"
      assert all(len(h) == w.prompt_len + w.turns * w.gen_tokens + (w.turns - 1) * w.obs_tokens for h in histories)
    return generated, sum(turns)


def breakdown(lm: models.LM, layout: Layout, batch: int, repeats: int) -> dict:
  """ms of the bare model forwards one jarl rollout runs, each timed alone over a cache of total_len slots.

  Per turn: a forced chunk for the ACT header (none when it is empty, as here), `budget` T=1
  decode steps and, on every turn but the last, one forced observation chunk; once: the prompt,
  prefilled as the instructions at one row (`Runner.start`'s shared prefill; group_size is 1 here) and
  the first observation at every row (an observation chunk). Each kind is timed as a `lax.scan` of `steps` forwards (the cache updated in place, as
  in the rollout) over a cache of total_len slots starting at its middle (the rollout grows its
  cache per turn, so its early turns attend over fewer slots than this).
  """
  B, T, steps = batch, layout.total_len, 8

  @functools.partial(jax.jit, static_argnums=3)
  def forwards(params, cache, start, K):  # `steps` forwards of K slots at slots [start, start + K)
    B = cache.valid_BxS.shape[0]

    def body(cache, _):
      ids_BxK, positions_BxK = jnp.ones((B, K), jnp.int32), start + jnp.broadcast_to(jnp.arange(K), (B, K))
      h_BxKxD, cache = lm.apply(params, ids_BxK, positions_BxK, cache, jnp.ones((B, K), bool), method="hidden")
      logits_BxV = lm.apply(params, h_BxKxD[:, -1:], method="logits")[:, 0]  # the last slot's, as in the rollout
      return cache.replace(index=start), logits_BxV[:, 0]
    return jax.lax.scan(body, cache.replace(index=start), None, length=steps)[1]

  def cache(rows):
    empty = lm.init_cache(rows, T)
    return empty.replace(valid_BxS=empty.valid_BxS.at[:, :T // 2].set(True))

  sizes = {"decode_step": (B, 1), "obs_chunk": (B, layout.feedback_len),
           "system_chunk": (1, layout.prompt_len - layout.feedback_len)}
  if header_slots(layout.headers[Segment.ACT]):
    sizes["header_chunk"] = (B, header_slots(layout.headers[Segment.ACT]))
  ms = {}
  for name, (rows, K) in sizes.items():
    start, kv = jnp.int32(min(T // 2, T - K)), cache(rows)
    run = lambda: jax.block_until_ready(forwards(lm.params, kv, start, K))
    ms[name] = common.time_call(run, repeats).median_s * 1e3 / steps
  turns, budget = layout.env.max_turns, layout.budgets[Segment.ACT]
  parts = dict(decode_s=turns * budget * ms["decode_step"] / 1e3,
               forced_s=(turns * ms.get("header_chunk", 0) + turns * ms["obs_chunk"] + ms["system_chunk"]) / 1e3)
  return {f"ms_per_{k}": v for k, v in ms.items()} | parts


def measure(preset: str, work: Workload, repeats: int, with_breakdown: bool = True) -> list[dict]:
  """Both systems on one preset; the timed calls alternate so that both see the same load."""
  cfg = models.preset(preset, dtype="float32", param_dtype="float32")
  lm = models.create(cfg, seed=0)
  tok = BenchTokenizer(cfg.vocab_size, cfg.vocab_size - 1 if work.variable else None)
  if work.variable:
    lm = common.stop_rate_weights(lm, tok.stop_id, work.mean_len)
  env = DigitCount(Codec.from_tokenizer(tok), work)
  jarl = Jarl(lm, env, work)
  prompt = tok.encode(jarl.agent.system.format(instructions=env.instructions) + observation(0, 0, work.obs_tokens))
  assert len(prompt) == work.prompt_len, (len(prompt), work.prompt_len)
  loop = PythonLoop(lm, tok, work, prompt)
  systems = (jarl, loop) + ((Jarl(lm, env, work, COMPACT_EVERY),) if work.variable else ())
  first, times, counts, loads = {}, {s.name: [] for s in systems}, {s.name: [0, 0] for s in systems}, []

  def counted(s, out) -> tuple[int, int]:  # (tokens, turns), checked after the clock stopped
    return s.check(out, tok) if isinstance(s, Jarl) else out

  for s in systems:  # compile / warm up
    start = time.perf_counter()
    out = s()
    first[s.name] = time.perf_counter() - start
    counted(s, out)
  for _ in range(repeats):
    loads.append(os.getloadavg()[0])
    for s in systems:
      start = time.perf_counter()
      out = s()
      times[s.name].append(time.perf_counter() - start)
      counts[s.name] = [a + b for a, b in zip(counts[s.name], counted(s, out))]
  rows = []
  for s in systems:
    t = common.Timing(first[s.name], times[s.name])
    tokens, turns = counts[s.name]
    row = dict(system=s.name, workload=work.name, preset=preset, batch=work.episodes, episodes=work.episodes,
               turns=work.turns, gen_tokens_per_turn=work.gen_tokens, obs_tokens_per_turn=work.obs_tokens,
               prompt_len=work.prompt_len, mean_turns=turns / (repeats * work.episodes), mean_reply=tokens / turns,
               episodes_per_s=work.episodes / t.median_s, tokens_per_s=tokens / sum(t.times_s), seconds=t.median_s,
               times_s=t.times_s, first_call_s=t.first_s, load_average=max(loads), note=getattr(s, "note", ""))
    if isinstance(s, Jarl):
      row["compile_s"] = t.compile_s
      row["total_len"] = jarl.layout.total_len
      row["decode_row_fraction"] = s.row_fraction
      if with_breakdown and not work.variable:  # the breakdown counts whole budgets
        row.update(breakdown(lm, jarl.layout, work.episodes, repeats))
        row["other_s"] = t.median_s - row["decode_s"] - row["forced_s"]  # sampling, slot writes, env
    rows.append(row)
    print(f"  {s.name:12s} {work.name:8s} {preset:5s}: {row['episodes_per_s']:7.1f} episodes/s, "
          f"{row['tokens_per_s']:8.0f} tokens/s, {t.median_s:6.3f} s, {row['mean_turns']:.2f} turns, "
          f"{row['mean_reply']:.1f} tokens a reply" + (f", compile {t.compile_s:5.1f} s" if "compile_s" in row else ""),
          flush=True)
  base = next(row["episodes_per_s"] for row in rows if row["system"] == loop.name)
  for row in rows:
    row["speedup_vs_python_loop"] = row["episodes_per_s"] / base
  return rows


def main(argv=None, results_dir: str | None = None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--presets", default="tiny,small")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--episodes", type=int, default=64)
  parser.add_argument("--turns", type=int, default=4)
  parser.add_argument("--no-breakdown", action="store_true", help="skip timing jarl's model forwards alone")
  parser.add_argument("--workloads", default=",".join(common.WORKLOADS), help="fixed and/or variable")
  parser.add_argument("--mean-len", type=float, default=8.0, help="variable: tokens per reply on average (with stop)")
  args = parser.parse_args(argv)
  names = common.workloads(parser, args.workloads)
  works = [Workload(episodes=args.episodes, turns=args.turns, mean_len=args.mean_len if name == "variable" else 0.0)
           for name in names]
  machine = common.machine_info()
  print(f"{machine['cpu']}, {machine['cores']} cores, load {machine['load_average_at_start']}; {works}", flush=True)
  rows, start = [], time.perf_counter()
  for preset in args.presets.split(","):
    for work in works:
      rows += measure(preset, work, args.repeats, not args.no_breakdown)
  machine["benchmark_seconds"] = round(time.perf_counter() - start)
  env = "".join(f"{k}={v} " for k, v in machine["env"].items())
  notes = (f"Command: `{env}python benchmarks/multiturn.py{''.join(' ' + a for a in (argv or sys.argv[1:]))}`. "
           "See the docstring of benchmarks/multiturn.py for the workload and what each column measures.")
  old = common.RESULTS
  if results_dir is not None:  # tests write elsewhere
    common.RESULTS = pathlib.Path(results_dir)
  try:
    common.write_results("multiturn", machine, rows, COLUMNS, notes=notes)
  finally:
    common.RESULTS = old
  return rows


if __name__ == "__main__":
  main()
