"""Tokenizers with one small interface: the built-in ByteTokenizer and a transformers wrapper.

    tok.encode(text, add_bos=False) -> list[int]
    tok.decode(ids, skip_special=True) -> str
    tok.token_bytes(id) -> bytes            # exact bytes a token stands for (env codec)
    tok.apply_chat_template(messages, add_generation_prompt=True) -> str
    tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id, tok.special_ids

`ByteTokenizer` needs no download: ids 0..255 are bytes, then a few special tokens,
and the vocabulary is padded to 512 (the `tiny` preset's vocab).
"""

from __future__ import annotations

import re
from typing import Protocol, Sequence


class Tokenizer(Protocol):
  vocab_size: int
  pad_id: int
  bos_id: int
  eos_id: int
  special_ids: frozenset[int]

  def encode(self, text: str, add_bos: bool = False) -> list[int]: ...
  def decode(self, ids: Sequence[int], skip_special: bool = True) -> str: ...
  def token_bytes(self, token_id: int) -> bytes: ...
  def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str: ...


class ByteTokenizer:
  """UTF-8 bytes as tokens, plus special tokens written as text like `<|im_end|>`."""

  SPECIALS = ("<pad>", "<bos>", "<eos>", "<|im_start|>", "<|im_end|>")

  def __init__(self, vocab_size: int = 512):
    if vocab_size < 256 + len(self.SPECIALS):
      raise ValueError(f"ByteTokenizer needs vocab_size >= {256 + len(self.SPECIALS)}, got {vocab_size}")
    self.vocab_size = vocab_size
    self.special_to_id = {s: 256 + i for i, s in enumerate(self.SPECIALS)}
    self.id_to_special = {i: s for s, i in self.special_to_id.items()}
    self.pad_id, self.bos_id, self.eos_id = (self.special_to_id[s] for s in ("<pad>", "<bos>", "<eos>"))
    self.special_ids = frozenset(self.id_to_special)
    self._split = re.compile("(" + "|".join(map(re.escape, self.SPECIALS)) + ")")

  def encode(self, text: str, add_bos: bool = False) -> list[int]:
    ids = [self.bos_id] if add_bos else []
    for piece in self._split.split(text):
      if piece in self.special_to_id:
        ids.append(self.special_to_id[piece])
      elif piece:
        ids.extend(piece.encode("utf-8"))
    return ids

  def token_bytes(self, token_id: int) -> bytes:
    if 0 <= token_id < 256:
      return bytes([token_id])
    if token_id in self.id_to_special:
      return self.id_to_special[token_id].encode()
    if 0 <= token_id < self.vocab_size:
      return b""  # unused ids in the padded vocabulary
    raise ValueError(f"token id {token_id} is outside the vocabulary [0, {self.vocab_size})")

  def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
    out = bytearray()
    for i in map(int, ids):
      if skip_special and (i in self.special_ids or i >= 256):
        continue
      out += self.token_bytes(i)
    return out.decode("utf-8", errors="replace")

  def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")
