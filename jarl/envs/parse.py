"""In-graph parsing of action bytes (from `Codec.to_bytes`): pure, fixed-shape, vmappable.

Bytes past `n` are ignored everywhere. Helpers return -1 / False / count 0 rather
than raising, so a garbage action is simply an invalid action.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def byte_table(words: Sequence[str]) -> tuple[Array, Array]:
  """Host side: strings as a padded uint8 table [C, L] and their lengths [C]."""
  raw = [w.encode("utf-8") for w in words]
  table = np.zeros((len(raw), max(1, max(map(len, raw)))), np.uint8)
  for row, b in zip(table, raw):
    row[:len(b)] = np.frombuffer(b, np.uint8)
  return jnp.asarray(table), jnp.asarray([len(b) for b in raw], jnp.int32)


def live(bytes_N: Array, n: Array) -> Array:
  return jnp.arange(bytes_N.shape[-1]) < n


def lower(bytes_N: Array) -> Array:
  upper = (bytes_N >= ord("A")) & (bytes_N <= ord("Z"))
  return jnp.where(upper, bytes_N + 32, bytes_N).astype(jnp.uint8)


def is_space(bytes_N: Array) -> Array:
  return (bytes_N == ord(" ")) | (bytes_N == ord("\n")) | (bytes_N == ord("\t")) | (bytes_N == ord("\r"))


def is_digit(bytes_N: Array) -> Array:
  return (bytes_N >= ord("0")) & (bytes_N <= ord("9"))


def strip(bytes_N: Array, n: Array) -> tuple[Array, Array]:
  """[start, end) of the text without leading/trailing whitespace (start == end if empty)."""
  N = bytes_N.shape[-1]
  solid = live(bytes_N, n) & ~is_space(bytes_N)
  idx = jnp.arange(N)
  start = jnp.min(jnp.where(solid, idx, N))
  end = jnp.max(jnp.where(solid, idx + 1, 0))
  return jnp.minimum(start, end), end


def match_choice(bytes_N: Array, n: Array, table_CxL: Array, lens_C: Array) -> Array:
  """Index of the choice equal to the stripped, lower-cased text; -1 if none matches."""
  start, end = strip(bytes_N, n)
  text = lower(bytes_N)
  L = table_CxL.shape[1]
  window_L = jnp.take(text, jnp.clip(start + jnp.arange(L), 0, bytes_N.shape[-1] - 1))
  in_word_L = jnp.arange(L)[None, :] < lens_C[:, None]
  same_C = jnp.all(jnp.where(in_word_L, window_L[None, :] == lower(table_CxL), True), axis=1)
  same_C &= lens_C == (end - start)
  return jnp.where(same_C.any(), jnp.argmax(same_C), -1).astype(jnp.int32)


def first_word(bytes_N: Array, n: Array, table_CxL: Array, lens_C: Array) -> Array:
  """Index of the choice that is the text's first word among the choices, case-insensitively; -1 if none.
  Words are runs of ASCII letters, so "I move up." names "up" and "upward" names nothing (for replies of
  pretrained models, which wrap their answer in a sentence)."""
  N, L = bytes_N.shape[-1], table_CxL.shape[1]
  text = lower(bytes_N)
  letter_N = live(bytes_N, n) & (text >= ord("a")) & (text <= ord("z"))
  start_N = letter_N & ~jnp.concatenate([jnp.zeros((1,), bool), letter_N[:-1]])
  idx_N = jnp.arange(N)
  window_NxL = jnp.take(text, jnp.clip(idx_N[:, None] + jnp.arange(L)[None, :], 0, N - 1))
  in_word_CxL = jnp.arange(L)[None, :] < lens_C[:, None]
  same_NxC = jnp.all(jnp.where(in_word_CxL[None], window_NxL[:, None, :] == lower(table_CxL)[None], True), axis=2)
  end_NxC = idx_N[:, None] + lens_C[None, :]  # the choice must end the word, inside the text
  after_NxC = jnp.take(jnp.concatenate([letter_N, jnp.zeros((1,), bool)]), jnp.minimum(end_NxC, N))
  hit_NxC = start_N[:, None] & same_NxC & (end_NxC <= n) & ~after_NxC
  hit_N = hit_NxC.any(1)
  return jnp.where(hit_N.any(), jnp.argmax(hit_NxC[jnp.argmax(hit_N)]), -1).astype(jnp.int32)


def parse_ints(bytes_N: Array, n: Array, max_count: int, max_digits: int = 9) -> tuple[Array, Array, Array]:
  """Non-negative integers in reading order: (values [max_count] int32, count, ok).

  `ok` is False when there are more than max_count numbers or one has more than
  max_digits digits (its value would overflow).
  """
  digit_N = is_digit(bytes_N) & live(bytes_N, n)

  def scan(carry, x):
    value, in_num, n_digits, count, values, ok = carry
    byte, is_d = x
    starts = is_d & ~in_num
    ends = in_num & ~is_d  # a non-digit leaves `value` holding the number that just ended
    values = jnp.where(ends & (count < max_count), values.at[jnp.minimum(count, max_count - 1)].set(value), values)
    ok &= ~(ends & (count >= max_count))
    count = count + ends
    value = jnp.where(is_d, jnp.where(starts, 0, value) * 10 + (byte.astype(jnp.int32) - ord("0")), value)
    n_digits = jnp.where(is_d, jnp.where(starts, 1, n_digits + 1), n_digits)
    ok &= ~(is_d & (n_digits > max_digits))
    return (value, is_d, n_digits, count, values, ok), None

  init = (jnp.int32(0), jnp.bool_(False), jnp.int32(0), jnp.int32(0), jnp.zeros((max_count,), jnp.int32),
          jnp.bool_(True))
  # A trailing non-digit closes a number that runs to the end of the buffer.
  bytes_ext = jnp.concatenate([bytes_N, jnp.zeros((1,), jnp.uint8)])
  digit_ext = jnp.concatenate([digit_N, jnp.zeros((1,), bool)])
  (_, _, _, count, values, ok), _ = jax.lax.scan(scan, init, (bytes_ext, digit_ext))
  return values, jnp.minimum(count, max_count), ok


def find(bytes_N: Array, n: Array, word: str) -> Array:
  """Index of the first occurrence of `word`'s exact bytes in the live text; -1 if absent."""
  w = np.frombuffer(word.encode("utf-8"), np.uint8)
  N, L = bytes_N.shape[-1], len(w)
  window_NxL = jnp.take(bytes_N, jnp.clip(jnp.arange(N)[:, None] + jnp.arange(L)[None, :], 0, N - 1))
  hit_N = jnp.all(window_NxL == jnp.asarray(w), axis=1) & (jnp.arange(N) + L <= n)
  return jnp.where(hit_N.any(), jnp.argmax(hit_N), -1).astype(jnp.int32)


