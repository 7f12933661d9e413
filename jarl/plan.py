"""Per-device memory plan of a training config, from abstract shapes only; refuses what will not fit.

    jarl plan --config configs/plan.py                       # a 7B-class policy with LoRA on one H100
    jarl plan --config configs/quickstart.py --device=v5e    # or --device_memory_gb=16

Nothing is allocated and no weights are read (`model.hf_path` reads config.json only, and
nothing when `model.preset` names its architecture and hf_path is not a local directory):
param and optimizer shapes come from `jax.eval_shape`, sharded by the logical-axis rules
over the config's mesh, so a 7B plan is instant on a laptop. Per device:

  params              every param's shard (base weights + LoRA adapters)          exact
  optimizer state     the learner's optax state of the trainable params           exact
  reference params    a params copy when algo.kl_coef > 0 (none with LoRA)        exact
  gradients           trainable params x 2 (micro-batch gradient + accumulator)
  rollout params      the rollout's copy of the params in the compute dtype, replicated   exact
                      over fsdp (none when that is what the params are), or split over
                      fsdp x tensor with model.decode_sharding="tensor" (rows then over data)
  rollout KV cache    k and v (B x kv_heads x T x head_dim each) per layer + valid mask exact
                      + half of the cache it last grew from (between runs of turns)
                      + half of it with live-row compaction (sampling.compact_every: a bound)
  rollout buffers     the [B, T] slot buffers (they are the trajectory)           exact
  rollout logits      [B, V] float32 x 2, + the biggest forced chunk's attention scores (a first
                      observation or a turn's feedback; the instructions are prefilled at one row)
  update activations  per micro-batch of b rows, what the backward pass keeps (an estimate):
                        per layer and token  c·(3·(H + K)·Dh + 5·F) + 6·4·D (float32 norms)
                                             + c·2·F with LoRA adapters
                        per layer            b·H·T²·(8 + c)  (float32 scores and probabilities;
                                             any other model.attention: b·H·T·4, plus one block's;
                                             "cudnn": plus its dense b·T²·c mask)
                        model.remat="block": per layer only b·T·c·D (the block input), plus one
                        layer's recomputed activations; "dots": b·T·c·((H + 2K)·Dh + 2D + 2F)
                        (matmul outputs; per-layer slopes measured exactly under scan_layers, where
                        XLA:CPU honours remat; unrolled, XLA:CPU keeps everything anyway)
                        + b·T·c·D + b·T'·4·4·V  (embeddings; float32 logits and their gradients,
                                             T' = algo.logits_chunk when set, else T, or
                                             algo.head_len when it is smaller)
                        + 4·V·D with algo.logits_chunk (the head's gradient, summed over the chunks)
  reference logits    [b, T, V] float32 of the reference / value forward (one micro-batch at a time;
                      algo.logits_chunk slots at a time when set)

(c: compute dtype bytes; H, K, F and V per tensor shard, B and b per data x fsdp shard.)
The activation constants are fitted to XLA's memory analysis of the compiled gradient
(float32, CPU; 0-10% above it for full fine-tuning and LoRA); for whole compiled iterations of
the recipes at 2k-8k tokens per episode the peak is within -2% to +3% of XLA's figure (float32
compute, benchmarks/memory.py).
The state items live throughout, the buffers in both phases; the peak is the state plus
the buffers plus the larger of the rollout and the update phase. The device memory is
`--device_memory_gb` / `plan.device_memory_gb`, a kind from DEVICE_MEMORY_GB
(`--device` / `plan.device`), or the local accelerator's (memory_stats, else its kind).
`jarl train` runs `check` first and stops before building anything if it will not fit.
The mesh is laid over `plan.n_devices` devices when given (a slice planned from a laptop),
else over this machine's (`jarl train` always uses the devices it runs on).
Slots are counted with `plan.tokenizer` when given (else `tokenizer`): "byte" needs no
download and spends a slot per byte, an upper bound for byte-level BPE tokenizers (Qwen,
Llama 3), so a plan that fits with it fits with the real tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import AbstractMesh

from jarl import envs, learner, models, sharding
from jarl.config_check import ConfigError
from jarl.agent import AgentConfig, make_layout
from jarl.models import lora
from jarl.models.config import NOT_ARCHITECTURE
from jarl.models.transformer import KVCache
from jarl.rollout import BUFFERS, cache_lengths
from jarl.tokenizer import load_tokenizer

GiB = 2**30
DEVICE_MEMORY_GB = {"v4": 32, "v5e": 16, "v5p": 95, "v6e": 32, "a100-40gb": 40, "a100": 80, "h100": 80, "h200": 141}
DEVICE_KINDS = (  # (substring of jax's device_kind, lower case; DEVICE_MEMORY_GB key), first match wins
    ("tpu v4", "v4"), ("tpu v5 lite", "v5e"), ("tpu v5e", "v5e"), ("tpu v5", "v5p"), ("tpu v6", "v6e"),
    ("a100-sxm4-40gb", "a100-40gb"), ("a100-pcie-40gb", "a100-40gb"), ("a100", "a100"), ("h100", "h100"),
    ("h200", "h200"))
ADVICE = {  # item -> what shrinks it
    "rollout params": "model.decode_sharding='tensor' (the rollout's copy split over fsdp x tensor, not only "
                      "tensor) or more mesh.tensor",
    "params": "shard the params over more devices (mesh.fsdp, mesh.tensor) or use bfloat16 params",
    "optimizer state": "LoRA (model.lora.rank > 0: Adam moments for the adapters only) or more mesh.fsdp",
    "reference params": "LoRA (the reference is then the base with adapters off) or algo.kl_coef=0",
    "gradients": "LoRA (gradients for the adapters only) or more mesh.fsdp",
    "rollout KV cache": "fewer rollout rows (rollout.n_tasks x rollout.group_size), shorter turns, or more "
                        "mesh.data / mesh.fsdp devices",
    "rollout buffers": "fewer rollout rows or shorter turns",
    "rollout logits": "fewer rollout rows or a shorter prompt",
    "update activations": "model.remat='block' (with model.scan_layers), algo.logits_chunk, smaller micro-batches "
                          "(raise algo.microbatches or algo.minibatches) or more mesh.data / mesh.fsdp devices",
    "reference logits": "algo.logits_chunk, smaller micro-batches, or algo.kl_coef=0",
}


@dataclasses.dataclass(frozen=True)
class Item:
  name: str
  bytes: int  # per device
  phase: str  # "state" (always), "both" (rollout and update), "rollout" or "update"
  detail: str


@dataclasses.dataclass(frozen=True)
class Plan:
  summary: str
  items: tuple[Item, ...]
  device_bytes: int | None
  device: str

  def phase(self, name: str) -> int:
    return sum(i.bytes for i in self.items if i.phase == name)

  @property
  def peak(self) -> int:
    return self.phase("state") + self.phase("both") + max(self.phase("rollout"), self.phase("update"))

  @property
  def fits(self) -> bool | None:
    return None if self.device_bytes is None else self.peak <= self.device_bytes

  def __getitem__(self, name: str) -> int:
    return sum(i.bytes for i in self.items if i.name == name)

  def table(self) -> str:
    rows = [f"{i.name:<20}{_size(i.bytes):>11}  {i.phase:<8}{i.detail}" for i in self.items]
    device = "unknown (pass --device or --device_memory_gb)" if self.device_bytes is None else (
        f"{_size(self.device_bytes)} ({self.device})")
    verdict = {None: "", True: "  -> fits", False: "  -> DOES NOT FIT"}[self.fits]
    return "\n".join([self.summary, f"{'item':<20}{'per device':>11}  {'phase':<8}detail", *rows,
                      f"{'peak':<20}{_size(self.peak):>11}  state + both + max(rollout, update)",
                      f"{'device':<20}{device:>11}{verdict}"])

  def refusal(self) -> str:
    biggest = sorted(self.items, key=lambda i: -i.bytes)[:3]
    return (f"config does not fit: peak {_size(self.peak)} per device > {_size(self.device_bytes)} "
            f"({self.device}). Biggest items: "
            + ", ".join(f"{i.name} {_size(i.bytes)}" for i in biggest) + ". To fit: "
            + "; ".join(f"{i.name}: {ADVICE[i.name]}" for i in biggest) + ".")


def _size(n: int) -> str:
  return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / 2**20:.1f} MiB"


def _number(n: int) -> str:
  return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def device_memory(device: str = "", memory_gb: float = 0.0) -> tuple[int | None, str]:
  """(bytes, source): a given size, a named kind, else the local accelerator's (None if unknown)."""
  if memory_gb:
    return int(memory_gb * GiB), "given"
  if device:
    if device not in DEVICE_MEMORY_GB:
      raise ConfigError(f"unknown device {device!r}; known: {sorted(DEVICE_MEMORY_GB)} (or give device_memory_gb)")
    return DEVICE_MEMORY_GB[device] * GiB, device
  local = jax.local_devices()[0]
  stats = local.memory_stats() or {}
  if "bytes_limit" in stats:
    return int(stats["bytes_limit"]), f"{local.device_kind}, memory_stats"
  kind = next((name for sub, name in DEVICE_KINDS if sub in local.device_kind.lower()), None)
  return (None, local.device_kind) if kind is None else (DEVICE_MEMORY_GB[kind] * GiB, kind)


