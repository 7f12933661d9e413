"""The turn schema: segments, static token budgets, templates and verdict gating.

One turn of an episode is a fixed list of segments, each switched on by config:

    [PROMPT: instructions + first observation]           (forced, once)
    PLAN (policy) | ACT (policy) | CRITIQUE (policy) VERDICT (one policy token)
    | REVISE (policy, only if the verdict says revise) | FEEDBACK (forced: env's next obs)

Every policy segment opens with a forced header from the templates (e.g. "plan: ")
and is sampled for at most its budget of tokens, ending early at the stop token
(a newline by default, included in the segment). The verdict is one token sampled
from the two verdict tokens only. The action sent to the environment is the REVISE
text when the verdict is "revise", else the ACT text. Templates may hold the tokenizer's
special tokens as text, e.g. a chat format for an instruct model:
system="<|im_start|>user\n{instructions}<|im_end|>\n<|im_start|>assistant\n", stop="<|im_end|>"
(each becomes its one token id; an env's observations cannot produce them).

`chat=True` builds those templates from the tokenizer's own chat template instead
(`chat_format`): the instructions are the system message, every observation a user
message, every policy segment an assistant message ended by the end-of-turn token, and
generation stops at that token. `system` is then the system message's text and the
segment headers are written inside the assistant messages.

With `act_candidates = K > 1` (value-guided best-of-K, `jarl.planning`) the ACT segment
is one forced header then K candidate ranges of the ACT budget each: the K candidates are
sampled one after another from the same context, scored, and only the chosen one stays
in the context and the buffers (the other ranges become idle slots).

`Layout` turns an AgentConfig and an env into static slot counts: every row of a
rollout batch uses the same slots (idle slots are marked invalid), so the rollout
buffers are [B, T] with T = layout.total_len and one shared KV-cache cursor.
"""

from __future__ import annotations

import dataclasses
import enum

import jax
import jax.numpy as jnp
import numpy as np

from jarl.envs.base import TextEnv
from jarl.envs.codec import Tokens


class Segment(enum.IntEnum):
  """segment_id values in rollout buffers (0 marks idle / padding slots)."""
  IDLE = 0
  PROMPT = 1
  PLAN = 2
  ACT = 3
  CRITIQUE = 4
  VERDICT = 5
  REVISE = 6
  FEEDBACK = 7


POLICY_SEGMENTS = (Segment.PLAN, Segment.ACT, Segment.CRITIQUE, Segment.VERDICT, Segment.REVISE)


@dataclasses.dataclass(frozen=True)
class AgentConfig:
  """Which segments run, their token budgets and the template strings.

  A budget of 0 switches a segment off. `act_budget=None` uses the env's action_len
  + 1 (room for the stop token). REVISE and VERDICT run exactly when CRITIQUE does.
  """
  plan_budget: int = 0
  act_budget: int | None = None
  critique_budget: int = 0
  revise_budget: int | None = None  # None: same as the ACT budget
  act_candidates: int = 1  # K: best-of-K over sampled ACT candidates (jarl.planning); 1: off
  candidate_score: str = "env"  # how candidates are scored: a name registered in jarl.planning
  search_simulations: int = 32  # candidate_score="search": Gumbel MuZero simulations per turn (jarl.search)
  search_depth: int | None = None  # and its depth in turns (None: the env's max_turns)
  system: str = "{instructions}\n"  # "{instructions}" is replaced by the env's instructions
  plan_header: str = "plan: "
  act_header: str = "act: "
  critique_header: str = "check: "
  verdict_header: str = "ok? "
  verdict_accept: str = "y"
  verdict_revise: str = "n"
  revise_header: str = "revise: "
  feedback_header: str = ""
  stop: str = "\n"
  chat: bool = False  # turns in the tokenizer's chat template (see `chat_format`); `stop` is then its end of turn
  # chat only: a user message forced before the segment, e.g. "Check your answer." ("" : none)
  critique_request: str = ""
  verdict_request: str = ""
  revise_request: str = ""

  def __post_init__(self):
    for name in ("plan_budget", "critique_budget"):
      if getattr(self, name) < 0:
        raise ValueError(f"AgentConfig.{name} must be >= 0, got {getattr(self, name)}")
    for name in ("act_budget", "revise_budget"):
      if getattr(self, name) is not None and getattr(self, name) < 1:
        raise ValueError(f"AgentConfig.{name} must be >= 1 or None, got {getattr(self, name)}")
    if self.act_candidates < 1:
      raise ValueError(f"AgentConfig.act_candidates must be >= 1, got {self.act_candidates}")
    if self.search_simulations < 1 or (self.search_depth is not None and self.search_depth < 1):
      raise ValueError(f"AgentConfig.search_simulations and search_depth must be >= 1, got "
                       f"{self.search_simulations} and {self.search_depth}")
    requests = [n for n in ("critique_request", "verdict_request", "revise_request") if getattr(self, n)]
    if requests and not self.chat:
      raise ValueError(f"AgentConfig.{requests[0]} is a user message in the chat template: it needs chat=True")
    from jarl import planning  # noqa: PLC0415  (planning imports the rollout, which imports this module)
    planning.get_scorer(self.candidate_score)

  @property
  def critique(self) -> bool:
    return self.critique_budget > 0


