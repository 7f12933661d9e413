"""In-graph parsing helpers added for the grid envs: `find` and `match_words`."""

import jax
import numpy as np

from jarl.envs import Codec, parse
from jarl.tokenizer import ByteTokenizer

CODEC = Codec(ByteTokenizer())


def _bytes(text, size=32):
  return CODEC.to_bytes(CODEC.tokens(text, size), size)


def test_find_reference():
  find = jax.jit(parse.find, static_argnums=2)
  for text, word in [("go to subgoal 2 3", "subgoal"), ("subgoal", "subgoal"), ("no sub goal", "subgoal"),
                     ("", "x"), ("abcabc", "bc"), ("ab", "abc")]:
    assert int(find(*_bytes(text), word)) == text.find(word), (text, word)
  b, _ = _bytes("subgoal here")
  assert int(parse.find(b, 6, "subgoal")) == -1  # bytes past n are not text


def test_match_words():
  table, lens = parse.byte_table(["up", "down", "left", "right"])
  match = jax.jit(parse.match_words, static_argnums=4)
  for text, want, count, ok in [
      ("up", [0, -1, -1], 1, True), (" Up  DOWN,left\n", [0, 1, 2], 3, True), ("up,,down", [0, 1, -1], 2, True),
      ("up upp", [0, -1, -1], 2, False), ("", [-1, -1, -1], 0, False), (" , ", [-1, -1, -1], 0, False),
      ("up up up up", [0, 0, 0], 3, False), ("rightx left", [-1, 2, -1], 2, False)]:
    choice, n, good = match(*_bytes(text), table, lens, 3)
    assert (np.asarray(choice).tolist(), int(n), bool(good)) == (want, count, ok), text