def model_fields(section: dict) -> dict:
  """`model.dtype` (compute and params), `model.param_dtype` (params only) and the other ModelConfig
  fields that do not change the math (`models.NOT_ARCHITECTURE`: attention, remat, decode_sharding, ...)
  that the section sets."""
  dtype = section.get("dtype")
  fields = dict(dtype=dtype, param_dtype=section.get("param_dtype") or dtype,
                **{k: section.get(k) for k in NOT_ARCHITECTURE if k not in ("dtype", "param_dtype")})
  return {k: v for k, v in fields.items() if v is not None}


def preset_config(section) -> models.ModelConfig:
  """`model.preset` with `model.overrides` and the dtypes: what a run without hf_path builds."""
  section = dict(section)
  return models.preset(section["preset"], **{**dict(section.get("overrides") or {}), **model_fields(section)})


def model_config(section) -> models.ModelConfig:
  """The config's ModelConfig, from shapes alone (no weights are read).

  `hf_path` a GGUF file or "package:NAME": its metadata. A local directory: its config.json.
  Else `preset` when given: it stands in for the hub checkpoint (nothing downloaded; `jarl train`
  checks the checkpoint against it). Else `hf_path`'s config.json from the hub.
  """
  section = dict(section)
  if not section.get("hf_path"):
    return preset_config(section)
  if models.gguf.is_gguf(section["hf_path"]):  # a GGUF file or "package:NAME": its metadata
    return models.gguf.read_config(section["hf_path"], **model_fields(section))
  path = pathlib.Path(section["hf_path"]).expanduser()
  if not path.is_dir():
    if section.get("preset"):
      return preset_config(section)
    from huggingface_hub import hf_hub_download
    path = pathlib.Path(hf_hub_download(section["hf_path"], "config.json")).parent
  return models.config_from_hf(json.loads((path / "config.json").read_text()), **model_fields(section))


