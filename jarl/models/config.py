"""ModelConfig: one frozen dataclass for every supported decoder family, plus presets.

Families differ only by switches on this config:
  llama  — RoPE (optionally llama3-scaled), GQA, SwiGLU, RMSNorm; optional biases.
  qwen2  — llama + bias on q/k/v projections.
  qwen3  — llama + RMSNorm on q and k per head, head_dim set explicitly.

The HF config.json mapping lives in `hf.py` (`config_from_hf`, `config_to_hf`).

Presets: `tiny` and `small` for tests and laptops, and the exact architectures of real
checkpoints (`qwen2.5-7b`, `qwen3-8b`, ...): their config.json shapes (max_seq_len: the
instruct / post-trained release's), float32 unless a dtype is given, so that a memory plan
needs no download. `jarl train` loads the weights themselves from `model.hf_path`.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

FAMILIES = ("llama", "qwen2", "qwen3")
ROPE_TYPES = ("default", "linear", "llama3")
ATTENTION = ("xla", "chunked", "cudnn", "splash", "auto")  # the keys of jarl.models.attention.IMPLEMENTATIONS
REMAT = ("none", "block", "dots")  # the keys of jarl.models.transformer.REMAT_POLICIES
DECODE_SHARDING = ("replicated", "tensor")  # the keys of jarl.sharding.DECODE_RULES
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  d_model: int
  n_layers: int
  n_heads: int
  n_kv_heads: int
  mlp_dim: int
  head_dim: int | None = None  # None: d_model // n_heads
  family: str = "llama"
  rope_theta: float = 10000.0
  rope_type: str = "default"
  rope_factor: float = 1.0  # linear and llama3
  rope_low_freq_factor: float = 1.0  # llama3
  rope_high_freq_factor: float = 4.0  # llama3
  rope_original_max_position: int = 8192  # llama3
  rms_norm_eps: float = 1e-6
  tie_embeddings: bool = False
  qkv_bias: bool = False
  o_bias: bool = False
  qk_norm: bool = False
  max_seq_len: int = 2048
  dtype: str = "float32"  # compute dtype
  param_dtype: str = "float32"
  attention: str = "xla"  # the implementation (jarl/models/attention.py): how, not what, is computed
  attention_block: int = 512  # "chunked" / "splash": queries and keys per block (splash: a multiple of 128)
  # How the layers run: a Python loop, or one lax.scan over stacked layer params (compile time
  # independent of depth; params["layers"] then holds each leaf stacked [n_layers, ...]).
  scan_layers: bool = False
  # What the backward pass keeps of each block: everything ("none"), its input only ("block":
  # the rest is recomputed), or its matmul outputs ("dots"). Use scan_layers with remat="block":
  # scanned without remat, XLA:CPU kept 3x the unrolled model's temp memory (SmolLM2, 2 x 64
  # tokens: 446 vs 154 MB; with "block" 85 MB).
  remat: str = "none"
  # The rollout's params over the mesh's fsdp axis (`sharding.DECODE_RULES`): "replicated" (a compute-dtype
  # copy whole on each fsdp device: no collective per decode step) or "tensor" (for params too big for
  # that: fsdp joins tensor parallelism in the rollout, 1 / (fsdp x tensor) of the params per device, an
  # all-reduce per attention and MLP block per step; kv heads must divide over fsdp x tensor).
  decode_sharding: str = "replicated"

  def __post_init__(self):
    if self.head_dim is None:
      object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
    errors = []
    if self.family not in FAMILIES:
      errors.append(f"family={self.family!r} (supported: {FAMILIES})")
    if self.rope_type not in ROPE_TYPES:
      errors.append(f"rope_type={self.rope_type!r} (supported: {ROPE_TYPES})")
    for field in ("dtype", "param_dtype"):
      if getattr(self, field) not in DTYPES:
        errors.append(f"{field}={getattr(self, field)!r} (supported: {tuple(DTYPES)})")
    if self.n_heads % self.n_kv_heads:
      errors.append(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
    if self.attention not in ATTENTION:
      errors.append(f"attention={self.attention!r} (supported: {ATTENTION})")
    if self.attention == "cudnn" and self.dtype == "float32":
      errors.append('attention="cudnn" needs dtype "bfloat16" or "float16" (cuDNN has no float32 flash attention)')
    if self.remat not in REMAT:
      errors.append(f"remat={self.remat!r} (supported: {REMAT})")
    if self.decode_sharding not in DECODE_SHARDING:
      errors.append(f"decode_sharding={self.decode_sharding!r} (supported: {DECODE_SHARDING})")
    if self.attention_block < 1:
      errors.append(f"attention_block={self.attention_block} must be positive")
    if self.head_dim % 2:
      errors.append(f"head_dim={self.head_dim} must be even for RoPE")
    if errors:
      raise ValueError("invalid ModelConfig: " + "; ".join(errors))

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  @property
  def weight_dtype(self):
    return DTYPES[self.param_dtype]

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  def rope_inv_freq(self) -> np.ndarray:
    """Inverse RoPE frequencies [head_dim/2], float32, as transformers computes them."""
    dim = self.head_dim
    inv = 1.0 / (self.rope_theta ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))
    inv = inv.astype(np.float32)
    if self.rope_type == "linear":
      inv = inv / self.rope_factor
    elif self.rope_type == "llama3":
      factor, low, high = self.rope_factor, self.rope_low_freq_factor, self.rope_high_freq_factor
      old = self.rope_original_max_position
      wavelen = 2 * np.pi / inv
      scaled = np.where(wavelen > old / low, inv / factor, inv)
      smooth = (old / wavelen - low) / (high - low)
      smoothed = (1 - smooth) * scaled / factor + smooth * scaled
      medium = ~(wavelen < old / high) & ~(wavelen > old / low)
      inv = np.where(medium, smoothed, scaled)
    return inv.astype(np.float32)

  def num_params(self) -> int:
    D, F, V, L = self.d_model, self.mlp_dim, self.vocab_size, self.n_layers
    H, K, Dh = self.n_heads, self.n_kv_heads, self.head_dim
    attn = D * (H + 2 * K) * Dh + H * Dh * D
    attn += (H + 2 * K) * Dh * self.qkv_bias + D * self.o_bias + 2 * Dh * self.qk_norm
    per_layer = attn + 3 * D * F + 2 * D
    return V * D * (1 if self.tie_embeddings else 2) + L * per_layer + D


PRESETS: dict[str, ModelConfig] = {
    # vocab 512 covers the ByteTokenizer (256 bytes + specials).
    "tiny": ModelConfig(vocab_size=512, d_model=256, n_layers=4, n_heads=4, n_kv_heads=2,
                        mlp_dim=704, max_seq_len=1024),
    "small": ModelConfig(vocab_size=32000, d_model=512, n_layers=8, n_heads=8, n_kv_heads=4,
                         mlp_dim=1408, max_seq_len=2048),
}


_QWEN2 = dict(family="qwen2", qkv_bias=True, rope_theta=1e6, rms_norm_eps=1e-6, max_seq_len=32768)
_QWEN3 = dict(family="qwen3", qk_norm=True, head_dim=128, rope_theta=1e6, rms_norm_eps=1e-6, max_seq_len=40960)
# name: (vocab_size, d_model, n_layers, n_heads, n_kv_heads, mlp_dim, tie_embeddings, family switches);
# from each hub repo's config.json (Qwen/Qwen2.5-*-Instruct, Qwen/Qwen3-*).
_REAL = {
    "qwen2.5-0.5b": (151936, 896, 24, 14, 2, 4864, True, _QWEN2),
    "qwen2.5-1.5b": (151936, 1536, 28, 12, 2, 8960, True, _QWEN2),
    "qwen2.5-3b": (151936, 2048, 36, 16, 2, 11008, True, _QWEN2),
    "qwen2.5-7b": (152064, 3584, 28, 28, 4, 18944, False, _QWEN2),
    "qwen3-0.6b": (151936, 1024, 28, 16, 8, 3072, True, _QWEN3),
    "qwen3-1.7b": (151936, 2048, 28, 16, 8, 6144, True, _QWEN3),
    "qwen3-4b": (151936, 2560, 36, 32, 8, 9728, True, _QWEN3),
    "qwen3-8b": (151936, 4096, 36, 32, 8, 12288, False, _QWEN3),
}
PRESETS.update({name: ModelConfig(vocab_size=V, d_model=D, n_layers=L, n_heads=H, n_kv_heads=K, mlp_dim=F,
                                  tie_embeddings=tied, **family)
                for name, (V, D, L, H, K, F, tied, family) in _REAL.items()})
# Fields that may differ between a preset and the checkpoint it stands for (see `differences`).
NOT_ARCHITECTURE = ("dtype", "param_dtype", "max_seq_len", "attention", "attention_block", "scan_layers", "remat",
                    "decode_sharding")


def preset(name: str, **overrides) -> ModelConfig:
  """A built-in config by name, with optional field overrides."""
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; available: {sorted(PRESETS)}")
  return PRESETS[name].replace(**overrides)


def differences(expected: ModelConfig, got: ModelConfig, ignore=NOT_ARCHITECTURE) -> list[str]:
  """'field: expected vs got' for every field (but `ignore`) where two configs disagree."""
  return [f"{f.name}: {getattr(expected, f.name)!r} vs {getattr(got, f.name)!r}"
          for f in dataclasses.fields(ModelConfig)
          if f.name not in ignore and getattr(expected, f.name) != getattr(got, f.name)]
