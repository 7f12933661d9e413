"""LoRA adapters on the Dense layers, so that a 7B-class policy trains on one accelerator.

    lm = jarl.models.lora.add(lm, LoRAConfig(rank=16, alpha=32), seed=0)  # same logits as before
    trainable, frozen = lora.split(lm, lm.params)   # the learner differentiates `trainable` only
    jarl.models.save_pretrained(lora.merge(lm, state.params), "out/")    # adapters folded in

Every Dense named in `targets` gets a `lora` subtree {a: [*in, r], b: [r, *out]} (float32,
a ~ fan-in normal, b = 0) and computes x ⋅ W + (x ⋅ a) ⋅ b · alpha / r, so `lm.apply` stays
one pure function over one params tree. a and b carry the logical axes of the kernel's
input and output dims (the rank dim is unsharded): they shard like the weight they adapt.
Only adapters and the subtrees named in `also_train` (the fresh value head) are trained;
the base weights are frozen and, with the adapters off (`adapters_off`), they are the KL
reference policy, so no second copy is kept. Attach adapters last (after
`with_value_head`): the handle's graphdef then holds them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from jarl import sharding
from jarl.models.config import ModelConfig
from jarl.models.lm import LM, MODULES, _axes_of, abstract as base_abstract
from jarl.models.transformer import Dense, _fan_in_init


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
  rank: int = 0  # 0: no adapters
  alpha: float = 16.0
  targets: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")  # Dense names; "lm_head" too
  also_train: tuple[str, ...] = ("value_head",)  # subtrees trained in full alongside the adapters

  def __post_init__(self):
    object.__setattr__(self, "targets", tuple(self.targets))
    object.__setattr__(self, "also_train", tuple(self.also_train))
    if self.rank < 0:
      raise ValueError(f"LoRAConfig.rank must be >= 0, got {self.rank}")

  @property
  def scale(self) -> float:
    return self.alpha / self.rank


class LoRA(nnx.Module):
  """The low-rank update of one Dense: (x ⋅ a) ⋅ b · alpha / rank."""

  def __init__(self, dense: Dense, cfg: LoRAConfig, rngs: nnx.Rngs):
    n_in, shape, axes = dense.n_in, tuple(dense.kernel.shape), tuple(dense.kernel.get_metadata()["axes"])
    # a Dense of `scan_layers`' stacked block: one adapter per layer, stacked the same way
    lead, layers = (axes[:1], shape[0]) if axes[0] == "layers" else ((), None)
    shape, axes = shape[len(lead):], axes[len(lead):]
    init = _fan_in_init(n_in, n_in + 1)
    a_shape = shape[:n_in] + (cfg.rank,)
    if layers is None:
      a = init(rngs.params(), a_shape, jnp.float32)
    else:
      a = jnp.stack([init(key, a_shape, jnp.float32) for key in jax.random.split(rngs.params(), layers)])
    self.a = nnx.Param(a, axes=lead + axes[:n_in] + (None,))
    self.b = nnx.Param(jnp.zeros((layers,) * len(lead) + (cfg.rank,) + shape[n_in:], jnp.float32),
                       axes=lead + (None,) + axes[n_in:])
    self.n_in = n_in
    self.scale = cfg.scale

  def __call__(self, x: jax.Array) -> jax.Array:
    x_r = jnp.tensordot(x, self.a[...].astype(x.dtype), axes=self.n_in)
    return jnp.tensordot(x_r, self.b[...].astype(x.dtype), axes=1) * self.scale


def attach(module: nnx.Module, cfg: LoRAConfig, rngs: nnx.Rngs) -> nnx.Module:
  """Give every Dense named in `cfg.targets` an adapter, in place."""
  denses = [(path[-1], node) for path, node in nnx.iter_graph(module) if isinstance(node, Dense)]
  unknown = sorted(set(cfg.targets) - {name for name, _ in denses})
  if unknown:
    raise ValueError(f"LoRA targets {unknown} name no Dense layer; available: {sorted({n for n, _ in denses})}")
  for name, dense in denses:
    if name in cfg.targets:
      dense.lora = nnx.data(LoRA(dense, cfg, rngs))
  return module


def abstract(cfg: ModelConfig, kind: str, lora: LoRAConfig):
  """(graphdef, param shapes, logical axes) of the adapted model, without allocating anything."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: attach(MODULES[kind](cfg, nnx.Rngs(0)), lora, nnx.Rngs(0))))
  return graphdef, nnx.to_pure_dict(state), _axes_of(state)