def _mesh(section, n_devices: int) -> AbstractMesh:
  shape = dict(dict(data=-1, fsdp=1, tensor=1), **dict(section or {}))
  known = math.prod(v for v in shape.values() if v != -1)
  sizes = tuple(n_devices // known if shape[a] == -1 else shape[a] for a in sharding.MESH_AXES)
  if min(sizes) < 1 or (-1 in shape.values() and n_devices % known):
    raise ConfigError(f"mesh {shape} does not fit {n_devices} devices; plan for the run's device count with "
                     "--config.plan.n_devices=N")
  return AbstractMesh(sizes, sharding.MESH_AXES)


def _per_device(shapes, specs, mesh) -> int:
  shardings = sharding.shardings_for(shapes, specs, mesh)
  return sum(math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize
             for x, s in zip(jax.tree.leaves(shapes), jax.tree.leaves(shardings)))


def _count(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


def abstract_lm(section, cfg: models.ModelConfig, critic: bool = False, mesh=None) -> models.LM:
  """A handle whose params are ShapeDtypeStructs (`model.lora` adapters attached, a value head with `critic`):
  nothing allocated, no weights read. With a mesh its forwards lay activations out over it."""
  adapters = models.LoRAConfig(**dict(section.get("lora") or {}))
  kind = "policy_value" if critic else "lm"
  graphdef, shapes, axes = (lora.abstract(cfg, kind, adapters) if adapters.rank else models.abstract(cfg, kind))
  return models.LM(cfg, kind, graphdef, shapes, axes, mesh, lora=adapters if adapters.rank else None)


def plan(config: ml_collections.ConfigDict, device: str = "", device_memory_gb: float = 0.0,
         n_devices: int | None = None) -> Plan:
  """The memory plan of a `jarl train` config (see the module docstring for what is counted)."""
  section = dict(config.get("plan") or {})
  cfg = model_config(config.model)
  algo = learner.AlgoConfig(**{k: config.algo[k] for k in ("advantage", "kl_coef", "minibatches", "microbatches",
                                                          "logits_chunk", "pack_len", "pack_rows", "head_len")
                               if k in config.algo})
  handle = abstract_lm(config.model, cfg, algo.needs_critic)
  kind, shapes, adapters = handle.kind, handle.params, handle.lora or models.LoRAConfig()
  mesh = _mesh(config.get("mesh"), n_devices or section.get("n_devices") or jax.device_count())
  data, tensor = mesh.shape["data"] * mesh.shape["fsdp"], mesh.shape["tensor"]
  specs = handle.param_specs()
  trainable, trainable_specs = lora.split(handle, shapes)[0], lora.split(handle, specs)[0]

  params = _per_device(shapes, specs, mesh)
  trained = _per_device(trainable, trainable_specs, mesh)
  tx = learner.make_optimizer(learner.OptimConfig())
  opt_bytes = optax.tree_map_params(
      tx, lambda p, spec: _per_device(p, spec, mesh), jax.eval_shape(tx.init, trainable), trainable_specs,
      transform_non_params=lambda x: x.size * x.dtype.itemsize)
  reference = params if algo.kl_coef > 0 and handle.lora is None else 0

  tokenizer = load_tokenizer(section.get("tokenizer") or config.tokenizer)
  env = envs.make(config.env.name, tokenizer=tokenizer, module=config.env.get("module", ""), **dict(config.env.kwargs))
  layout = make_layout(AgentConfig(**dict(config.agent)), env)
  B, T = config.rollout.n_tasks * config.rollout.group_size, layout.total_len
  cache = jax.eval_shape(lambda: KVCache.init(cfg, B, T))
  decode_rules = sharding.DECODE_RULES[cfg.decode_sharding]  # the rollout's layout (params, cache, rows)
  tp_decode = cfg.decode_sharding == "tensor"
  cache_shardings = models.cache_shardings(cfg, mesh, B, decode_rules)
  kv_bytes = sum(math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize
                 for x, s in zip(jax.tree.leaves(cache), jax.tree.leaves(cache_shardings)))
  # the cache grows between runs of turns (`rollout.cache_lengths`): XLA copies k, then v, into the bigger
  # cache, so half of the previous run's cache is still held beside the new one
  grown_from = ([0] + cache_lengths(layout))[-2]
  full_kv = kv_bytes
  kv_bytes += full_kv * grown_from // (2 * T)
  # live-row compaction (`sampling.compact_every`) gathers up to half the rows' cache beside it (an upper bound:
  # a 4-layer test model's compiled collect held a third of the cache more)
  compact = (config.get("sampling") or {}).get("compact_every", 0) > 0
  kv_bytes += full_kv // 2 if compact else 0
  rows = -(-B // data)
  # the rollout: its rows over data x fsdp, or over data only with "tensor" decode (the model over fsdp x tensor)
  rollout_rows, model_split = (-(-B // mesh.shape["data"]), mesh.shape["fsdp"] * tensor) if tp_decode else (rows,
                                                                                                           tensor)
  # the rollout's params (`Runner.decode_params`): compute dtype in the rollout's layout; nothing new when
  # that is what the params already are
  fresh = cfg.dtype != cfg.param_dtype or mesh.shape["fsdp"] > 1
  decode_params = _per_device(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, cfg.compute_dtype), shapes),
                              handle.param_specs(decode_rules), mesh) if fresh else 0
  c = jnp.dtype(cfg.compute_dtype).itemsize
  V = cfg.vocab_size
  buffers = rows * T * sum(jnp.dtype(d).itemsize for d in BUFFERS.values())
  micro = -(-B // (algo.minibatches * algo.microbatches * data))
  # the biggest forced chunk at every row: a first observation (the instructions are prefilled at one row) or a
  # turn's feedback; its scores into the cache, blockwise under every implementation but "xla"
  chunk = max(layout.prompt_len - int(layout.system.length), layout.feedback_len)
  blocks = (chunk, T) if cfg.attention == "xla" else (min(cfg.attention_block, n) for n in (chunk, T))
  chunk_scores = cfg.n_heads // model_split * math.prod(blocks) * (4 + c)
  rollout_logits = rollout_rows * (2 * V * 4 + chunk_scores)
  # algo.pack_len / pack_rows: the update's forwards over rows of that many slots (pack_rows of them)
  update_rows = -(-algo.pack_rows // (algo.minibatches * algo.microbatches * data)) if algo.pack_rows else micro
  update_T = algo.pack_len if algo.pack_rows else min(algo.pack_len or T, T)
  activations = update_activations(cfg, update_rows, update_T, tensor, algo.logits_chunk, adapters.rank,
                                   algo.head_len)
  # the reference / value forward's output head, slots at a time (the critic's over every slot)
  head_slots = min(algo.logits_chunk or T, T if algo.needs_critic else algo.head_len or T, T)
  ref_logits = micro * head_slots * V // tensor * 4 if algo.kl_coef > 0 or algo.needs_critic else 0

  n_params, n_trained = _count(shapes), _count(trainable)
  items = (
      Item("params", params, "state", f"{_number(n_params)} params, {cfg.param_dtype}"
           + (f"; LoRA r={adapters.rank} adapters float32" if adapters.rank else "")),
      Item("optimizer state", sum(jax.tree.leaves(opt_bytes)), "state",
           f"AdamW moments of {_number(n_trained)} trainable params"),
      Item("reference params", reference, "state", "a params copy for the KL term" if reference else
           "none (LoRA: the base with adapters off)" if algo.kl_coef > 0 else "none (algo.kl_coef = 0)"),
      Item("gradients", 2 * trained, "update", "trainable params x 2 (micro-batch + accumulator)"),
      Item("rollout params", decode_params, "rollout",
           f"the rollout's {cfg.dtype} copy, split over fsdp x tensor" if decode_params and tp_decode else
           f"the rollout's {cfg.dtype} copy, replicated over fsdp" if decode_params else
           "none (the params as they are: same dtype, no fsdp)"),
      Item("rollout KV cache", kv_bytes, "rollout",
           f"{rollout_rows} rows x {T} slots x {cfg.n_layers} layers x {cfg.n_kv_heads // model_split} kv heads x "
           f"{cfg.head_dim} x 2 (k, v), "
           f"{cfg.dtype}" + (f"; + half of the {grown_from}-slot cache it grows from" if grown_from else "")
           + ("; + half of it for live-row compaction's gathered rows" if compact else "")),
      Item("rollout buffers", buffers, "both", f"{len(BUFFERS)} [B, T] slot buffers, {rows} rows x {T} slots"),
      Item("rollout logits", rollout_logits, "rollout", f"[B, V] float32 x 2 + scores of a {chunk}-slot forced "
                                                        "chunk (observation or feedback)"),
      Item("update activations", activations, "update",
           f"per micro-batch of {micro} rows x {update_T} slots (estimate)"),
      Item("reference logits", ref_logits, "update",
           f"[{micro}, {head_slots}, V] float32, reference / value forward" if ref_logits else "none (no KL, no critic)"),
  )
  memory, source = device_memory(device or section.get("device", ""),
                                 device_memory_gb or section.get("device_memory_gb", 0.0))
  summary = (f"memory plan: {cfg.family} {_number(n_params)} ({kind}), mesh "
             + " ".join(f"{a}={n}" for a, n in mesh.shape.items())
             + f", rollout {B} rows x {T} slots, {algo.minibatches} minibatches x {algo.microbatches} microbatches")
  return Plan(summary, items, memory, source)


def update_activations(cfg: models.ModelConfig, micro: int, T: int, tensor: int = 1, logits_chunk: int = 0,
                       lora_rank: int = 0, head_len: int = 0) -> int:
  """What the update's backward pass keeps for a micro-batch of `micro` rows x T slots, per device (bytes; the
  formula in the module docstring). Every implementation but "xla" is blockwise in the update: it keeps a
  float32 log-sum-exp per query, plus one block of scores ("cudnn": the dense [T, T] mask instead).
  `head_len` (`AlgoConfig.head_len`): the output head over that many slots a row when fewer than T."""
  c = jnp.dtype(cfg.compute_dtype).itemsize
  H, K, F, V = cfg.n_heads // tensor, cfg.n_kv_heads // tensor, cfg.mlp_dim // tensor, cfg.vocab_size
  D, Dh, L = cfg.d_model, cfg.head_dim, cfg.n_layers
  if cfg.attention == "xla":
    kept_scores, block_scores = micro * H * T * T * (8 + c), 0
  else:
    block = min(cfg.attention_block, T)
    kept_scores = micro * H * T * 4
    block_scores = micro * T * T * c if cfg.attention == "cudnn" else micro * H * block * block * (8 + c)
  per_token = c * (3 * (H + K) * Dh + 5 * F + (2 * F if lora_rank else 0)) + 6 * 4 * D
  per_layer = micro * T * per_token + kept_scores
  # what the backward pass keeps of each layer; with remat, one layer's recomputed activations on top
  kept = {"none": per_layer, "block": micro * T * c * D,
          "dots": micro * T * c * ((H + 2 * K) * Dh + 2 * D + 2 * F)}[cfg.remat]
  head_T = min(head_len or T, T)  # the output head's slots a row
  head_slots = min(logits_chunk or head_T, head_T)  # ... at a time
  head_grad = V // tensor * D * 4 if head_slots < head_T else 0  # the chunks' loop accumulates the head's gradient
  return (L * kept + (per_layer if cfg.remat != "none" else 0) + block_scores
          + micro * T * c * D + micro * head_slots * 4 * 4 * V // tensor + head_grad)


def check(config: ml_collections.ConfigDict) -> Plan:
  """The plan; a ConfigError naming the biggest items when the known device memory is too small."""
  result = plan(config, n_devices=jax.device_count())  # the devices the run has, whatever plan.n_devices says
  if result.fits is False:
    raise ConfigError(result.refusal())
  return result


def main(config: ml_collections.ConfigDict, device: str = "", device_memory_gb: float = 0.0) -> None:
  """`jarl plan` entry point: print the plan; exit 1 with the refusal if it does not fit."""
  result = plan(config, device or "", device_memory_gb or 0.0)
  print(result.table())
  if result.fits is False:
    raise SystemExit(result.refusal())
