"""Codec (tokens <-> bytes in the graph) and in-graph parsing helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jarl import envs
from jarl.envs import Codec, parse
from jarl.tokenizer import ByteTokenizer

CODEC = Codec(ByteTokenizer())


def _bytes(text, size=32):
  return CODEC.to_bytes(CODEC.tokens(text, size), size)


def test_tokens_and_text_round_trip():
  t = CODEC.tokens("héllo, 42", 16)
  assert int(t.length) == len("héllo, 42".encode())
  assert CODEC.text(t) == "héllo, 42"
  with pytest.raises(ValueError, match="needs 9 tokens, more than the buffer size 4"):
    CODEC.tokens("too long!", 4)


def test_to_bytes_in_graph_ignores_padding_and_truncates():
  b, n = jax.jit(lambda t: CODEC.to_bytes(t, 8))(CODEC.tokens("abc", 6))
  assert bytes(np.asarray(b[:n])) == b"abc" and (np.asarray(b[3:]) == 0).all()
  b, n = CODEC.to_bytes(CODEC.tokens("abcdefghij", 12), 4)
  assert int(n) == 4 and bytes(np.asarray(b)) == b"abcd"


@pytest.mark.parametrize("n", [0, 7, 10, 407, 9999])
def test_number_renders_decimal(n):
  assert CODEC.text(jax.jit(lambda x: CODEC.number(x, 4))(jnp.int32(n))) == str(n)


def test_concat_and_select():
  table = CODEC.piece_table(["up", "down", "left"])
  out = jax.jit(lambda i: CODEC.concat([CODEC.select(table, i), CODEC.tokens(" x", 3), CODEC.number(12, 2)], 9))(1)
  assert CODEC.text(out) == "down x12"
  overflow = CODEC.concat([CODEC.tokens("abcdef", 6), CODEC.tokens("ghij", 4)], 8)
  assert CODEC.text(overflow) == "abcdefgh" and int(overflow.length) == 8


def test_parse_ints_reference():
  rng = np.random.default_rng(0)
  for _ in range(20):
    nums = rng.integers(0, 1000, size=rng.integers(0, 5)).tolist()
    text = "".join(f"{rng.choice([' ', 'x', ', '])}{v}" for v in nums) + rng.choice(["", " ", "!"])
    values, count, ok = parse.parse_ints(*_bytes(text), max_count=4)
    assert bool(ok) and int(count) == len(nums) and np.asarray(values[:count]).tolist() == nums, text
  _, count, ok = parse.parse_ints(*_bytes("1 2 3"), max_count=2)
  assert not bool(ok) and int(count) == 2
  _, _, ok = parse.parse_ints(*_bytes("12345678901"), max_count=2)
  assert not bool(ok)


def test_match_choice_and_strip():
  table, lens = parse.byte_table(["up", "down", "left", "right"])
  for text, want in [("  Down\n", 1), ("left", 2), ("lefty", -1), ("", -1), ("up up", -1), ("RIGHT", 3)]:
    assert int(jax.jit(parse.match_choice)(*_bytes(text), table, lens)) == want, text
  start, end = parse.strip(*_bytes("  ab c \n"))
  assert (int(start), int(end)) == (2, 6)


def test_codec_encode_is_byte_exact_for_any_text():
  for text in ["", "a", "Target: 24", "ünïcödé ✓", "<|im_end|>"]:
    ids = CODEC.encode(text)
    assert b"".join(CODEC.tokenizer.token_bytes(int(i)) for i in ids) == text.encode()
    assert not set(ids.tolist()) & CODEC.tokenizer.special_ids


def test_templates_may_hold_special_tokens_and_env_text_may_not():
  from jarl.agent import AgentConfig, make_layout
  env = envs.make("frozenlake", size=4)
  codec, tok = env.codec, env.codec.tokenizer
  end, start = tok.special_to_id["<|im_end|>"], tok.special_to_id["<|im_start|>"]
  assert end not in codec.encode("ok<|im_end|>").tolist()  # env text: spelled out as bytes
  assert codec.encode("ok<|im_end|>", specials=True).tolist() == [ord("o"), ord("k"), end]
  agent = AgentConfig(system="<|im_start|>user\n{instructions}<|im_end|>\n<|im_start|>assistant\n", stop="<|im_end|>",
                      act_header="")
  layout = make_layout(agent, env)
  assert layout.stop_id == end
  system = np.asarray(layout.system.ids)[:int(layout.system.length)].tolist()
  assert system[0] == start and system.count(end) == 1 and system.count(start) == 2
  assert bytes(system[1:5]) == b"user"