def _select(tree: dict, keep: Callable[[tuple], bool], path: tuple = ()) -> dict:
  """The leaves of a nested dict whose path `keep` accepts (empty dicts dropped)."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      value = _select(value, keep, path + (key,))
      if value:
        out[key] = value
    elif keep(path + (key,)):
      out[key] = value
  return out


def _is_adapter(path: tuple) -> bool:
  return "lora" in path


def join(a: dict, b: dict) -> dict:
  """The union of two nested dicts with disjoint leaves (the inverse of `split`)."""
  out = dict(a)
  for key, value in b.items():
    out[key] = join(out[key], value) if key in out else value
  return out


def split(lm: LM, params: dict) -> tuple[dict, dict]:
  """(trainable, frozen) params: adapters and `also_train` subtrees vs the rest; (params, {}) without LoRA."""
  if lm.lora is None:
    return params, {}
  def train(path):
    return _is_adapter(path) or any(name in path for name in lm.lora.also_train)
  return _select(params, train), _select(params, lambda path: not train(path))


@functools.lru_cache(maxsize=16)
def _compiled_init(cfg: ModelConfig, kind: str, lora: LoRAConfig, mesh: Mesh | None) -> Callable:
  _, shapes, axes = abstract(cfg, kind, lora)
  shapes, axes = _select(shapes, _is_adapter), _select(axes, _is_adapter)

  def init(key):  # adapters on an abstract base: only the adapters are computed
    module = attach(nnx.eval_shape(lambda: MODULES[kind](cfg, nnx.Rngs(0))), lora, nnx.Rngs(key))
    return _select(nnx.to_pure_dict(nnx.split(module)[1]), _is_adapter)

  out_shardings = None if mesh is None else sharding.shardings_for(
      shapes, jax.tree.map(sharding.logical_to_spec, axes), mesh)
  return jax.jit(init, out_shardings=out_shardings)


def add(lm: LM, cfg: LoRAConfig, seed: int | jax.Array = 0) -> LM:
  """The handle with adapters on `cfg.targets`; b = 0, so it computes what `lm` does."""
  if lm.lora is not None:
    raise ValueError("this handle already has LoRA adapters")
  if cfg.rank < 1:
    raise ValueError(f"LoRA needs rank >= 1, got {cfg.rank}")
  graphdef, _, axes = abstract(lm.config, lm.kind, cfg)
  key = jax.random.key(seed, impl="rbg") if isinstance(seed, int) else seed
  adapters = _compiled_init(lm.config, lm.kind, cfg, lm.mesh)(key)
  return lm.replace(graphdef=graphdef, axes=axes, params=join(lm.params, adapters), lora=cfg)


def _map_adapted(tree: dict, fn: Callable[[dict], dict]) -> dict:
  """Apply fn to every Dense's params dict that holds an adapter."""
  if "lora" in tree:
    return fn(tree)
  return {k: _map_adapted(v, fn) if isinstance(v, dict) else v for k, v in tree.items()}


def _zero_b(dense: dict) -> dict:
  return {**dense, "lora": {**dense["lora"], "b": jnp.zeros_like(dense["lora"]["b"])}}


def adapters_off(params: dict) -> dict:
  """The base policy: every b zeroed (b-sized zeros; the base weights are shared, not copied)."""
  return _map_adapted(params, _zero_b)


def _folded(dense: dict, scale: float) -> dict:
  kernel, a, b = dense["kernel"], dense["lora"]["a"], dense["lora"]["b"]
  product = functools.partial(jnp.tensordot, axes=1)
  if a.ndim + b.ndim - 2 > kernel.ndim:  # stacked layers (scan_layers): one product per layer
    product = jax.vmap(product)
  delta = product(a, b) * scale
  return _zero_b({**dense, "kernel": (kernel.astype(jnp.float32) + delta).astype(kernel.dtype)})


def fold(lm: LM, params: dict) -> dict:
  """Adapters folded into the base kernels and b reset to 0: the same policy, now the base
  (and so the KL reference). Donates `params`; without adapters returns them as they are."""
  if lm.lora is None:
    return params
  fn = jax.jit(lambda p: _map_adapted(p, functools.partial(_folded, scale=lm.lora.scale)), donate_argnums=0)
  return fn(params)


def merge(lm: LM, params: dict | None = None) -> LM:
  """An adapter-free handle over W + a ⋅ b · alpha / r, for export with `save_pretrained`."""
  def merged(p):
    return _map_adapted(p, lambda d: {k: v for k, v in _folded(d, lm.lora.scale).items() if k != "lora"})
  graphdef, _, axes = base_abstract(lm.config, lm.kind)
  return lm.replace(graphdef=graphdef, axes=axes, params=jax.jit(merged)(lm.params if params is None else params),
                    lora=None)
