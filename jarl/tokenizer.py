"""Tokenizers with one small interface: the built-in ByteTokenizer and a transformers wrapper.

    tok.encode(text, add_bos=False) -> list[int]
    tok.decode(ids, skip_special=True) -> str
    tok.token_bytes(id) -> bytes            # exact bytes a token stands for (env codec)
    tok.apply_chat_template(messages, add_generation_prompt=True) -> str
    tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id, tok.special_ids

`ByteTokenizer` needs no download: ids 0..255 are bytes, then a few special tokens,
and the vocabulary is padded to 512 (the `tiny` preset's vocab). `HFTokenizer` wraps a
transformers tokenizer (directory, hub id, or a GGUF file's metadata: `*.gguf` or
"package:NAME"); `load_tokenizer("byte" | path)` picks one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Protocol, Sequence


class Tokenizer(Protocol):
  vocab_size: int
  pad_id: int
  bos_id: int | None
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


def _byte_level_alphabet() -> dict[str, int]:
  """GPT-2's byte-level BPE alphabet (`bytes_to_unicode`), inverted: character -> byte."""
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
  shifted = [b for b in range(256) if b not in printable]
  return {**{chr(b): b for b in printable}, **{chr(256 + i): b for i, b in enumerate(shifted)}}


BYTE_LEVEL = _byte_level_alphabet()
BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _decoder_types(decoder: dict | None) -> set[str]:
  """Types of a tokenizer.json decoder, looking inside Sequence decoders."""
  if not decoder:
    return set()
  return {decoder["type"]}.union(*(_decoder_types(d) for d in decoder.get("decoders", [])))


class HFTokenizer:
  """A transformers tokenizer behind the same interface as ByteTokenizer.

  `token_bytes` undoes the vocabulary's spelling of bytes: byte-level BPE (GPT-2's printable
  alphabet, as Qwen and Llama 3 use) or sentencepiece style (`▁` for a space, `<0xNN>`
  byte-fallback pieces). Added and special tokens stand for their text.
  """

  def __init__(self, name_or_path: str | Path):
    # imported here: ByteTokenizer users never pay for them
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from jarl.models import gguf

    self.name = str(name_or_path)
    if gguf.is_gguf(self.name):  # built from the file's tokenizer.* metadata, as AutoTokenizer would,
      path = Path(gguf.resolve(self.name))  # but without its slow read of the model config
      self.tok = PreTrainedTokenizerFast.from_pretrained(str(path.parent), gguf_file=path.name)
      gguf.set_special_tokens(self.tok, path)  # the file's special ids, whatever transformers read
    else:
      self.tok = AutoTokenizer.from_pretrained(self.name)
    if self.tok.eos_token_id is None:
      raise ValueError(f"tokenizer {self.name} has no eos token")
    self.vocab_size = len(self.tok)
    self.eos_id, self.bos_id = self.tok.eos_token_id, self.tok.bos_token_id
    self.pad_id = self.eos_id if self.tok.pad_token_id is None else self.tok.pad_token_id
    added = self.tok.added_tokens_decoder
    self.special_ids = frozenset(self.tok.all_special_ids) | {i for i, t in added.items() if t.special}
    self._added_bytes = {i: t.content.encode() for i, t in added.items()}
    decoder = json.loads(self.tok.backend_tokenizer.to_str()).get("decoder")
    self._byte_level = "ByteLevel" in _decoder_types(decoder)

  def encode(self, text: str, add_bos: bool = False) -> list[int]:
    if add_bos and self.bos_id is None:
      raise ValueError(f"tokenizer {self.name} has no bos token; call encode with add_bos=False")
    return ([self.bos_id] if add_bos else []) + self.tok.encode(text, add_special_tokens=False)

  def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
    return self.tok.decode(list(map(int, ids)), skip_special_tokens=skip_special,
                           clean_up_tokenization_spaces=False)

  def token_bytes(self, token_id: int) -> bytes:
    token_id = int(token_id)
    if not 0 <= token_id < self.vocab_size:
      raise ValueError(f"token id {token_id} is outside the vocabulary [0, {self.vocab_size})")
    if token_id in self._added_bytes:
      return self._added_bytes[token_id]
    piece = self.tok.convert_ids_to_tokens(token_id)
    if piece is None:
      return b""  # an id the vocabulary skips
    if self._byte_level:
      return bytes(BYTE_LEVEL[c] for c in piece)
    if m := BYTE_FALLBACK.fullmatch(piece):
      return bytes([int(m[1], 16)])
    return piece.replace("▁", " ").encode()

  def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
    if not self.tok.chat_template:
      raise ValueError(f"tokenizer {self.name} has no chat template")
    return self.tok.apply_chat_template(list(messages), tokenize=False,
                                        add_generation_prompt=add_generation_prompt)


def load_tokenizer(name_or_path: str | Path) -> Tokenizer:
  """The built-in ByteTokenizer for "byte", else a transformers tokenizer (directory, hub id, a
  `.gguf` file or a "package:NAME" handle)."""
  return ByteTokenizer() if str(name_or_path) == "byte" else HFTokenizer(name_or_path)
