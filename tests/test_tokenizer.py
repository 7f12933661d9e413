"""Tokenizers: the built-in ByteTokenizer and the transformers wrapper, on tiny local tokenizers."""

import pytest
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from jarl.tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer

TEXT = "héllo wörld,  你好!\n🙂 the quick fox <|im_end|> done"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]
EXPECTED_CHAT = "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"


def test_byte_tokenizer():
  tok = load_tokenizer("byte")
  assert isinstance(tok, ByteTokenizer) and tok.vocab_size == 512
  ids = tok.encode(TEXT, add_bos=True)
  assert ids[0] == tok.bos_id and tok.special_to_id["<|im_end|>"] in ids
  assert tok.decode(ids) == TEXT.replace("<|im_end|>", "")
  assert tok.decode(ids, skip_special=False) == "<bos>" + TEXT
  assert b"".join(tok.token_bytes(i) for i in ids[1:]) == TEXT.encode()
  assert tok.special_ids == frozenset(range(256, 261)) and tok.pad_id != tok.eos_id
  assert tok.token_bytes(400) == b""  # unused padding id
  with pytest.raises(ValueError, match=r"token id 512 is outside the vocabulary \[0, 512\)"):
    tok.token_bytes(512)
  with pytest.raises(ValueError, match="needs vocab_size >= 261"):
    ByteTokenizer(vocab_size=260)
  assert tok.apply_chat_template(MESSAGES) == EXPECTED_CHAT
  assert tok.apply_chat_template(MESSAGES, add_generation_prompt=False) == EXPECTED_CHAT.removesuffix(
      "<|im_start|>assistant\n")


@pytest.fixture(scope="module")
def byte_level_dir(tmp_path_factory):
  """A Qwen-style byte-level BPE trained on a few sentences, with ChatML specials."""
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=330, special_tokens=SPECIALS,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(["hello world, the quick brown fox", "héllo wörld 你好 🙂", "done and done"] * 4, trainer)
  path = tmp_path_factory.mktemp("byte_level")
  transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                       chat_template=CHATML).save_pretrained(path)
  no_template = tmp_path_factory.mktemp("no_template")
  transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>").save_pretrained(no_template)
  return path, no_template


def test_hf_byte_level_bpe(byte_level_dir):
  path, no_template = byte_level_dir
  tok = load_tokenizer(path)
  assert isinstance(tok, HFTokenizer) and tok.vocab_size == len(tok.tok)
  im_start, im_end, eot = (tok.tok.convert_tokens_to_ids(s) for s in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"))
  assert tok.special_ids == {im_start, im_end, eot}
  assert (tok.eos_id, tok.pad_id, tok.bos_id) == (im_end, eot, None)
  ids = tok.encode(TEXT)
  assert im_end in ids and len(ids) < len(TEXT.encode())  # merges were learned
  assert tok.decode(ids, skip_special=False) == TEXT
  assert tok.decode(ids) == TEXT.replace("<|im_end|>", "")
  assert b"".join(tok.token_bytes(i) for i in ids) == TEXT.encode()  # exact, even mid-character
  assert tok.encode("<|im_start|>user")[0] == im_start
  assert all(isinstance(tok.token_bytes(i), bytes) for i in range(tok.vocab_size))
  with pytest.raises(ValueError, match="outside the vocabulary"):
    tok.token_bytes(tok.vocab_size)
  with pytest.raises(ValueError, match="has no bos token"):
    tok.encode("hi", add_bos=True)
  assert tok.apply_chat_template(MESSAGES) == EXPECTED_CHAT
  with pytest.raises(ValueError, match="has no chat template"):
    HFTokenizer(no_template).apply_chat_template(MESSAGES)


def test_hf_sentencepiece_style_byte_fallback(tmp_path):
  """Llama-2 style: '▁' marks a space, unknown characters fall back to <0xNN> byte pieces."""
  pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["▁", "h", "i", "▁h"]
  tok = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=[("▁", "h")], unk_token="<unk>",
                             byte_fallback=True))
  tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
  tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                   decoders.Strip(" ", 1, 0)])
  transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                       unk_token="<unk>").save_pretrained(tmp_path)
  tok = HFTokenizer(tmp_path)
  text = "hi hé"
  ids = tok.encode(text, add_bos=True)
  assert ids[0] == tok.bos_id == 1 and tok.eos_id == tok.pad_id == 2
  assert tok.decode(ids) == text
  assert tok.token_bytes(3 + 0xC3) == b"\xc3"
  assert b"".join(tok.token_bytes(i) for i in ids[1:]) == b" " + text.encode()  # the prepended '▁'
  assert tok.token_bytes(1) == b"<s>"
