"""Reward models from preference pairs, and model rewards inside the rollout (RM or LLM judge).

    pairs = pairs_from_groups(traj, group_size=8)                # chosen: the higher env return
    rm = models.create(cfg, kind="reward")                        # backbone + scalar at the last valid token
    params, history = train_reward_model(rm, pairs, OptimConfig(lr=1e-3), steps=200, batch_size=32)
    reward = make_rm_reward([(rm, params)], weights=[1.0], env_weight=0.0)
    iteration = learner.make_iteration(collect, update, reward=reward)  # rollout -> reward -> update: ONE jit

Training (Bradley & Terry 1952; reward models in RLHF: Ouyang et al. 2022): a scalar
r(x) per whole episode x, fitted to pairs (x_c preferred to x_r) by

    loss = -mean log sigmoid(r(x_c) - r(x_r)),

with the learner's optimizer (clip, AdamW, non-finite guard) and LoRA-aware params split.

Model rewards share ONE signature, `reward(traj, params) -> traj`, where `params` are the
policy's current params (`make_iteration` passes `state.params`): an RM ignores them, a
judge that is the policy itself (`make_judge_reward(lm, None, ...)`) reads them. Each row's
score s_b is added to the reward of its last played turn (`turn_reward[b, n_last]` and
`reward[b, end slot of n_last]`, `jarl.safety.turn_end_slots`), after the env's rewards are
scaled by `env_weight`:

    r'_{b,n} = env_weight * r_{b,n} + [n = n_last(b)] * s_b,     s_b = sum_m w_m RM_m(x_b)

so every estimator (GRPO, RLOO, GAE over tokens or turns) sees it. `episode["return_"]`
becomes the new return; `episode["env_return"]` keeps the env's unscaled return and
`episode["model_score"]` the added s_b (accumulated, like the return, over composed rewards). Rewards compose:
`lambda traj, p: judge(rm(traj, p), p)` (give the second env_weight=1). The critique's
counterfactual records (`traj.attempts`) keep env rewards. Model params are closed over;
jit passes big closed-over arrays as arguments, not as constants in the program.

Generative judge (LLM-as-a-judge, Zheng et al. 2023): a forced prompt ("Is this answer
correct? ") is appended after each row's episode, positions continuing the row's, and one
forward reads the judge's next-token distribution at the last prompt token:

    s_b = weight * (log p(yes | x_b, prompt) - log p(no | x_b, prompt))   (or weight * p(yes | ...))
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh
from tqdm.auto import tqdm

from jarl import algos, learner, models, safety, sharding
from jarl.envs.codec import Codec
from jarl.models import LM, lora
from jarl.tokenizer import Tokenizer
from jarl.types import Trajectory

Array = jax.Array
FIELDS = ("tokens", "positions", "valid")


@flax.struct.dataclass
class PreferencePairs:
  """P pairs of whole episodes, each side {tokens, positions int32 [P, T], valid bool [P, T]}:
  the same slot buffers as a rollout (gaps of invalid slots allowed) or an SFT batch (packed)."""
  chosen: dict
  rejected: dict

  @property
  def size(self) -> int:
    return self.chosen["tokens"].shape[0]

  def take(self, index) -> "PreferencePairs":
    """The pairs at `index` (an int array or slice), on every side and buffer."""
    return jax.tree.map(lambda x: x[index], self)


def episodes(x: Trajectory | dict) -> dict:
  """{tokens, positions, valid} as host arrays [B, T], from a Trajectory or an SFT-style batch dict."""
  get = (lambda k: getattr(x, k)) if isinstance(x, Trajectory) else x.__getitem__
  return {k: np.asarray(jax.device_get(get(k))) for k in FIELDS}


def _pad(buf: dict, T: int) -> dict:
  return {k: np.pad(v, ((0, 0), (0, T - v.shape[1]))) for k, v in buf.items()}  # pads: invalid slots


def pairs_from_trajectories(a: Trajectory | dict, b: Trajectory | dict, return_a=None, return_b=None
                            ) -> PreferencePairs:
  """Row i of `a` against row i of `b`: the one with the higher env return is chosen, ties dropped.

  Returns default to `traj.episode["return_"]`; pass them for SFT-style dicts, e.g. expert
  episodes (`jarl.sft.expert_batch`, return 1) against a rollout's. Host side (numpy).
  """
  ret_a = np.asarray(jax.device_get(a.episode["return_"] if return_a is None else return_a), np.float32)
  ret_b = np.asarray(jax.device_get(b.episode["return_"] if return_b is None else return_b), np.float32)
  ea, eb = episodes(a), episodes(b)
  if ea["tokens"].shape[0] != eb["tokens"].shape[0] or ret_a.shape != ret_b.shape:
    raise ValueError(f"pairs need as many rows on both sides: {ea['tokens'].shape[0]} vs {eb['tokens'].shape[0]}")
  T = max(ea["tokens"].shape[1], eb["tokens"].shape[1])
  ea, eb = _pad(ea, T), _pad(eb, T)
  keep_P, a_wins_P = ret_a != ret_b, ret_a > ret_b
  side = lambda first, second: {k: np.where(a_wins_P[:, None], first[k], second[k])[keep_P] for k in FIELDS}
  return PreferencePairs(chosen=side(ea, eb), rejected=side(eb, ea))


def pairs_from_groups(traj: Trajectory, group_size: int) -> PreferencePairs:
  """Every pair of episodes of one task (rows b*G .. b*G+G-1) whose env returns differ."""
  B = traj.tokens.shape[0]
  if B % group_size:
    raise ValueError(f"{B} rows do not split into groups of {group_size}")
  i, j = np.triu_indices(group_size, k=1)
  starts = np.arange(0, B, group_size)[:, None]
  rows_a, rows_b = (starts + i).reshape(-1), (starts + j).reshape(-1)
  ret = np.asarray(jax.device_get(traj.episode["return_"]))
  ep = episodes(traj)
  return pairs_from_trajectories({k: v[rows_a] for k, v in ep.items()}, {k: v[rows_b] for k, v in ep.items()},
                                 ret[rows_a], ret[rows_b])


def score(rm_lm: LM, params, tokens_BxT: Array, positions_BxT: Array, valid_BxT: Array) -> Array:
  """The RM's scalar [B] per row: its head at the row's last valid slot."""
  if rm_lm.kind != "reward":
    raise ValueError(f"a reward model needs a 'reward' handle (models.create(cfg, kind='reward')), got {rm_lm.kind!r}")
  return rm_lm.apply(params, tokens_BxT, positions_BxT, valid_BxT)


def _pair_scores(rm_lm: LM, params, pairs: PreferencePairs) -> tuple[Array, Array]:
  """(chosen [P], rejected [P]) from one forward over both sides stacked [2P, T]."""
  both = {k: jnp.concatenate([pairs.chosen[k], pairs.rejected[k]]) for k in FIELDS}
  s_2P = score(rm_lm, params, both["tokens"], both["positions"], both["valid"])
  P = pairs.chosen["tokens"].shape[0]
  return s_2P[:P], s_2P[P:]


def make_rm_step(rm_lm: LM, optim: learner.OptimConfig, mesh: Mesh | None = None) -> Callable:
  """Jitted `(params, opt_state, pairs) -> (params, opt_state, metrics)`: one Bradley-Terry step.

  With LoRA adapters only the trainable half is differentiated; name the head in
  `LoRAConfig.also_train` (("head",)) or it stays at its random init.
  """
  if rm_lm.lora is not None and "head" not in rm_lm.lora.also_train:
    raise ValueError("a LoRA reward model needs its scalar head trained: LoRAConfig(also_train=('head',))")

  def loss_fn(params, pairs):
    chosen_P, rejected_P = _pair_scores(rm_lm, params, pairs)
    return algos.bradley_terry(chosen_P, rejected_P)

  return learner.make_loss_step(rm_lm, optim, loss_fn, "rm", mesh)


def train_reward_model(rm_lm: LM, pairs: PreferencePairs, optim: learner.OptimConfig, steps: int,
                       batch_size: int, seed: int = 0, params=None, mesh: Mesh | None = None,
                       progress: bool = True) -> tuple[dict, list[dict]]:
  """`steps` Bradley-Terry steps on random minibatches of `batch_size` pairs (from `rm_lm.params`
  unless `params` is given); returns (params, per-step metrics as floats)."""
  if batch_size > pairs.size:
    raise ValueError(f"batch_size {batch_size} is larger than the {pairs.size} pairs")
  step_fn = make_rm_step(rm_lm, optim, mesh)
  params = jax.tree.map(jnp.copy, rm_lm.params if params is None else params)  # the step donates its input
  opt_state = jax.jit(learner.make_optimizer(optim).init)(lora.split(rm_lm, params)[0])
  host = jax.device_get(pairs)
  rng = np.random.default_rng(seed)
  history = []
  for _ in tqdm(range(steps), desc="reward model", leave=False, disable=not progress):
    batch = host.take(rng.choice(pairs.size, size=batch_size, replace=False))
    if mesh is not None:
      batch = sharding.shard_batch(batch, mesh)
    params, opt_state, metrics = step_fn(params, opt_state, batch)
    history.append(metrics)
  return params, [{k: float(v) for k, v in m.items()} for m in jax.device_get(history)]




@functools.partial(jax.jit, static_argnums=0)
def _margins(rm_lm: LM, params, pairs: PreferencePairs) -> Array:
  chosen_P, rejected_P = _pair_scores(rm_lm, params, pairs)
  return chosen_P - rejected_P


def evaluate_pairs(rm_lm: LM, params, pairs: PreferencePairs, batch_size: int = 256) -> float:
  """Pair accuracy: the fraction of pairs whose chosen episode the RM scores strictly higher."""
  if not pairs.size:
    raise ValueError("no preference pairs to evaluate (every group's returns were tied?)")
  margins = [_margins(rm_lm, params, pairs.take(slice(i, i + batch_size))) for i in range(0, pairs.size, batch_size)]
  return float((np.concatenate(jax.device_get(margins)) > 0).mean())


def add_to_last_turn(traj: Trajectory, score_B: Array, env_weight: float = 1.0) -> Trajectory:
  """env_weight * the env's rewards, plus score_B on each row's last played turn (its turn
  record and its end slot, `safety.turn_end_slots`); the episode return follows."""
  B, N = traj.turn_reward.shape
  T = traj.reward.shape[1]
  last_B = jnp.max(jnp.where(traj.turn_live, jnp.arange(N), -1), axis=1)  # -1: the row played no turn
  played_B = last_B >= 0
  s_B = jnp.where(played_B, score_B.astype(jnp.float32), 0.0)
  end_B = jnp.take_along_axis(safety.turn_end_slots(traj), jnp.maximum(last_B, 0)[:, None], axis=1)[:, 0]
  turn_reward = env_weight * jnp.asarray(traj.turn_reward) + jax.nn.one_hot(last_B, N) * s_B[:, None]
  slot_B = jnp.where(played_B & (end_B >= 0), end_B, T)
  reward = (env_weight * jnp.asarray(traj.reward)).at[jnp.arange(B), slot_B].add(s_B, mode="drop")
  ep = traj.episode
  episode = dict(ep, return_=env_weight * ep["return_"] + s_B, env_return=ep.get("env_return", ep["return_"]),
                 model_score=env_weight * ep.get("model_score", 0.0) + s_B)
  return traj.replace(reward=reward, turn_reward=turn_reward, episode=episode)


def make_rm_reward(rms: Sequence[tuple[LM, dict]], weights: Sequence[float] | None = None,
                   env_weight: float = 1.0) -> Callable:
  """`reward(traj, params=None) -> traj` adding sum_m w_m RM_m(episode) to each row's last
  played turn (one forward per RM over the rollout's [B, T] slots; `params` is unused)."""
  rms = list(rms)
  weights = [1.0] * len(rms) if weights is None else [float(w) for w in weights]
  if not rms or len(weights) != len(rms):
    raise ValueError(f"need one weight per reward model: {len(rms)} models, {len(weights)} weights")
  for rm_lm, _ in rms:
    if rm_lm.kind != "reward":
      raise ValueError(f"make_rm_reward takes 'reward' handles, got {rm_lm.kind!r}")

  def reward(traj: Trajectory, params=None) -> Trajectory:
    del params
    s_B = sum(w * score(rm_lm, p, traj.tokens, traj.positions, traj.valid) for (rm_lm, p), w in zip(rms, weights))
    return add_to_last_turn(traj, s_B, env_weight)

  return reward


def judge_scores(judge_lm: LM, params, tokens_BxT: Array, positions_BxT: Array, valid_BxT: Array,
                 prompt_K: Array, yes_id: int, no_id: int, prob: bool = False) -> Array:
  """log p(yes) - log p(no) (or p(yes)) [B] at the last of the K prompt tokens forced after each row.

  The prompt goes in K new slots after the buffer (the slots between a row's last valid one and
  T are invalid, so that is right after its episode), at positions continuing the row's.
  """
  if judge_lm.kind not in ("lm", "policy_value"):
    raise ValueError(f"a judge needs an LM head ('lm' or 'policy_value' handle), got {judge_lm.kind!r}")
  B, K = tokens_BxT.shape[0], prompt_K.shape[0]
  next_B = jnp.max(jnp.where(valid_BxT, positions_BxT + 1, 0), axis=1)
  tokens_BxS = jnp.concatenate([tokens_BxT, jnp.broadcast_to(prompt_K, (B, K))], axis=1)
  positions_BxS = jnp.concatenate([positions_BxT, next_B[:, None] + jnp.arange(K)], axis=1)
  valid_BxS = jnp.concatenate([valid_BxT, jnp.ones((B, K), bool)], axis=1)
  h_BxSxD, _ = judge_lm.apply(params, tokens_BxS, positions_BxS, None, valid_BxS, method="hidden")
  logits_BxV = judge_lm.apply(params, h_BxSxD[:, -1:], method="logits")[:, 0].astype(jnp.float32)
  logp_BxV = jax.nn.log_softmax(logits_BxV)
  if prob:
    return jnp.exp(logp_BxV[:, yes_id])
  return logp_BxV[:, yes_id] - logp_BxV[:, no_id]


def _one_token(codec: Codec, text: str, what: str) -> int:
  ids = codec.encode(text)
  if len(ids) != 1:
    raise ValueError(f"judge {what}={text!r} must be exactly one token, got {len(ids)}: {ids.tolist()}")
  return int(ids[0])


def make_judge_reward(judge_lm: LM, judge_params, codec: Codec | Tokenizer,
                      prompt: str = "\nIs this answer correct? ", yes: str = "y", no: str = "n",
                      weight: float = 1.0, env_weight: float = 1.0, prob: bool = False) -> Callable:
  """`reward(traj, params) -> traj` adding weight * the judge's verdict score to each row's last turn.

  `judge_params=None`: the judge is the policy itself, with the params the reward is called
  with (the current ones inside `make_iteration`); else a fixed judge (another LM).
  """
  codec = codec if isinstance(codec, Codec) else Codec.from_tokenizer(codec)
  prompt_K = jnp.asarray(codec.encode(prompt), jnp.int32)
  yes_id, no_id = _one_token(codec, yes, "yes"), _one_token(codec, no, "no")
  if max(int(prompt_K.max(initial=0)), yes_id, no_id) >= judge_lm.config.vocab_size:
    raise ValueError(f"the judge prompt's tokens are outside the judge's vocab of {judge_lm.config.vocab_size}")

  def reward(traj: Trajectory, params=None) -> Trajectory:
    p = judge_params if judge_params is not None else params
    if p is None:
      raise ValueError("a self-judge (judge_params=None) needs the policy params: reward(traj, params)")
    s_B = weight * judge_scores(judge_lm, p, traj.tokens, traj.positions, traj.valid, prompt_K, yes_id, no_id, prob)
    return add_to_last_turn(traj, s_B, env_weight)

  return reward


def save(path: str | pathlib.Path, rm_lm: LM, params=None) -> None:
  """Write `params` (default `rm_lm.params`; LoRA adapters merged in) and the model config under `path`."""
  path = pathlib.Path(path).absolute()
  params = rm_lm.params if params is None else params
  if rm_lm.lora is not None:
    rm_lm = lora.merge(rm_lm, params)
    params = rm_lm.params
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path / "params", params, force=True)
  if jax.process_index() == 0:
    (path / "model.json").write_text(json.dumps(dict(kind=rm_lm.kind, config=dataclasses.asdict(rm_lm.config))))


def load(path: str | pathlib.Path, mesh: Mesh | None = None) -> LM:
  """The handle `save` wrote (its `.params` are the saved ones), placed on `mesh` if given."""
  path = pathlib.Path(path).absolute()
  meta = json.loads((path / "model.json").read_text())
  cfg = models.ModelConfig(**meta["config"])
  _, shapes, _ = models.abstract(cfg, meta["kind"])
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore(path / "params", jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), shapes))
  return models.from_params(cfg, params, mesh=mesh, kind=meta["kind"])


def from_config(section, mesh: Mesh | None = None) -> Callable | None:
  """The `reward_model` config section {paths, weights (default 1 each), env_weight (default 1)}
  as a `reward(traj, params)` over the RMs `save` wrote; None when absent or without paths."""
  section = dict(section or {})
  unknown = sorted(set(section) - {"paths", "weights", "env_weight"})
  if unknown:
    raise ValueError(f"unknown reward_model keys {unknown}; valid: ['env_weight', 'paths', 'weights']")
  if not section.get("paths"):
    return None
  rms = [load(path, mesh) for path in section["paths"]]
  return make_rm_reward([(rm, rm.params) for rm in rms], section.get("weights"), section.get("env_weight", 1.0))
