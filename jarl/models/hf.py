"""HF checkpoints ⇄ jarl: config.json mapping and safetensors import / export.

    lm = jarl.models.from_pretrained("Qwen/Qwen3-0.6B", dtype="bfloat16", mesh=mesh)
    jarl.models.save_pretrained(lm, "out/")  # transformers.AutoModelForCausalLM loads it back
    lm = jarl.models.from_pretrained("package:smollm2-135m-instruct")  # a GGUF file: jarl.models.gguf

Families: llama, qwen2, qwen3. Every config.json field is either mapped, checked to hold
its neutral value, or known not to change the forward pass (metadata, token ids,
generation defaults); anything else is a ValueError, raised before a tensor is read.
Tensor names, shapes and dtypes are then checked from the safetensors headers, and the
data is memory-mapped with numpy (bfloat16 through ml_dtypes, for any safetensors
version). A torch Linear weight [out, in] becomes a kernel [in, *out], split per head.
"""

from __future__ import annotations

import functools
import json
import operator
from pathlib import Path

import ml_dtypes
import numpy as np
import safetensors.numpy
from jax.sharding import Mesh

from jarl.models.config import NOT_ARCHITECTURE, ModelConfig
from jarl.models.lm import LM, abstract, from_params, unstack_layers, with_value_head

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
HUB_FILES = ["*.json", "model*.safetensors", "tokenizer.model", "merges.txt", "vocab.txt", "*.jinja"]
SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}
REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
MAPPED = frozenset("""model_type vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads
  num_key_value_heads head_dim rms_norm_eps max_position_embeddings tie_word_embeddings attention_bias
  rope_parameters rope_theta rope_scaling""".split())
# Fields that do not change the forward pass. Qwen2's attention_bias is unused by transformers;
# sliding_window and max_window_layers only matter when use_sliding_window / layer_types say so;
# is_llama_config is a nanotron export tag (SmolLM).
HARMLESS = frozenset("""architectures transformers_version _name_or_path _commit_hash _attn_implementation_autoset
  is_llama_config torch_dtype dtype use_cache
  bos_token_id eos_token_id pad_token_id sep_token_id decoder_start_token_id initializer_range pretraining_tp
  sliding_window max_window_layers id2label label2id problem_type finetuning_task tokenizer_class prefix
  task_specific_params return_dict output_attentions output_hidden_states torchscript use_bfloat16
  tf_legacy_loss pruned_heads chunk_size_feed_forward is_encoder_decoder is_decoder add_cross_attention
  tie_encoder_decoder cross_attention_hidden_size max_length min_length do_sample early_stopping num_beams
  num_beam_groups diversity_penalty temperature top_k top_p typical_p repetition_penalty length_penalty
  no_repeat_ngram_size encoder_no_repeat_ngram_size bad_words_ids num_return_sequences output_scores
  return_dict_in_generate forced_bos_token_id forced_eos_token_id remove_invalid_values
  exponential_decay_length_penalty suppress_tokens begin_suppress_tokens""".split())
# Fields that change the math unless they hold the value jarl implements: (check, requirement).
CHECKED = {
    "hidden_act": (lambda v: v == "silu", "must be 'silu'"),
    "mlp_bias": (lambda v: not v, "must be false (jarl's MLP has no bias)"),
    "use_sliding_window": (lambda v: not v, "must be false (jarl has full attention only)"),
    "layer_types": (lambda v: all(t == "full_attention" for t in v or ()), "must all be 'full_attention'"),
    "attention_dropout": (lambda v: not v, "must be 0 (jarl has no dropout)"),
}
ROPE_FIELDS = {  # rope type -> {HF rope parameter: ModelConfig field}
    "default": {},
    "linear": {"factor": "rope_factor"},
    "llama3": {"factor": "rope_factor", "low_freq_factor": "rope_low_freq_factor",
               "high_freq_factor": "rope_high_freq_factor",
               "original_max_position_embeddings": "rope_original_max_position"},
}


def _attention_switches(family: str, attention_bias: bool) -> dict:
  """qkv_bias, o_bias and qk_norm as each family's transformers code builds its attention."""
  qk_norm = family == "qwen3"
  if family == "qwen2":
    return dict(qkv_bias=True, o_bias=False, qk_norm=qk_norm)
  return dict(qkv_bias=attention_bias, o_bias=attention_bias, qk_norm=qk_norm)


