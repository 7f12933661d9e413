"""The model handle: config + graphdef + a params pytree, with a pure `apply`.

    lm = jarl.models.create(preset("tiny"), seed=0, mesh=mesh)   # params born sharded
    logits_BxTxV, cache = lm.apply(lm.params, tokens_BxT, positions_BxT, cache, valid_BxT)

`params` is a nested dict of arrays (optax, orbax and the HF mapping all see plain
dicts); `axes` is the same tree holding each parameter's logical axes as a
PartitionSpec of logical names. The module kinds share the handle:
  "lm"            Transformer       apply -> (logits_BxTxV, cache)
  "policy_value"  PolicyWithValue   apply -> (logits_BxTxV, values_BxT, cache)
  "reward"        RewardModel       apply -> rewards_B
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jarl import sharding
from jarl.models.config import ModelConfig
from jarl.models.heads import PolicyWithValue, RewardModel, ScalarHead
from jarl.models.transformer import KVCache, Transformer

MODULES: dict[str, Callable[..., nnx.Module]] = {
    "lm": Transformer,
    "policy_value": PolicyWithValue,
    "reward": RewardModel,
}

K_CACHE_AXES = P("batch", "kv_heads", "head_dim", None)  # the layouts of KVCache.init
V_CACHE_AXES = P("batch", "kv_heads", None, "head_dim")


@dataclasses.dataclass(frozen=True, eq=False)
class LM:
  config: ModelConfig
  kind: str
  graphdef: Any
  params: Any
  axes: Any
  mesh: Mesh | None = None
  lora: Any = None  # the LoRAConfig when adapters are attached (jarl.models.lora)
  rules: Any = sharding.RULES  # how its forwards lay activations out over the mesh (the rollout's: DECODE_RULES)

  def apply(self, params, *args, method: str | None = None, **kwargs):
    """Pure: the module's forward (or another method, e.g. "hidden") over the params pytree."""
    module = nnx.merge(self.graphdef, params)
    with sharding.activations_on(self.mesh, self.rules):  # the model's activation constraints lay out over this mesh
      return (module if method is None else getattr(module, method))(*args, **kwargs)

  def replace(self, **changes) -> "LM":
    return dataclasses.replace(self, **changes)

  def param_specs(self, rules=sharding.RULES) -> Any:
    return jax.tree.map(lambda a: sharding.logical_to_spec(a, rules), self.axes)

  def param_shardings(self, mesh: Mesh, rules=sharding.RULES) -> Any:
    return sharding.shardings_for(self.params, self.param_specs(rules), mesh)

  def init_cache(self, batch: int, length: int) -> KVCache:
    cache = KVCache.init(self.config, batch, length)
    return cache if self.mesh is None else jax.device_put(cache, cache_shardings(self.config, self.mesh, batch,
                                                                                  self.rules))

  @property
  def num_params(self) -> int:
    return sum(x.size for x in jax.tree.leaves(self.params))


def cache_shardings(cfg: ModelConfig, mesh: Mesh, batch: int, rules=sharding.RULES) -> KVCache:
  """NamedShardings for a KVCache: rows over (data, fsdp), kv heads over tensor (by `rules`: the rollout's
  "tensor" layout puts rows over data, kv heads over fsdp x tensor)."""
  def layers(axes, shape):
    spec = sharding.logical_to_spec(axes, rules)
    sharding.check_divisible("kv_cache", shape, spec, mesh)
    if cfg.scan_layers:
      return NamedSharding(mesh, P(None, *spec))
    return tuple(NamedSharding(mesh, spec) for _ in range(cfg.n_layers))
  k = layers(K_CACHE_AXES, (batch, cfg.n_kv_heads, cfg.head_dim, 1))
  v = layers(V_CACHE_AXES, (batch, cfg.n_kv_heads, 1, cfg.head_dim))
  return KVCache(k=k, v=v, valid_BxS=NamedSharding(mesh, sharding.logical_to_spec(("batch", None), rules)),
                 index=sharding.replicated(mesh))


def _map_layers(params: Any, fn: Callable) -> Any:
  """params with `fn` applied to each Transformer's "layers" subtree (wherever it sits: lm, backbone)."""
  if not isinstance(params, dict):
    return params
  return {k: fn(v) if k == "layers" else _map_layers(v, fn) for k, v in params.items()}


def _unrolled(layers: dict) -> bool:
  return all(isinstance(k, int) for k in layers)


def stack_layers(params: Any) -> Any:
  """Params in the unrolled layout ({"layers": {0: ..., 1: ...}}) in the `scan_layers` one (each
  leaf of "layers" stacked [n_layers, ...]); params already stacked are returned as they are.
  numpy in, numpy out (host memory); jax arrays are stacked by jnp."""
  def stack(layers):
    if not _unrolled(layers):
      return layers
    xp = np if all(isinstance(x, np.ndarray) for x in jax.tree.leaves(layers)) else jax.numpy
    return jax.tree.map(lambda *xs: xp.stack(xs), *(layers[i] for i in range(len(layers))))
  return _map_layers(params, stack)