@dataclasses.dataclass(frozen=True, eq=False)
class Layout:
  """Static slot plan of a rollout for one (AgentConfig, env, codec)."""
  agent: AgentConfig
  env: TextEnv
  headers: dict  # Segment -> Tokens (forced header of each segment that is on)
  budgets: dict  # Segment -> int sampled slots (policy segments that are on)
  system: Tokens  # instructions, forced once before the first observation
  feedback_header: Tokens  # forced before every observation
  stop_id: int
  verdict_ids: tuple[int, int]  # (accept, revise)
  prompt_len: int  # slots of the PROMPT phase
  feedback_len: int  # slots of the FEEDBACK phase
  turn_len: int  # slots of one turn (policy segments + feedback)

  @property
  def total_len(self) -> int:
    """The last turn forces no feedback: every episode has ended by then."""
    return self.prompt_len + self.env.max_turns * self.turn_len - self.feedback_len

  @property
  def segments(self) -> tuple[Segment, ...]:
    return tuple(s for s in POLICY_SEGMENTS if s in self.budgets)

  @property
  def candidates(self) -> int:
    """K: ACT candidates sampled per turn (best-of-K, `jarl.planning`)."""
    return self.agent.act_candidates

  def sampled_slots(self, segment: Segment) -> int:
    """Slots a segment samples into per turn: its budget, K times for ACT (one range per candidate)."""
    return self.budgets[segment] * (self.candidates if segment == Segment.ACT else 1)

  @property
  def policy_slots(self) -> np.ndarray:
    """The columns of the [B, T] buffers that can hold sampled tokens (loss_mask is off elsewhere)."""
    cols, t = [], self.prompt_len
    for _ in range(self.env.max_turns):
      for s in self.segments:
        t += header_slots(self.headers[s])
        cols.extend(range(t, t + self.sampled_slots(s)))
        t += self.sampled_slots(s)
      t += self.feedback_len
    return np.asarray(cols, np.int32)


def _single_token(codec, text: str, what: str) -> int:
  ids = codec.encode(text, specials=True)
  if len(ids) != 1:
    raise ValueError(f"AgentConfig.{what}={text!r} must be exactly one token, got {len(ids)}: {ids.tolist()}")
  return int(ids[0])


@dataclasses.dataclass(frozen=True)
class ChatFormat:
  """The pieces of a tokenizer's chat template around message texts, e.g. for ChatML:
  system_open "<|im_start|>system\\n", end_of_turn "<|im_end|>", user_open "\\n<|im_start|>user\\n",
  assistant_open "\\n<|im_start|>assistant\\n" (each open piece starts after an end of turn)."""
  system_open: str
  end_of_turn: str
  user_open: str
  assistant_open: str