def match_words(bytes_N: Array, n: Array, table_CxL: Array, lens_C: Array,
                max_words: int) -> tuple[Array, Array, Array]:
  """Words split by whitespace or commas, each matched case-insensitively against the choices.

  Returns (choice [max_words] int32, -1 past the last word or where no choice matches;
  count of words, at most max_words; ok: 1..max_words words and every one matches).
  """
  N, L = bytes_N.shape[-1], table_CxL.shape[1]
  solid_N = live(bytes_N, n) & ~is_space(bytes_N) & (bytes_N != ord(","))
  start_N = solid_N & ~jnp.concatenate([jnp.zeros((1,), bool), solid_N[:-1]])
  word_N = jnp.cumsum(start_N) - 1  # which word each solid byte belongs to
  count = start_N.sum()
  in_word_WxN = solid_N[None, :] & (word_N[None, :] == jnp.arange(max_words)[:, None])
  len_W, start_W = in_word_WxN.sum(1), jnp.argmax(in_word_WxN, axis=1)
  window_WxL = jnp.take(lower(bytes_N), jnp.clip(start_W[:, None] + jnp.arange(L)[None, :], 0, N - 1))
  in_choice_CxL = jnp.arange(L)[None, :] < lens_C[:, None]
  same_WxC = jnp.all(jnp.where(in_choice_CxL[None], window_WxL[:, None, :] == lower(table_CxL)[None], True), axis=2)
  same_WxC &= lens_C[None, :] == len_W[:, None]
  choice_W = jnp.where(same_WxC.any(1) & (len_W > 0), jnp.argmax(same_WxC, axis=1), -1).astype(jnp.int32)
  ok = (count >= 1) & (count <= max_words) & jnp.all((choice_W >= 0) | (len_W == 0))
  return choice_W, jnp.minimum(count, max_words).astype(jnp.int32), ok
