"""countdown: the in-graph expression verifier against Python's own parser, tasks, feedback, contract."""

import ast
import re
import string

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer, models, trainers

from env_checks import check_contract, check_expert_solves, check_jit_matches_eager
from jarl.envs import Codec, countdown, make

ENV = make("countdown")
RESET, STEP = jax.jit(ENV.reset), jax.jit(ENV.step)
NUMBERS = [8, 3, 4, 1]


def reference(text, numbers, max_digits=2):
  """Slow, obvious verifier: Python's parser, exact integer arithmetic; None if invalid."""
  expr = text.split("=")[0].strip()
  if not expr or set(expr) - set("0123456789+-*/() ") or any(len(d) > max_digits for d in re.findall(r"\d+", expr)):
    return None
  used = []

  def value(node):
    if isinstance(node, ast.Constant) and type(node.value) is int:
      used.append(node.value)
      return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub, ast.Mult, ast.Div):
      a, b = value(node.left), value(node.right)
      if isinstance(node.op, ast.Div):
        if b == 0 or a % b:
          raise ValueError("inexact division")
        return a // b
      return {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}[type(node.op)]
    raise ValueError(type(node).__name__)

  try:
    result = value(ast.parse(re.sub(r"\d+", lambda m: str(int(m.group())), expr), mode="eval").body)
  except (SyntaxError, ValueError):
    return None
  return result if sorted(used) == sorted(numbers) else None


@jax.jit
@jax.vmap
def _verify(tokens, numbers_N):
  value, used, n_used, ok = countdown.evaluate(*ENV.codec.to_bytes(tokens, 48), 4, 2)
  return ok & countdown.uses_exactly(used, n_used, numbers_N), value


def _verify_texts(texts, numbers):
  tokens = [ENV.codec.tokens(t, 48) for t in texts]
  batch = jax.tree.map(lambda *x: jnp.stack(x), *tokens)
  valid, value = _verify(batch, jnp.asarray([numbers] * len(texts), jnp.int32))
  return [int(v) if ok else None for ok, v in zip(np.asarray(valid), np.asarray(value))]


def _random_expression(rng, numbers):
  pool = list(rng.permutation(numbers)) if rng.random() < 0.5 else [
      int(rng.choice(numbers)) if rng.random() < 0.8 else int(rng.integers(0, 30)) for _ in range(rng.integers(1, 6))]
  items = [str(v) for v in pool]
  while len(items) > 1:
    i = rng.integers(len(items) - 1)
    a, b = items[i], items[i + 1]
    wrap = lambda s: f"({s})" if rng.random() < 0.4 else s
    items[i:i + 2] = [wrap(a) + rng.choice(list("+-*/")) + wrap(b)]
  text = items[0]
  for _ in range(rng.choice([0, 0, 1, 2])):  # mutations: unbalanced parentheses, stray operators, spaces, "="
    pos = rng.integers(len(text) + 1)
    text = text[:pos] + rng.choice(list("()+-*/ 0=")) + text[pos + 1 if rng.random() < 0.5 else pos:]
  return text


def test_verifier_matches_python_reference():
  rng = np.random.default_rng(0)
  texts = [_random_expression(rng, NUMBERS) for _ in range(600)]
  texts += ["".join(rng.choice(list("0123456789+-*/() "), size=rng.integers(0, 20))) for _ in range(200)]
  got = _verify_texts(texts, NUMBERS)
  want = [reference(t, NUMBERS) for t in texts]
  assert got == want, [(t, g, w) for t, g, w in zip(texts, got, want) if g != w][:10]
  assert sum(w is not None for w in want) > 100  # the sample has plenty of valid expressions too


@pytest.mark.parametrize("text,want", [
    ("(8-3)*4+1", 21), ("8*3*1/4", 6), (" 8 - 3 * 4 + 1 ", -3), ("8/4*(3-1)", 4), ("((8))-(3)-(4)-(1)", 0),
    ("(8-3)*4+1 = 21", 21), ("8*3-4*1=", 20),
    ("8*3-4", None),  # a number unused
    ("8*3-4+4", None),  # a number reused (and 1 unused)
    ("8*3-4+2", None),  # unknown number
    ("8/3*4*1", None),  # inexact division
    ("8/(4-4)*3", None), ("8/(1-1)+3*4", None),  # division by zero (and reuse)
    ("(8-3*4+1", None), ("8-3)*4+1", None), ("()8-3*4+1", None),  # parentheses
    ("-8+3+4+1", None), ("8+-3+4+1", None), ("8 3+4+1", None), ("8+3+4+1x", None), ("", None), ("=8+3+4+1", None),
    ("008+3+4+1", None),  # more digits than any given number has
])
def test_verifier_cases(text, want):
  assert _verify_texts([text], NUMBERS) == [want] == [reference(text, NUMBERS)]


def _state(numbers, target):
  return countdown.CountdownState(jnp.asarray(numbers, jnp.int32), jnp.int32(target), jnp.int32(0))