_MARKS = ("JARLSYSTEMTEXT", "JARLUSERTEXT1", "JARLASSISTANTTEXT", "JARLUSERTEXT2")


def chat_format(tokenizer) -> ChatFormat:
  """Cut a rendered probe conversation (system, user, assistant, user) into the template's pieces.

  The end-of-turn piece is the one special token that closes the assistant message; a template
  that renders messages differently by position (beyond the first system message) is refused.
  """
  name = getattr(tokenizer, "name", type(tokenizer).__name__)
  roles = ("system", "user", "assistant", "user")
  text = tokenizer.apply_chat_template([{"role": r, "content": m} for r, m in zip(roles, _MARKS)])
  if [text.find(m) for m in _MARKS] != sorted(text.find(m) for m in _MARKS) or any(m not in text for m in _MARKS):
    raise ValueError(f"tokenizer {name}'s chat template does not render the messages it is given in order")
  cuts = [text.index(m) for m in _MARKS]
  between = [text[a + len(m):b] for a, m, b in zip(cuts, _MARKS, cuts[1:] + [len(text)])]
  system_open, (to_user, to_assistant, after_assistant, generation) = text[:cuts[0]], between
  specials = {tokenizer.token_bytes(i).decode("utf-8", "replace"): i for i in tokenizer.special_ids}
  end = next((s for s in sorted(specials, key=len, reverse=True) if s and after_assistant.startswith(s)), None)
  problems = []
  if end is None:
    problems.append(f"the assistant message is not closed by a special token ({after_assistant!r})")
  elif not (to_user.startswith(end) and to_assistant == generation and to_assistant.startswith(end)):
    problems.append(f"messages are not closed alike ({to_user!r}, {to_assistant!r}, {generation!r})")
  elif to_user != after_assistant:
    problems.append(f"a user message opens differently after the system and the assistant ({to_user!r} vs "
                    f"{after_assistant!r})")
  if problems:
    raise ValueError(f"tokenizer {name}'s chat template cannot frame agent turns: {problems[0]}")
  return ChatFormat(system_open, end, to_user[len(end):], to_assistant[len(end):])


def _header_texts(agent: AgentConfig, segments: list) -> dict:
  """Segment -> the forced header text before its sampled tokens (chat: inside assistant messages)."""
  plain = {Segment.PLAN: agent.plan_header, Segment.ACT: agent.act_header, Segment.CRITIQUE: agent.critique_header,
           Segment.VERDICT: agent.verdict_header, Segment.REVISE: agent.revise_header}
  return {s: plain[s] for s in segments}


def _chat_texts(agent: AgentConfig, tokenizer, instructions: str, segments: list) -> tuple[str, str, dict, str]:
  """(system, feedback header, Segment -> header, stop) framing each turn in the chat template.

  The first policy segment of a turn closes the user message; the others follow a segment that
  ended with the end-of-turn token, except REVISE, which follows the one-token verdict and so
  closes its message first. (An accepted verdict's message is left open before the next user message.)
  A segment with a request (`critique_request`, ...) opens with that user message.
  """
  chat = chat_format(tokenizer)
  system = chat.system_open + agent.system.format(instructions=instructions) + chat.end_of_turn
  plain = _header_texts(agent, segments)
  requests = {Segment.CRITIQUE: agent.critique_request, Segment.VERDICT: agent.verdict_request,
              Segment.REVISE: agent.revise_request}
  headers = {}
  for i, s in enumerate(segments):
    closes = i == 0 or s == Segment.REVISE
    request = chat.user_open + requests[s] + chat.end_of_turn if requests.get(s) else ""
    headers[s] = (chat.end_of_turn if closes else "") + request + chat.assistant_open + plain[s]
  return system, chat.user_open + agent.feedback_header, headers, chat.end_of_turn


