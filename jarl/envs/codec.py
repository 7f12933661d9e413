"""Codec: tokens <-> bytes for environments, built once on the host from any tokenizer.

Environments render observations and parse actions inside the graph. The codec
gives them:
  host side   `encode(text)` (exact bytes, falls back to a greedy byte match when the
              tokenizer adds prefix spaces; special tokens are spelled out as text unless
              `specials=True`, which the agent's templates use for chat markers such as
              <|im_start|>), `tokens(text, size)`, `piece_table(texts)`, `text(tokens)`;
  in graph    `to_bytes(tokens, max_bytes)` (token ids -> byte string), `concat(pieces,
              size)` (join variable-length token pieces), `select(table, index)`,
              `number(n, max_digits)` (a non-negative int as digit tokens), `show_if`.
Rendered observations need not match how the tokenizer would split the same text:
they are forced tokens, and their bytes are exact.
"""

from __future__ import annotations

import re
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jarl.tokenizer import Tokenizer

Array = jax.Array


@flax.struct.dataclass
class Tokens:
  """A fixed-size token buffer and how many of its leading tokens are real."""
  ids: Array  # int32 [..., K]
  length: Array  # int32 [...]

  @property
  def size(self) -> int:
    return self.ids.shape[-1]


class Codec:
  """Token/byte tables of one tokenizer; hashable by identity so jit can close over it."""

  def __init__(self, tokenizer: Tokenizer, max_token_bytes: int = 16):
    self.tokenizer = tokenizer
    self.pad_id = tokenizer.pad_id
    V = tokenizer.vocab_size
    table_VxM = np.zeros((V, max_token_bytes), np.uint8)
    lengths_V = np.zeros((V,), np.int32)
    self._by_bytes: dict[bytes, int] = {}
    for i in range(V):
      raw = b"" if i in tokenizer.special_ids else tokenizer.token_bytes(i)[:max_token_bytes]
      table_VxM[i, :len(raw)] = np.frombuffer(raw, np.uint8)
      lengths_V[i] = len(raw)
      if raw and raw not in self._by_bytes:
        self._by_bytes[raw] = i
    self.bytes_VxM = jnp.asarray(table_VxM)
    self.byte_lengths_V = jnp.asarray(lengths_V)
    self.max_token_bytes = max_token_bytes
    self._specials = {tokenizer.token_bytes(i).decode("utf-8", "replace"): i for i in sorted(tokenizer.special_ids)}
    self._specials.pop("", None)
    pattern = "|".join(re.escape(t) for t in sorted(self._specials, key=len, reverse=True))
    self._special_split = re.compile(f"({pattern})") if pattern else None
    self._digits = self.piece_table([str(d) for d in range(10)])

  @classmethod
  def from_tokenizer(cls, tokenizer: Tokenizer, max_token_bytes: int = 16) -> "Codec":
    return cls(tokenizer, max_token_bytes)

  # ---- host side -------------------------------------------------------------------------------

  def encode(self, text: str, specials: bool = False) -> np.ndarray:
    """Token ids whose bytes are exactly `text`'s UTF-8 bytes. Special tokens are excluded
    (an env's text cannot inject them) unless `specials`: then each special token's text
    (e.g. "<|im_end|>") becomes its id, as chat templates need."""
    if specials and self._special_split is not None:
      pieces = self._special_split.split(text)
      ids = [[self._specials[p]] if p in self._specials else self.encode(p).tolist() for p in pieces if p]
      return np.asarray(sum(ids, []), np.int32)
    want = text.encode("utf-8")
    ids = self.tokenizer.encode(text)
    if b"".join(self.tokenizer.token_bytes(i) for i in ids) == want and not set(ids) & self.tokenizer.special_ids:
      return np.asarray(ids, np.int32)
    out, pos = [], 0  # greedy longest match over the byte table
    while pos < len(want):
      for n in range(min(self.max_token_bytes, len(want) - pos), 0, -1):
        if want[pos:pos + n] in self._by_bytes:
          out.append(self._by_bytes[want[pos:pos + n]])
          pos += n
          break
      else:
        raise ValueError(f"byte {want[pos:pos + 1]!r} of {text!r} has no token in this tokenizer")
    return np.asarray(out, np.int32)

  def tokens(self, text: str, size: int) -> Tokens:
    """`text` as a Tokens buffer of `size` slots (padded with pad_id)."""
    ids = self.encode(text)
    if len(ids) > size:
      raise ValueError(f"{text!r} needs {len(ids)} tokens, more than the buffer size {size}")
    buf = np.full((size,), self.pad_id, np.int32)
    buf[:len(ids)] = ids
    return Tokens(jnp.asarray(buf), jnp.asarray(len(ids), jnp.int32))

  def piece_table(self, texts: Sequence[str]) -> Tokens:
    """Several strings as one Tokens table [N, max_len], for `select` in the graph."""
    encoded = [self.encode(t) for t in texts]
    size = max(1, max(len(e) for e in encoded))
    buf = np.full((len(texts), size), self.pad_id, np.int32)
    for row, ids in zip(buf, encoded):
      row[:len(ids)] = ids
    return Tokens(jnp.asarray(buf), jnp.asarray([len(e) for e in encoded], jnp.int32))

  def text(self, tokens: Tokens) -> str:
    """Host side: the text of one unbatched Tokens buffer."""
    ids = np.asarray(tokens.ids)[:int(tokens.length)]
    return b"".join(self.tokenizer.token_bytes(int(i)) for i in ids).decode("utf-8", errors="replace")

  # ---- in the graph ----------------------------------------------------------------------------

  def to_bytes(self, tokens: Tokens, max_bytes: int) -> tuple[Array, Array]:
    """(bytes_N uint8, n_bytes int32) of one Tokens buffer; bytes past max_bytes are dropped."""
    K = tokens.size
    live_K = jnp.arange(K) < tokens.length
    lens_K = jnp.where(live_K, self.byte_lengths_V[tokens.ids], 0)
    starts_K = jnp.cumsum(lens_K) - lens_K
    M = self.max_token_bytes
    index_KxM = starts_K[:, None] + jnp.arange(M)[None, :]
    index_KxM = jnp.where(jnp.arange(M)[None, :] < lens_K[:, None], index_KxM, max_bytes)
    out_N = jnp.zeros((max_bytes,), jnp.uint8).at[index_KxM].set(self.bytes_VxM[tokens.ids], mode="drop")
    return out_N, jnp.minimum(lens_K.sum(), max_bytes).astype(jnp.int32)

  def concat(self, pieces: Sequence[Tokens], size: int) -> Tokens:
    """Join unbatched pieces into one buffer of `size` slots (overflow is dropped)."""
    ids = jnp.full((size,), self.pad_id, jnp.int32)
    offset = jnp.zeros((), jnp.int32)
    for piece in pieces:
      k = jnp.arange(piece.size)
      index = jnp.where(k < piece.length, offset + k, size)
      ids = ids.at[index].set(piece.ids.astype(jnp.int32), mode="drop")
      offset = offset + piece.length
    return Tokens(ids, jnp.minimum(offset, size).astype(jnp.int32))

  @staticmethod
  def select(table: Tokens, index: Array) -> Tokens:
    """Row `index` of a piece table (in the graph)."""
    return Tokens(table.ids[index], table.length[index])

  def number(self, n: Array, max_digits: int) -> Tokens:
    """A non-negative integer as decimal digit tokens (at most max_digits digits)."""
    n = jnp.maximum(jnp.asarray(n, jnp.int32), 0)
    powers = 10 ** jnp.arange(max_digits - 1, -1, -1, dtype=jnp.int32)
    digits = (n // powers) % 10
    n_digits = jnp.clip(jnp.sum(n >= powers), 1, max_digits)  # at least "0"
    first = max_digits - n_digits
    pieces = [self.show_if(self.select(self._digits, digits[i]), i >= first) for i in range(max_digits)]
    return self.concat(pieces, max_digits * self._digits.size)

  @staticmethod
  def show_if(piece: Tokens, keep: Array) -> Tokens:
    """The piece where `keep` holds, else an empty one (for optional parts of a rendering)."""
    return Tokens(piece.ids, jnp.where(keep, piece.length, 0))