def test_obs_feedback_and_turns():
  state, obs = RESET(jax.random.key(3))
  numbers, target = np.asarray(state.numbers_N).tolist(), int(state.target)
  assert ENV.codec.text(obs) == f"Numbers: {' '.join(map(str, numbers))}. Target: {target}."
  step = STEP
  state = _state(NUMBERS, 21)
  want = [("8+3+4+1", "= 16, target 21", 0.0, False, False), ("3-8-4-1", "= -10, target 21", 0.0, False, False),
          ("8+3+4", "invalid, target 21", 0.0, False, True)]
  for text, obs_text, reward, terminated, truncated in want:
    state, obs, r, term, trunc, info = step(state, ENV.action_tokens(text), jax.random.key(0))
    assert (ENV.codec.text(obs), float(r), bool(term), bool(trunc)) == (obs_text, reward, terminated, truncated)
    assert bool(info["valid_action"]) == (obs_text[0] == "=") and not info["success"]
  _, obs, r, term, trunc, info = step(_state(NUMBERS, 21), ENV.action_tokens("(8-3)*4+1"), jax.random.key(0))
  assert (ENV.codec.text(obs), float(r), bool(term), bool(trunc)) == ("= 21, solved", 1.0, True, False)
  assert bool(info["success"]) and int(info["value"]) == 21


def test_generated_tasks_are_solvable_and_vmap_matches_single():
  keys = jax.random.split(jax.random.key(7), 40)
  states, obs = jax.jit(jax.vmap(ENV.reset))(keys)
  assert (np.asarray(states.target) >= 1).all() and (np.asarray(states.target) <= 100).all()
  assert len(set(np.asarray(states.target).tolist())) > 10
  actions = [ENV.expert_action(jax.tree.map(lambda x: x[i], jax.device_get(states))) for i in range(40)]
  assert all(actions), "the host solver finds a solution for every generated task"
  texts = [a if i % 3 else "8+3" for i, a in enumerate(actions)]
  batch = jax.tree.map(lambda *x: jnp.stack(x), *[ENV.action_tokens(t) for t in texts])
  out = jax.jit(jax.vmap(ENV.step))(states, batch, keys)
  assert np.asarray(out[3]).sum() == len([i for i in range(40) if i % 3])
  for i in range(0, 40, 7):
    one = STEP(jax.tree.map(lambda x: x[i], states), jax.tree.map(lambda x: x[i], batch), keys[i])
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(out)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[i])
    np.testing.assert_array_equal(np.asarray(RESET(keys[i])[1].ids), np.asarray(obs.ids[i]))


def test_solver():
  assert countdown.solve([8, 3, 4, 1], 21) is not None and countdown.solve([1, 1], 5) is None
  for numbers, target in [([2, 3, 5, 7], 1), ([10, 10, 1, 9], 100), ([6, 4, 3], 2)]:
    assert reference(countdown.solve(numbers, target), numbers) == target


def test_contract_and_expert():
  check_contract(ENV)
  check_expert_solves(ENV, n_episodes=1)  # (each episode recompiles; 40 more tasks are solved in a batch above)
  check_jit_matches_eager(ENV)


class TinyBPE:
  """A small BPE tokenizer (multi-byte tokens such as "10", " 4" or ")*") with jarl's Tokenizer interface."""

  def __init__(self, corpus):
    self.tok = HFTokenizer(models.BPE())
    specials = ["<pad>", "<bos>", "<eos>"]
    self.tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=160, special_tokens=specials,
                                                             initial_alphabet=list(string.printable)))
    self.pad_id, self.bos_id, self.eos_id = map(self.tok.token_to_id, specials)
    self.special_ids = frozenset({self.pad_id, self.bos_id, self.eos_id})
    self.vocab_size = self.tok.get_vocab_size()

  def encode(self, text, add_bos=False):
    return [self.bos_id] * add_bos + self.tok.encode(text).ids

  def decode(self, ids, skip_special=True):
    return b"".join(self.token_bytes(i) for i in ids if not (skip_special and i in self.special_ids)).decode()

  def token_bytes(self, token_id):
    return self.tok.id_to_token(int(token_id)).encode()


def test_three_numbers_format_reward_and_a_bpe_tokenizer():
  rng = np.random.default_rng(1)
  corpus = [f"Numbers: {a} {b} {c}. Target: {a * b}. = {a + b}, target 1" for a, b, c in rng.integers(1, 21, (200, 3))]
  corpus += [_random_expression(rng, NUMBERS) for _ in range(200)]
  tokenizer = TinyBPE(corpus)
  env = make("countdown", tokenizer=tokenizer, n_numbers=3, max_number=20, format_reward=0.1)
  assert len(env.codec.encode("(8-3)*4+1")) < 9  # really multi-byte tokens
  step = jax.jit(env.step)
  state, _ = jax.jit(env.reset)(jax.random.key(0))
  _, _, reward, *_ = step(state, env.action_tokens(env.expert_action(jax.device_get(state))), jax.random.key(0))
  assert float(reward) == 1.0  # the expert's answer, tokenized by BPE, solves the task
  for text, reward, obs in [("(8-3)*4", 1.0, "= 20, solved"), ("8+3+4", 0.1, "= 15, target 20"),
                            ("8+3", 0.0, "invalid, target 20")]:
    _, o, r, *_ = step(_state([8, 3, 4], 20), env.action_tokens(text), jax.random.key(0))
    assert float(r) == pytest.approx(reward) and env.codec.text(o) == obs
  check_contract(env, batch=8)
