"""TrainState and the jitted RL update (optimizer: `jarl.optim`; the forward: `jarl.forward`; SFT: `jarl.sft`).

    state = init_state(lm, OptimConfig(lr=1e-4), reference=True)
    update = make_update(lm, algo, optim, group_size=8)      # (state, traj) -> (state, metrics)
    iteration = make_iteration(collect, update)              # state -> (state, metrics, traj): rollout + update, ONE jit

The update: advantages from the registered estimator (values from the value head for
critic-based estimators), reference log-probs for the KL term, then `epochs` passes over
`minibatches` shuffled row minibatches, each one optax step whose gradient is
accumulated over `microbatches` (a scan), so batch size and memory are independent.
Micro-batch losses are weighted by their share of the minibatch's tokens (or rows for
sequence-level aggregation), so accumulation gives the full-minibatch gradient exactly.
With `pack_len` (and `pack_rows`) each micro-batch's forwards run over its episodes' valid slots
laid end to end in fewer, denser rows (`jarl.packing`, attention kept within each episode): the
same outputs for less compute; the loss still reads them per episode. With `head_len` the output
head runs only at the slots the loss trains on, laid end to end (`packing.pack_trained`).
The optimizer (`jarl.optim`, re-exported here) skips (and counts) steps whose gradients or
updates are not finite: params never receive NaNs or infs. With LoRA adapters
(`jarl.models.lora`) only the trainable half of the params is differentiated and has optimizer
state, and the KL reference is the base policy with the adapters off instead of a stored copy.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax.sharding import Mesh

from jarl import algos, forward, planning, safety, sharding
from jarl.agent import Segment
from jarl.algos import credit
from jarl.models import LM, lora
from jarl.optim import OptimConfig, make_optimizer  # noqa: F401  (also learner.OptimConfig, learner.make_optimizer)
from jarl.packing import pack_slots, pack_trained
from jarl.types import Trajectory

Array = jax.Array
CRITIC_ESTIMATORS = ("gae", "gae_turns")  # advantage estimators that read the value head


@dataclasses.dataclass(frozen=True)
class AlgoConfig:
  advantage: str = "grpo"
  advantage_kwargs: tuple = ()  # ((name, value), ...) passed to the estimator
  policy_loss: str = "ppo_clip"
  policy_loss_kwargs: tuple = ()  # e.g. (("clip_low", 0.2), ("clip_high", 0.28))
  entropy_coef: float = 0.0
  kl_coef: float = 0.0
  kl_estimator: str = "k3"
  value_coef: float = 0.5  # used when the advantage needs a critic
  detach_critic: bool = False  # the value loss trains the value head only, not the shared backbone
  value_clip: float = 0.2
  filter_zero_variance: bool = False
  whiten_advantages: bool = False  # mean 0, std 1 over the batch's trained tokens (PPO's normalisation)
  # Per-segment credit (jarl.algos.credit): {segment: credit name or {name=..., **hparams}}, e.g.
  # {"verdict": "counterfactual", "revise": {"name": "score", "alpha": 1.0}}; normalised to
  # ((segment, name, ((hparam, value), ...)), ...). Segments not named keep `advantage`'s.
  segment_credit: tuple = ()
  cost_budget: float | None = None  # max expected episode cost (env info["cost"]); None: unconstrained
  lagrange_lr: float = 0.05  # dual ascent step of the cost multiplier (jarl.safety)
  epochs: int = 1
  minibatches: int = 1
  microbatches: int = 1
  # The update's output head over this many slots at a time (0: all at once). Each chunk's
  # [rows, chunk, vocab] logits are recomputed in the backward pass, so [rows, slots, vocab]
  # is never held: the difference between fitting and not at a 150k vocabulary.
  logits_chunk: int = 0
  # The update's forwards over valid slots only: each micro-batch's episodes laid end to end into rows of
  # this many slots, attention kept within each episode (0: the [B, T] slot buffers as they are; idle
  # slots and padding cost as much as real tokens). The same loss and gradients. `pack_rows`: how many
  # such rows for the whole batch (0: one per episode, each episode's valid slots moved to the front);
  # fewer, longer rows drop the padding between episodes too: size them from the batch's valid slots
  # (episodes x their mean valid slots, plus ~25% for next-fit's gaps and the spread; policy/pack_fill
  # logs the share of packed slots in use).
  # A micro-batch whose episodes do not fit is not trained on (policy/pack_overflow > 0: the step is
  # skipped like a non-finite one); `jarl train` stops and says which knob to raise.
  pack_len: int = 0
  pack_rows: int = 0
  # The update's output head only at the slots the loss trains on: each micro-batch's trained slots laid end
  # to end into as many rows of this many slots as it has episodes (0: every policy slot of every episode,
  # trained or not: stopped completions' idle slots cost the head as much as real tokens). The same loss and
  # gradients. Size it from the trained tokens per episode (their mean, plus ~25% for the spread); a
  # micro-batch whose trained slots do not fit is not trained on (policy/pack_overflow counts its episodes
  # that did not fit; `jarl train` stops and names this knob).
  head_len: int = 0

  def __post_init__(self):
    algos.get_advantage(self.advantage)
    algos.get_policy_loss(self.policy_loss)
    algos.get_kl(self.kl_estimator)
    for name in ("epochs", "minibatches", "microbatches"):
      if getattr(self, name) < 1:
        raise ValueError(f"AlgoConfig.{name} must be >= 1, got {getattr(self, name)}")
    if self.logits_chunk < 0:
      raise ValueError(f"AlgoConfig.logits_chunk must be >= 0 (0: no chunks), got {self.logits_chunk}")
    if self.head_len < 0:
      raise ValueError(f"AlgoConfig.head_len must be >= 0 (0: the head at every policy slot), got {self.head_len}")
    if self.pack_len < 0 or self.pack_rows < 0:
      raise ValueError(f"AlgoConfig.pack_len and pack_rows must be >= 0 (0: no packing / one row per episode), "
                       f"got {self.pack_len}, {self.pack_rows}")
    if self.pack_rows and not self.pack_len:
      raise ValueError(f"AlgoConfig.pack_rows={self.pack_rows} needs pack_len (the packed rows' length) > 0")
    if self.pack_rows % (self.minibatches * self.microbatches):
      raise ValueError(f"AlgoConfig.pack_rows={self.pack_rows} must split into minibatches x microbatches = "
                       f"{self.minibatches * self.microbatches} micro-batches")
    object.__setattr__(self, "segment_credit", credit.spec(self.segment_credit))
    if self.cost_budget is not None and (self.cost_budget < 0 or self.lagrange_lr <= 0):
      raise ValueError(f"AlgoConfig.cost_budget must be >= 0 and lagrange_lr > 0, got {self.cost_budget}, "
                       f"{self.lagrange_lr}")

  @property
  def needs_critic(self) -> bool:
    return self.advantage in CRITIC_ESTIMATORS


@flax.struct.dataclass
class TrainState:
  params: Any
  opt_state: Any
  ref_params: Any  # frozen reference policy (None without a KL term, and with LoRA)
  step: Array
  rng: Array  # raw uint32 key data (checkpointable)
  lagrange: Array  # the cost multiplier (jarl.safety); stays 0 without a cost budget

  def key(self) -> Array:
    return jax.random.wrap_key_data(self.rng)


def _stores_reference(lm: LM, reference: bool) -> bool:
  return reference and lm.lora is None  # with LoRA the reference is the base: lora.adapters_off(params)


def init_state(lm: LM, optim: OptimConfig, seed: int = 0, reference: bool = False,
               lagrange: float = 0.0) -> TrainState:
  """Optimizer state (for the trainable params only) is created by jit from the (possibly
  sharded) params and inherits their layout."""
  opt_state = jax.jit(make_optimizer(optim).init)(lora.split(lm, lm.params)[0])
  ref = jax.tree.map(jnp.copy, lm.params) if _stores_reference(lm, reference) else None
  return TrainState(lm.params, opt_state, ref, jnp.zeros((), jnp.int32),
                    jax.random.key_data(jax.random.key(seed)), jnp.asarray(lagrange, jnp.float32))


def state_shardings(lm: LM, optim: OptimConfig, mesh: Mesh, reference: bool = False) -> TrainState:
  """NamedShardings for every leaf of a TrainState: params' layout for params, optimizer
  moments and reference params; replicated for counters and the key."""
  params = lm.param_shardings(mesh)
  replicated = sharding.replicated(mesh)
  tx = make_optimizer(optim)
  trainable = lora.split(lm, lm.params)[0]
  opt = optax.tree_map_params(tx, lambda _, sh: sh, jax.eval_shape(tx.init, trainable), lora.split(lm, params)[0],
                              transform_non_params=lambda _: replicated)
  return TrainState(params, opt, params if _stores_reference(lm, reference) else None, replicated, replicated,
                    replicated)


def make_loss_step(lm: LM, optim: OptimConfig, loss_fn: Callable, prefix: str, mesh: Mesh | None = None) -> Callable:
  """Jitted `(params, opt_state, batch) -> (params, opt_state, metrics)`: one optimizer step on
  `loss_fn(params, batch) -> (loss, metrics)` (the SFT and reward-model steps). With LoRA only the
  trainable half is differentiated; metrics (loss, grad_norm, skipped_updates and loss_fn's own)
  are named `{prefix}/...`. With a mesh, params and optimizer state keep their shardings."""
  tx = make_optimizer(optim)
  layout = {}
  if mesh is not None:
    shardings = state_shardings(lm, optim, mesh)
    layout = dict(out_shardings=(shardings.params, shardings.opt_state, None))

  def step(params, opt_state, batch):
    trainable, frozen = lora.split(lm, params)
    (loss, metrics), grads = jax.value_and_grad(lambda t: loss_fn(lora.join(t, frozen), batch), has_aux=True)(trainable)
    updates, opt_state = tx.update(grads, opt_state, trainable)
    params = lora.join(optax.apply_updates(trainable, updates), frozen)
    metrics = dict(loss=loss, **metrics, grad_norm=optax.global_norm(grads), skipped_updates=opt_state.total_notfinite)
    return params, opt_state, {f"{prefix}/{k}": v for k, v in metrics.items()}

  return jax.jit(step, donate_argnums=(0, 1), **layout)


def skipped_updates(state: TrainState) -> Array:
  return state.opt_state.total_notfinite


def make_update(lm: LM, algo: AlgoConfig, optim: OptimConfig, group_size: int,
                policy_slots: np.ndarray | None = None) -> Callable:
  """`update(state, traj) -> (state, metrics)`, pure; jit it (make_iteration does).

  `policy_slots` (`Layout.policy_slots`): compute the output head and the loss only at
  the columns that can hold sampled tokens (the same update, less work); None: all slots.
  Best-of-K rollouts (`jarl.planning`) train on the chosen candidates only, with the
  policy's own log-probs of their text as old_logprob: search distillation under the clip.
  """
  if algo.needs_critic and lm.kind != "policy_value":
    raise ValueError(f"advantage {algo.advantage!r} needs a value head: use a 'policy_value' model "
                     "(jarl.models.with_value_head)")
  if credit.needs_values(algo.segment_credit) and not algo.needs_critic:
    raise ValueError(f"segment credit {credit.needs_values(algo.segment_credit)} reads the critic: choose a critic "
                     f"advantage ({sorted(CRITIC_ESTIMATORS)}) on a 'policy_value' model, not {algo.advantage!r}")
  tx = make_optimizer(optim)
  estimator = algos.get_advantage(algo.advantage)
  policy_loss = algos.get_policy_loss(algo.policy_loss)
  kl_fn = algos.get_kl(algo.kl_estimator)
  token_level_agg = dict(algo.policy_loss_kwargs).get("agg", "token_mean") == "token_mean"

  def pack(mb, head: bool = True):
    """A micro-batch's packings: its slots for the forward (`AlgoConfig.pack_len`) and its trained slots for the
    output head (`head_len`, when `head`: its loss mask at the policy slots), None for either that is off, and
    which of its episodes did not fit."""
    packed, head_index, overflow_B = None, None, jnp.zeros(mb["tokens"].shape[:1], bool)
    if algo.pack_len:
      packed, overflow_B = pack_slots(mb, algo.pack_len, algo.pack_rows // (algo.minibatches * algo.microbatches)
                                      or mb["tokens"].shape[0])
    if algo.head_len and head:
      head_index, head_overflow_B = pack_trained(mb["loss_mask"], algo.head_len)
      overflow_B = overflow_B | head_overflow_B
    return packed, head_index, overflow_B

  def loss_fn(params, mb, weight):
    packed, head_index, overflow_B = pack(mb)
    overflow = overflow_B.sum()
    logp_BxP, entropy_BxP, values_BxP = forward.policy_outputs(lm, params, mb, policy_slots, algo.detach_critic,
                                                                algo.logits_chunk, packed, head_index)
    mask = mb["loss_mask"]
    logp_BxP = jnp.where(mask, logp_BxP, 0.0)
    loss, metrics = policy_loss(logp_BxP, mb["old_logprob"], mb["advantage"], mask, **dict(algo.policy_loss_kwargs))
    metrics["entropy"] = algos.masked_mean(entropy_BxP, mask)
    loss = loss - algo.entropy_coef * metrics["entropy"]
    if mb.get("ref_logprob") is not None:
      metrics["kl"] = algos.masked_mean(kl_fn(logp_BxP, mb["ref_logprob"]), mask)
      loss = loss + algo.kl_coef * metrics["kl"]
    if values_BxP is not None and algo.needs_critic:
      metrics["value_loss"], _ = algos.value_loss(values_BxP, mb["old_value"], mb["returns"], mask, clip=algo.value_clip)
      loss = loss + algo.value_coef * metrics["value_loss"]
    metrics = jax.tree.map(lambda m: m * weight, metrics)
    if algo.pack_len or algo.head_len:  # episodes that did not fit: NaN gradients, so the optimizer skips the step
      loss, metrics["pack_overflow"] = loss * jnp.where(overflow > 0, jnp.nan, 1.0), overflow
    return loss * weight, metrics

  def minibatch_step(state_params_opt, mb):
    params, opt_state = state_params_opt
    trainable, frozen = lora.split(lm, params)
    M = algo.microbatches
    rows = mb["tokens"].shape[0]
    if rows % M:
      raise ValueError(f"minibatch of {rows} rows does not split into {M} microbatches")
    micro = jax.tree.map(lambda x: x.reshape((M, rows // M) + x.shape[1:]), mb)
    share = (micro["loss_mask"].sum((1, 2)) / jnp.maximum(mb["loss_mask"].sum(), 1) if token_level_agg
             else jnp.full((M,), 1.0 / M))

    def accumulate(grads_acc, xs):
      one, weight = xs
      (_, metrics), grads = jax.value_and_grad(lambda t: loss_fn(lora.join(t, frozen), one, weight),
                                               has_aux=True)(trainable)
      return jax.tree.map(jnp.add, grads_acc, grads), metrics

    zeros = jax.tree.map(jnp.zeros_like, trainable)
    grads, metrics = jax.lax.scan(accumulate, zeros, (micro, share))
    metrics = jax.tree.map(lambda m: m.sum(0), metrics)
    metrics["grad_norm"] = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, opt_state, trainable)
    return (lora.join(optax.apply_updates(trainable, updates), frozen), opt_state), metrics

  def update(state: TrainState, traj: Trajectory):
    batch = dict(tokens=traj.tokens, positions=traj.positions, valid=traj.valid, loss_mask=traj.loss_mask,
                 old_logprob=traj.logprob)
    metrics, lagrange = {}, state.lagrange
    if algo.cost_budget is not None:  # the policy trains on r - lam * c; lam takes a dual step below
      episode_cost_B = safety.turn_costs(traj).sum(1)
      traj = safety.penalize(traj, lagrange)
      lagrange = safety.dual_step(lagrange, episode_cost_B, algo.cost_budget, algo.lagrange_lr)
      metrics.update(lagrange=state.lagrange, cost_over_budget=episode_cost_B.mean() - algo.cost_budget)
    B = traj.tokens.shape[0]
    micro_rows = B // (algo.minibatches * algo.microbatches)
    forward_overflow = []  # episodes the forwards below could not pack

    def outputs_of(params, batch, slots, head=True):  # no gradient: one micro-batch of rows at a time, like the update
      def one(mb):
        packed, head_index, overflow_B = pack(mb, head)
        outputs = forward.policy_outputs(lm, params, mb, slots, logits_chunk=algo.logits_chunk, packed=packed,
                                         head_index=head_index)
        return outputs, overflow_B
      outputs, overflow_B = forward.in_chunks(one, batch, micro_rows, axis=0)
      forward_overflow.append(overflow_B.sum())
      return outputs

    values_BxT = None
    if algo.needs_critic:  # the estimator reads values at every slot
      values_BxT = jax.lax.stop_gradient(outputs_of(state.params, batch, None, head=False)[2])
    estimate = estimator(traj, group_size=group_size, values_BxT=values_BxT, **dict(algo.advantage_kwargs))
    batch["advantage"] = credit.apply(traj, estimate.adv_BxT, algo.segment_credit, group_size, values_BxT)
    if algo.needs_critic:
      batch["old_value"], batch["returns"] = values_BxT, estimate.returns_BxT
    stats = algos.group_stats(algos.advantages.episode_returns(traj), group_size)
    metrics["zero_variance_fraction"] = stats["zero_variance_fraction"]
    if algo.filter_zero_variance:  # (segments with their own credit keep their tokens)
      credited_BxT = jnp.isin(traj.segment, jnp.asarray([int(Segment[s.upper()]) for s, _, _ in algo.segment_credit],
                                                        jnp.int32))
      batch["loss_mask"] = batch["loss_mask"] & ~(stats["zero_variance_B"][:, None] & ~credited_BxT)
    # the tokens the update trains on; 0 (every group filtered out) leaves the per-token means undefined (logged 0)
    metrics["trained_tokens"] = batch["loss_mask"].sum()
    if algo.whiten_advantages:
      batch["advantage"] = algos.advantages.whiten(batch["advantage"], batch["loss_mask"])
    if policy_slots is not None:  # per-slot training fields only at the policy slots: [B, T] -> [B, P]
      batch.update({k: v[:, policy_slots] for k, v in batch.items() if k not in ("tokens", "positions", "valid")})
    ref_params = lora.adapters_off(state.params) if lm.lora is not None and algo.kl_coef else state.ref_params
    if ref_params is not None:
      ref_logp_BxP = outputs_of(ref_params, batch, policy_slots)[0]
      batch["ref_logprob"] = jnp.where(batch["loss_mask"], ref_logp_BxP, 0.0)
    if forward_overflow:  # values or reference log-probs missing for some episode: no update (skipped like NaNs)
      overflow = sum(forward_overflow)
      batch["advantage"] = jnp.where(overflow > 0, jnp.nan, batch["advantage"])

    if B % algo.minibatches:
      raise ValueError(f"batch of {B} rows does not split into {algo.minibatches} minibatches")
    key = jax.random.fold_in(state.key(), state.step)

    def epoch(carry, key):
      order = jax.random.permutation(key, B)
      shuffled = jax.tree.map(lambda x: x[order].reshape((algo.minibatches, B // algo.minibatches) + x.shape[1:]),
                              batch)
      return jax.lax.scan(minibatch_step, carry, shuffled)

    (params, opt_state), step_metrics = jax.lax.scan(epoch, (state.params, state.opt_state),
                                                     jax.random.split(key, algo.epochs))
    metrics.update(jax.tree.map(jnp.mean, step_metrics))
    if algo.pack_len or algo.head_len:  # episodes that did not fit: over the optimizer steps and the forwards before
      metrics["pack_overflow"] = step_metrics["pack_overflow"].sum() + sum(forward_overflow)
    if algo.head_len:  # the head's packed slots in use
      metrics["head_fill"] = metrics["trained_tokens"] / (B * algo.head_len)
    if algo.pack_len:
      metrics["pack_fill"] = traj.valid.sum() / ((algo.pack_rows or B) * algo.pack_len)  # packed slots in use
    metrics["skipped_updates"] = opt_state.total_notfinite
    metrics = {f"policy/{k}": v for k, v in metrics.items()}
    return state.replace(params=params, opt_state=opt_state, step=state.step + 1, lagrange=lagrange), metrics

  return update


def rollout_metrics(traj: Trajectory) -> dict:
  ep = traj.episode
  return {"episode/return": ep["return_"].mean(), "episode/success": ep["success"].mean(),
          "episode/turns": ep["turns"].mean(), "episode/valid_action_rate": ep["valid_action_rate"].mean(),
          "episode/response_tokens": ep["tokens"].mean(),
          "rollout/decode_steps": ep["decode_steps"].max(),  # the batch's (the same in every row)
          "rollout/decode_fraction": ep["decode_steps"].max() / jnp.maximum(ep["decode_budget"].max(), 1),
          # the share of budget x rows computed (below decode_fraction with live-row compaction)
          "rollout/decode_row_fraction": ep["decode_rows"].max() / jnp.maximum(ep["decode_budget"].max() *
                                                                              ep["decode_rows"].shape[0], 1),
          **({"episode/cost": ep["cost"].mean()} if "cost" in ep else {}),
          **({"episode/host_error": ep["host_error"].mean()} if "host_error" in ep else {}),
          "episode/nonfinite_logprobs": (~jnp.isfinite(traj.logprob) & traj.loss_mask).sum(),
          **({f"critique/{k}": v for k, v in credit.critique_metrics(traj).items()} if traj.attempts else {}),
          **({f"planning/{k}": v for k, v in planning.metrics(traj).items()} if traj.planning else {})}


def make_iteration(collect: Callable, update: Callable, shardings: TrainState | None = None,
                   donate: bool = True, reward: Callable | None = None) -> Callable:
  """One jitted program: rollout with the current params, then the update.

  With `shardings` (see `state_shardings`) the state keeps exactly that layout across
  iterations, so the program compiles once. `reward(traj, params) -> traj` (reward models
  or a judge, `jarl.reward_model`) rewrites the rollout's rewards before the update.
  A collect that steps its env on the host (`collect.in_graph` False: `jarl.envs.host`)
  runs eagerly first, and the rest is one jitted program.
  """
  def rollout_key(state: TrainState):
    return jax.random.fold_in(jax.random.fold_in(state.key(), state.step), 1)

  def learn(state: TrainState, traj: Trajectory):
    if reward is not None:
      traj = reward(traj, state.params)
    state, metrics = update(state, traj)
    metrics.update(rollout_metrics(traj))
    return state, metrics, traj

  layout = {} if shardings is None else dict(out_shardings=(shardings, None, None))
  donate_argnums = (0,) if donate else ()
  if not getattr(collect, "in_graph", True):
    learn_jit = jax.jit(learn, donate_argnums=donate_argnums, **layout)
    return lambda state: learn_jit(state, collect(state.params, rollout_key(state)))
  if shardings is not None:
    layout["in_shardings"] = (shardings,)
  return jax.jit(lambda state: learn(state, collect(state.params, rollout_key(state))),
                 donate_argnums=donate_argnums, **layout)