def unstack_layers(params: Any) -> Any:
  """The inverse of `stack_layers` (unrolled params are returned as they are)."""
  def unstack(layers):
    if _unrolled(layers):
      return layers
    n = jax.tree.leaves(layers)[0].shape[0]
    return {i: jax.tree.map(lambda x: x[i], layers) for i in range(n)}
  return _map_layers(params, unstack)


def _axes_of(state) -> Any:
  def axes(v):
    if "axes" not in v.get_metadata():
      raise ValueError(f"parameter of shape {v.shape} has no logical axes")
    return P(*v.get_metadata()["axes"])
  return nnx.to_pure_dict(jax.tree.map(axes, state, is_leaf=lambda x: isinstance(x, nnx.Variable)))


def abstract(cfg: ModelConfig, kind: str = "lm"):
  """(graphdef, param shapes, logical axes) without allocating anything."""
  if kind not in MODULES:
    raise ValueError(f"unknown model kind {kind!r}; available: {sorted(MODULES)}")
  module = nnx.eval_shape(lambda: MODULES[kind](cfg, nnx.Rngs(0)))
  graphdef, state = nnx.split(module)
  return graphdef, nnx.to_pure_dict(state), _axes_of(state)


@functools.lru_cache(maxsize=64)
def _compiled_init(cfg: ModelConfig, kind: str, mesh: Mesh | None) -> Callable:
  graphdef, shapes, axes = abstract(cfg, kind)

  def init(key):
    return nnx.to_pure_dict(nnx.split(MODULES[kind](cfg, nnx.Rngs(key)))[1])

  out_shardings = None if mesh is None else LM(cfg, kind, graphdef, shapes, axes).param_shardings(mesh)
  return jax.jit(init, out_shardings=out_shardings)


def create(cfg: ModelConfig, seed: int | jax.Array = 0, *, mesh: Mesh | None = None,
           kind: str = "lm") -> LM:
  """Randomly initialised model; with a mesh the params are created already sharded.

  Integer seeds use the "rbg" PRNG: XLA compiles it several times faster than threefry on
  CPU, and it gives the same values whatever the mesh.
  """
  graphdef, _, axes = abstract(cfg, kind)
  key = jax.random.key(seed, impl="rbg") if isinstance(seed, int) else seed
  return LM(cfg, kind, graphdef, _compiled_init(cfg, kind, mesh)(key), axes, mesh)


def from_params(cfg: ModelConfig, params: Any, *, mesh: Mesh | None = None, kind: str = "lm") -> LM:
  """A handle around existing params (checked against the model's shapes), placed on a mesh."""
  graphdef, shapes, axes = abstract(cfg, kind)
  expected = dict(jax.tree_util.tree_flatten_with_path(shapes)[0])
  got = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  missing = sorted(sharding.path_name(p) for p in expected.keys() - got.keys())
  extra = sorted(sharding.path_name(p) for p in got.keys() - expected.keys())
  if missing or extra:
    raise ValueError(f"params do not match a {kind} model: missing {missing}, unexpected {extra}")
  for path, want in expected.items():
    if tuple(got[path].shape) != tuple(want.shape):
      raise ValueError(f"parameter {sharding.path_name(path)}: shape {tuple(got[path].shape)}, "
                       f"expected {tuple(want.shape)}")
  host = jax.tree.map(lambda x, s: np.asarray(x, s.dtype), params, shapes)
  lm = LM(cfg, kind, graphdef, host, axes, mesh)
  # straight from host memory to each device's shard: no full copy on one device first
  return lm.replace(params=jax.device_put(host, None if mesh is None else lm.param_shardings(mesh)))


def reward_from_lm(lm: LM, seed: int | jax.Array = 0) -> LM:
  """A reward-model handle on an LM's backbone (its LM head dropped) with a fresh scalar head: an RM
  initialised from the (warm-started) policy, as in RLHF (Ouyang et al. 2022)."""
  if lm.kind != "lm":
    raise ValueError(f"reward_from_lm needs an 'lm' handle, got {lm.kind!r}")
  key = jax.random.key(seed) if isinstance(seed, int) else seed
  head = nnx.to_pure_dict(nnx.split(ScalarHead(lm.config, nnx.Rngs(key), stddev=lm.config.d_model ** -0.5))[1])
  backbone = {k: v for k, v in lm.params.items() if k != "lm_head"}
  return from_params(lm.config, {"backbone": backbone, "head": head}, mesh=lm.mesh, kind="reward")


def with_value_head(lm: LM, seed: int | jax.Array = 0) -> LM:
  """A policy-with-value handle that reuses an LM's params and adds a fresh value head."""
  if lm.kind != "lm":
    raise ValueError(f"with_value_head needs an 'lm' handle, got {lm.kind!r}")
  key = jax.random.key(seed) if isinstance(seed, int) else seed
  head = nnx.to_pure_dict(nnx.split(ScalarHead(lm.config, nnx.Rngs(key)))[1])
  return from_params(lm.config, {"lm": lm.params, "value_head": head}, mesh=lm.mesh, kind="policy_value")