def _rope_from_hf(hf: dict) -> dict:
  """RoPE fields from `rope_parameters` (transformers 5) or `rope_theta` + `rope_scaling` (older)."""
  params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
  kind = params.pop("rope_type", None) or params.get("type") or "default"
  params.pop("type", None)
  if kind not in ROPE_FIELDS:
    raise ValueError(f"unsupported config field rope type={kind!r} (supported: {sorted(ROPE_FIELDS)})")
  fields = {"rope_type": kind, "rope_theta": float(params.pop("rope_theta", hf.get("rope_theta", 10000.0)))}
  for key, value in params.items():
    if key not in ROPE_FIELDS[kind]:
      raise ValueError(f"unsupported config field rope parameter {key}={value!r} for rope type {kind!r}")
    fields[ROPE_FIELDS[kind][key]] = value
  return fields


def config_from_hf(hf_config: dict, **overrides) -> ModelConfig:
  """ModelConfig from a transformers config.json dict; `overrides` set ModelConfig fields."""
  hf = hf_config
  family = hf.get("model_type")
  if family not in ARCHITECTURES:
    raise ValueError(f"unsupported model_type={family!r} (supported: {sorted(ARCHITECTURES)})")
  for key, value in hf.items():
    if key in CHECKED and not CHECKED[key][0](value):
      raise ValueError(f"unsupported config field {key}={value!r}: {CHECKED[key][1]}")
    if key not in MAPPED | HARMLESS | CHECKED.keys() and value not in (None, False):
      raise ValueError(f"unsupported config field {key}={value!r}: jarl does not know whether it "
                       "changes the model's math")
  missing = [k for k in REQUIRED if k not in hf]
  if missing:
    raise ValueError(f"config.json lacks required fields {missing}")
  D, H = hf["hidden_size"], hf["num_attention_heads"]
  fields = dict(
      vocab_size=hf["vocab_size"], d_model=D, n_layers=hf["num_hidden_layers"], n_heads=H,
      n_kv_heads=hf.get("num_key_value_heads") or H, mlp_dim=hf["intermediate_size"],
      head_dim=hf.get("head_dim") or (128 if family == "qwen3" else D // H),  # transformers' defaults
      family=family, rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
      max_seq_len=hf.get("max_position_embeddings", 2048),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      **_attention_switches(family, bool(hf.get("attention_bias", False))), **_rope_from_hf(hf))
  return ModelConfig(**{**fields, **overrides})


def config_to_hf(cfg: ModelConfig) -> dict:
  """The config.json transformers (5 and older) reads as `cfg`."""
  switches = dict(qkv_bias=cfg.qkv_bias, o_bias=cfg.o_bias, qk_norm=cfg.qk_norm)
  if switches != _attention_switches(cfg.family, cfg.o_bias):
    raise ValueError(f"transformers' {ARCHITECTURES[cfg.family]} cannot express {switches} "
                     f"(it builds {_attention_switches(cfg.family, cfg.o_bias)})")
  rope = {key: getattr(cfg, field) for key, field in ROPE_FIELDS[cfg.rope_type].items()}
  hf = {"architectures": [ARCHITECTURES[cfg.family]], "model_type": cfg.family,
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model, "intermediate_size": cfg.mlp_dim,
        "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim, "hidden_act": "silu",
        "rms_norm_eps": cfg.rms_norm_eps, "max_position_embeddings": cfg.max_seq_len,
        "tie_word_embeddings": cfg.tie_embeddings,
        "rope_parameters": {"rope_type": cfg.rope_type, "rope_theta": cfg.rope_theta, **rope},
        "rope_theta": cfg.rope_theta,
        "rope_scaling": {"rope_type": cfg.rope_type, **rope} if rope else None,
        "torch_dtype": cfg.param_dtype, "dtype": cfg.param_dtype}
  if cfg.family != "qwen2":
    hf["attention_bias"] = cfg.o_bias
  return hf


def _tensor_map(cfg: ModelConfig) -> dict[str, tuple[tuple, tuple, bool]]:
  """HF tensor name -> (jarl param path, HF shape, whether it is a transposed Linear weight)."""
  D, F, V, Dh = cfg.d_model, cfg.mlp_dim, cfg.vocab_size, cfg.head_dim
  widths = {"q": cfg.n_heads * Dh, "k": cfg.n_kv_heads * Dh, "v": cfg.n_kv_heads * Dh}
  names = {"model.embed_tokens.weight": (("embed",), (V, D), False),
           "model.norm.weight": (("final_norm", "scale"), (D,), False)}
  if not cfg.tie_embeddings:
    names["lm_head.weight"] = (("lm_head", "kernel"), (V, D), True)
  for i in range(cfg.n_layers):
    hf, layer = f"model.layers.{i}.", ("layers", i)
    names[hf + "input_layernorm.weight"] = (layer + ("attn_norm", "scale"), (D,), False)
    names[hf + "post_attention_layernorm.weight"] = (layer + ("mlp_norm", "scale"), (D,), False)
    for p, width in widths.items():
      names[f"{hf}self_attn.{p}_proj.weight"] = (layer + ("attn", p, "kernel"), (width, D), True)
      if cfg.qkv_bias:
        names[f"{hf}self_attn.{p}_proj.bias"] = (layer + ("attn", p, "bias"), (width,), False)
    names[hf + "self_attn.o_proj.weight"] = (layer + ("attn", "o", "kernel"), (D, widths["q"]), True)
    if cfg.o_bias:
      names[hf + "self_attn.o_proj.bias"] = (layer + ("attn", "o", "bias"), (D,), False)
    if cfg.qk_norm:
      for p in "qk":
        names[f"{hf}self_attn.{p}_norm.weight"] = (layer + ("attn", f"{p}_norm", "scale"), (Dh,), False)
    for p, shape in (("gate", (F, D)), ("up", (F, D)), ("down", (D, F))):
      names[f"{hf}mlp.{p}_proj.weight"] = (layer + ("mlp", p, "kernel"), shape, True)
  return names


def _header(file: Path) -> dict[str, tuple]:
  """{tensor name: (file, dtype, shape, byte offset)} from a .safetensors header alone."""
  with open(file, "rb") as f:
    n = int.from_bytes(f.read(8), "little")
    header = json.loads(f.read(n))
  header.pop("__metadata__", None)
  return {name: (file, t["dtype"], tuple(t["shape"]), 8 + n + t["data_offsets"][0])
          for name, t in header.items()}


def _checkpoint_tensors(path: Path) -> dict[str, tuple]:
  if (path / "model.safetensors").exists():
    return _header(path / "model.safetensors")
  index = path / "model.safetensors.index.json"
  if not index.exists():
    raise FileNotFoundError(f"{path} has neither model.safetensors nor model.safetensors.index.json")
  files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
  return {name: entry for f in files for name, entry in _header(path / f).items()}


def _check_tensors(found: dict[str, tuple[str, tuple]], expected: dict, dtypes, where: str,
                   harmless=lambda name: False) -> None:
  """Every expected tensor present with its shape and a dtype in `dtypes`, and nothing unknown.

  `found`: {name: (dtype name, shape)}; `where` names the checkpoint in the error.
  """
  errors = [f"missing tensor {n} (expected shape {expected[n][1]})"
            for n in sorted(expected.keys() - found.keys())]
  errors += [f"unexpected tensor {n} (shape {found[n][1]})"
             for n in sorted(found.keys() - expected.keys()) if not harmless(n)]
  for n in sorted(expected.keys() & found.keys()):
    dtype, shape = found[n]
    if shape != expected[n][1]:
      errors.append(f"tensor {n} has shape {shape} in the checkpoint, expected {expected[n][1]}")
    if dtype not in dtypes:
      errors.append(f"tensor {n} has dtype {dtype} (supported: {sorted(dtypes)})")
  if errors:
    raise ValueError(f"{where} does not match its config ({len(errors)} problems): " + "; ".join(errors[:8]))


def _local_dir(path_or_hub_id) -> Path:
  path = Path(path_or_hub_id).expanduser()
  if path.is_dir():
    return path
  if path.exists() or path.is_absolute() or str(path_or_hub_id).startswith((".", "~")):
    raise FileNotFoundError(f"{path} is not a model directory")
  from huggingface_hub import snapshot_download
  return Path(snapshot_download(str(path_or_hub_id), allow_patterns=HUB_FILES))


def _get(tree, path):
  return functools.reduce(operator.getitem, path, tree)


def _has(tree, path) -> bool:
  try:
    _get(tree, path)
  except KeyError:
    return False
  return True


def _set(tree, path, value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _check_kind(kind: str) -> None:
  if kind not in ("lm", "policy_value"):
    raise ValueError(f"from_pretrained builds kind 'lm' or 'policy_value', got {kind!r}")


def _assemble(cfg: ModelConfig, expected: dict, read, mesh: Mesh | None, kind: str, where: str) -> LM:
  """The handle from `read(name)`, each `expected` tensor as its HF array (a Linear weight [out, in]);
  a tensor with a NaN or inf is refused, naming `where` (the checkpoint) and the tensor."""
  shapes, params = abstract(cfg.replace(scan_layers=False))[1], {}  # HF's layout: one entry per layer
  stacked = abstract(cfg)[1] if cfg.scan_layers else None
  for name, (param_path, _, transposed) in expected.items():
    w = read(name)
    if not np.isfinite(w).all():
      raise ValueError(f"{where}: tensor {name} has non-finite values (NaN or inf): a damaged or diverged checkpoint")
    w = np.ascontiguousarray(w.T if transposed else w, cfg.weight_dtype).reshape(_get(shapes, param_path).shape)
    if cfg.scan_layers and param_path[0] == "layers":  # written into its layer's row: no second host copy
      layer, path = param_path[1], ("layers",) + param_path[2:]
      if not _has(params, path):
        _set(params, path, np.empty(_get(stacked, path).shape, cfg.weight_dtype))
      _get(params, path)[layer] = w
    else:
      _set(params, param_path, w)
  lm = from_params(cfg, params, mesh=mesh)
  return with_value_head(lm) if kind == "policy_value" else lm


def loader_fields(dtype: str | None, fields: dict) -> dict:
  """The ModelConfig fields a loader sets beyond the checkpoint's: `dtype` for both the param and
  compute dtype, then `fields`, which may only be those that do not change the math."""
  wrong = sorted(set(fields) - set(NOT_ARCHITECTURE))
  if wrong:
    raise ValueError(f"a checkpoint's architecture cannot be overridden ({wrong}); "
                     f"fields that may be set: {sorted(NOT_ARCHITECTURE)}")
  return {**({} if dtype is None else {"dtype": dtype, "param_dtype": dtype}), **fields}


def from_pretrained(path_or_hub_id, dtype: str | None = None, mesh: Mesh | None = None,
                    kind: str = "lm", **fields) -> LM:
  """Load a llama / qwen2 / qwen3 checkpoint (local directory or hub id) as a jarl handle.

  `dtype` ("float32", "bfloat16") sets both the param and compute dtype (None: float32);
  `fields` set ModelConfig fields that do not change the math (`param_dtype`, `attention`,
  `scan_layers`, `remat`, ...; see `config.NOT_ARCHITECTURE`). `kind` "policy_value" adds a
  fresh zero value head. With a mesh the params are sharded. A `.gguf` file or a
  "package:NAME" handle goes to `jarl.models.gguf.load_gguf`.
  """
  from jarl.models import gguf  # imports this module

  if gguf.is_gguf(path_or_hub_id):
    return gguf.load_gguf(path_or_hub_id, dtype, mesh, kind, **fields)
  _check_kind(kind)
  path = _local_dir(path_or_hub_id)
  try:
    hf_config = json.loads((path / "config.json").read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"{path / 'config.json'}: cannot read the model config: {e}") from None
  cfg = config_from_hf(hf_config, **loader_fields(dtype, fields))
  expected, found = _tensor_map(cfg), _checkpoint_tensors(path)

  def harmless(name):
    return name.endswith("rotary_emb.inv_freq") or (cfg.tie_embeddings and name == "lm_head.weight")
  _check_tensors({n: (t, shape) for n, (_, t, shape, _) in found.items()}, expected, SAFETENSORS_DTYPES,
                 f"checkpoint {path}", harmless)

  def read(name):
    file, st_dtype, shape, offset = found[name]
    return np.memmap(file, SAFETENSORS_DTYPES[st_dtype], "r", offset, shape)
  return _assemble(cfg, expected, read, mesh, kind, f"checkpoint {path}")


def hf_tensors(lm: LM) -> dict[str, np.ndarray]:
  """An lm handle's params as transformers' state dict (numpy, HF names and layouts)."""
  tensors, params = {}, unstack_layers(lm.params)
  for name, (param_path, hf_shape, transposed) in _tensor_map(lm.config).items():
    x = np.asarray(_get(params, param_path))
    tensors[name] = np.ascontiguousarray(x.reshape(hf_shape[::-1]).T if transposed else x.reshape(hf_shape))
  return tensors


def save_pretrained(lm: LM, path, tokenizer=None) -> Path:
  """Write config.json + model.safetensors that transformers.AutoModelForCausalLM loads.

  With a `jarl.tokenizer` tokenizer the folder is a whole checkpoint: its special ids go into
  config.json and a generation_config.json (so `generate` stops at its end of turn, e.g. SmolLM2's
  <|im_end|>), and a transformers-backed one writes its own files (AutoTokenizer loads them).
  """
  if lm.kind != "lm":
    raise ValueError(f"save_pretrained writes 'lm' handles only, got kind {lm.kind!r} "
                     "(for policy_value save an lm handle built from params['lm'])")
  if lm.lora is not None:
    raise ValueError("save_pretrained got a handle with LoRA adapters: export jarl.models.lora.merge(lm, params)")
  hf_config = config_to_hf(lm.config)
  path = Path(path)
  path.mkdir(parents=True, exist_ok=True)
  if tokenizer is not None:
    ids = dict(bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id)
    hf_config.update(ids)
    (path / "generation_config.json").write_text(json.dumps(ids, indent=2) + "\n")
    if hasattr(tokenizer, "tok"):  # HFTokenizer: transformers' own tokenizer files
      tokenizer.tok.save_pretrained(path)
  (path / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
  safetensors.numpy.save_file(hf_tensors(lm), str(path / "model.safetensors"), metadata={"format": "pt"})
  return path