def make_layout(agent: AgentConfig, env: TextEnv) -> Layout:
  codec = env.codec
  act = agent.act_budget or env.action_len + 1
  budgets = {Segment.ACT: act}
  if agent.plan_budget:
    budgets[Segment.PLAN] = agent.plan_budget
  if agent.critique:
    budgets[Segment.CRITIQUE], budgets[Segment.VERDICT] = agent.critique_budget, 1
    budgets[Segment.REVISE] = agent.revise_budget or act
  segments = [s for s in POLICY_SEGMENTS if s in budgets]
  if agent.chat:
    system_text, feedback_text, header_text, stop = _chat_texts(agent, codec.tokenizer, env.instructions, segments)
  else:
    system_text, feedback_text = agent.system.format(instructions=env.instructions), agent.feedback_header
    header_text, stop = _header_texts(agent, segments), agent.stop
  headers = {s: _fixed(codec.encode(t, specials=True)) for s, t in header_text.items()}
  if budgets[Segment.ACT] > env.action_len + 1 or budgets.get(Segment.REVISE, 1) > env.action_len + 1:
    raise ValueError(f"ACT/REVISE budgets must be <= env.action_len + 1 = {env.action_len + 1}")
  system = _fixed(codec.encode(system_text, specials=True))
  feedback_header = _fixed(codec.encode(feedback_text, specials=True))
  feedback_len = int(feedback_header.length) + env.obs_len
  ranges = {s: agent.act_candidates if s == Segment.ACT else 1 for s in budgets}  # ACT: one per candidate
  turn_len = sum(header_slots(headers[s]) + budgets[s] * ranges[s] for s in budgets) + feedback_len
  verdict_ids = (_single_token(codec, agent.verdict_accept, "verdict_accept"),
                 _single_token(codec, agent.verdict_revise, "verdict_revise"))
  if verdict_ids[0] == verdict_ids[1]:
    raise ValueError("verdict_accept and verdict_revise must be different tokens")
  return Layout(agent, env, headers, budgets, system, feedback_header,
                _single_token(codec, stop, "stop"), verdict_ids,
                prompt_len=int(system.length) + feedback_len, feedback_len=feedback_len, turn_len=turn_len)


def header_slots(header: Tokens) -> int:
  """Slots a forced header takes: none when it is empty (no forward is run for it)."""
  return int(header.size) if int(header.length) else 0


def _fixed(ids: np.ndarray) -> Tokens:
  """Host ids as an unbatched Tokens buffer of exactly their length (at least 1 slot)."""
  buf = np.zeros((max(1, len(ids)),), np.int32)
  buf[:len(ids)] = ids
  return Tokens(jnp.asarray(buf), jnp.asarray(len(ids), jnp.int32))


def render_episode(traj, row: int, codec) -> str:
  """Host side: one row of a Trajectory as text, each segment tagged, e.g. `[act] 7⏎`."""
  tokens, valid, segment = (jax.device_get(x[row]) for x in (traj.tokens, traj.valid, traj.segment))
  lines, current, ids = [], None, []

  def flush():
    if ids:
      text = b"".join(codec.tokenizer.token_bytes(int(i)) for i in ids).decode("utf-8", "replace")
      lines.append(f"[{Segment(current).name.lower()}] {text.replace(chr(10), '⏎')}")

  for tok, ok, seg in zip(tokens, valid, segment):
    if not ok:
      continue
    if seg != current:
      flush()
      current, ids = seg, []
    ids.append(tok)
  flush()
  rewards = jax.device_get(traj.turn_reward[row])
  lines.append(f"rewards per turn: {[round(float(r), 3) for r in rewards]}  "
               f"success: {bool(jax.device_get(traj.episode['success'][row]))}")
  return "\n".join(lines)
