"""The training run: config -> model, env, rollout and learner; warm start, RL, eval, logs.

    summary = jarl.train.train(get_config(), resume=False, overwrite=False)

Stages: optional supervised warm start on the env's expert traces; greedy evaluation
on held-out tasks (their own seed stream) before RL; RL iterations (rollout + update,
one jit each) with periodic evaluation; a final evaluation. Writes to `workdir`:
metrics.jsonl, tensorboard/, checkpoints/ (latest N + best by eval success),
curves.png, samples.txt (decoded eval episodes), summary.json (config, machine and library
versions, steps, wall time, held-out success and return before RL and at the end). `resume=True`
continues from the latest checkpoint and reproduces the metrics an uninterrupted
run would have written; SIGTERM saves a checkpoint before exiting.

Multi-host: every process runs `train` on one global mesh (`jarl.distributed`); all
take part in each program and checkpoint, and only process 0 writes logs and files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import shutil
import signal
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from jarl import (config_check, distributed, envs, learner, machine, models, optim, plan, planning, reward_model,
                  sharding)
from jarl.agent import AgentConfig, make_layout, render_episode
from jarl.algos import credit
from jarl.checkpoint import Checkpointer
from jarl.config_check import ConfigError
from jarl.metrics import MetricsWriter, defined, plot, read_jsonl
from jarl.rollout import make_collect
from jarl.sampling import SamplingConfig, vocab_limit
from jarl.sft import expert_batch, make_sft_step
from jarl.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

# Config sections that must match when resuming (train.* and eval.* may change).
FROZEN_SECTIONS = ("seed", "model", "tokenizer", "env", "agent", "rollout", "sampling", "algo", "optim", "sft", "mesh",
                   "reward_model")


@dataclasses.dataclass
class Run:
  config: ml_collections.ConfigDict
  tokenizer: Any
  env: envs.TextEnv  # or a host env (`jarl.envs.host`), stepped in Python between jitted turns
  eval_env: envs.TextEnv  # the same env drawing held-out tasks (host envs: split "eval")
  agent: AgentConfig
  lm: models.LM
  mesh: Any
  algo: learner.AlgoConfig
  optim: learner.OptimConfig
  sampling: SamplingConfig


def _dataclass(cls, section: ml_collections.ConfigDict | dict, **extra):
  fields = {f.name for f in dataclasses.fields(cls)}
  values = dict(section)
  unknown = sorted(set(values) - fields)
  if unknown:
    raise ConfigError(f"unknown {cls.__name__} keys {unknown}; valid: {sorted(fields)}")
  for key, value in values.items():
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      values[key] = tuple(sorted(dict(value).items()))
  return cls(**values, **extra)


def load_pretrained(model_cfg: dict, mesh) -> models.LM:
  """`model.hf_path`'s weights in `model.param_dtype` (else `model.dtype`), computing in `model.dtype`;
  with `model.preset` too, a ConfigError naming every field where the checkpoint differs from it."""
  lm = models.from_pretrained(model_cfg["hf_path"], mesh=mesh, **plan.model_fields(model_cfg))
  if model_cfg.get("preset"):
    wrong = models.config.differences(plan.preset_config(model_cfg), lm.config)
    if wrong:
      raise ConfigError(f"model.hf_path={model_cfg['hf_path']!r} is not the architecture of model.preset="
                        f"{model_cfg['preset']!r} (that `jarl plan` planned with); preset vs checkpoint: "
                        + "; ".join(wrong) + ". Fix or drop model.preset.")
  return lm


def build(config: ml_collections.ConfigDict, abstract: bool = False) -> Run:
  """Everything a run needs, from the config (errors for bad names come from here).

  `abstract`: the params are ShapeDtypeStructs (nothing allocated, no weights read) and slots are
  counted with `plan.tokenizer` when set, as `jarl plan` does: what an ahead-of-time compile of the
  iteration needs (`compile_iteration`)."""
  tokenizer = load_tokenizer((abstract and config.get("plan", {}).get("tokenizer")) or config.tokenizer)
  env, eval_env = (envs.make(config.env.name, tokenizer=tokenizer, guard=config.env.get("guard", False), split=split,
                             module=config.env.get("module", ""), **dict(config.env.kwargs))
                   for split in ("train", "eval"))
  if config.sft.steps and not isinstance(env, envs.TextEnv):
    raise ConfigError(f"sft.steps={config.sft.steps}: the warm start replays expert episodes, which host env "
                      f"{config.env.name!r} has none of; set sft.steps=0")
  agent = _dataclass(AgentConfig, config.agent)
  algo = _dataclass(learner.AlgoConfig, config.algo)
  optim = _dataclass(learner.OptimConfig, config.optim, total_steps=config.train.steps)
  sampling = _dataclass(SamplingConfig, config.sampling)
  mesh = sharding.mesh_from_config(config.mesh)
  model_cfg = dict(config.model)
  lora = models.LoRAConfig(**dict(model_cfg.get("lora") or {}))  # absent or rank 0: off
  if abstract:
    lm = plan.abstract_lm(model_cfg, plan.model_config(config.model), algo.needs_critic, mesh)
  elif model_cfg.get("hf_path"):
    lm = load_pretrained(model_cfg, mesh)
  else:
    lm = models.create(plan.preset_config(model_cfg), seed=config.seed, mesh=mesh)
  layout = make_layout(agent, env)
  if layout.total_len > lm.config.max_seq_len:
    raise ConfigError(f"an episode takes {layout.total_len} token slots (instructions, {env.max_turns} turns of "
                      f"observation and agent budgets), more than the model's max_seq_len={lm.config.max_seq_len}; "
                      "lower env.kwargs.max_turns, the obs/action lengths or the agent budgets")
  if lm.config.vocab_size < tokenizer.vocab_size:
    raise ConfigError(f"model vocab {lm.config.vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size}")
  if not sampling.vocab_limit:  # never draw the model's padded rows beyond the tokenizer's ids
    sampling = dataclasses.replace(sampling, vocab_limit=vocab_limit(lm, tokenizer))
  if algo.needs_critic and not abstract:
    lm = models.with_value_head(lm, seed=config.seed)
  if lora.rank and not abstract:
    lm = models.lora.add(lm, lora, seed=config.seed)
  return Run(config, tokenizer, env, eval_env, agent, lm, mesh, algo, optim, sampling)


def make_iteration(run: Run) -> tuple[Callable, learner.TrainState]:
  """(the jitted RL iteration `state -> (state, metrics, trajectory)`: rollout, rewards, update; the
  TrainState's shardings it keeps)."""
  config, rollout = run.config, run.config.rollout
  shardings = learner.state_shardings(run.lm, run.optim, run.mesh, reference=run.algo.kl_coef > 0)
  collect = make_collect(run.lm, run.env, run.agent, rollout.n_tasks, rollout.group_size, run.sampling, run.mesh)
  update = learner.make_update(run.lm, run.algo, run.optim, rollout.group_size,
                               policy_slots=make_layout(run.agent, run.env).policy_slots)
  reward = reward_model.from_config(config.get("reward_model"), run.mesh)  # None: the env's rewards alone
  return learner.make_iteration(collect, update, shardings, reward=reward), shardings


def compile_iteration(config: ml_collections.ConfigDict):
  """The RL iteration compiled ahead of time for this machine's devices from abstract inputs (`build(config,
  abstract=True)`): nothing allocated, no weights read. `.memory_analysis()` gives XLA's own figures per
  device (benchmarks/memory.py). In-graph envs only: a host env's rollout is Python between compiled turns."""
  run = build(config, abstract=True)
  if not isinstance(run.env, envs.TextEnv):
    raise ConfigError(f"env {config.env.name!r} steps on the host: its rollout is no single compiled program")
  iteration, shardings = make_iteration(run)
  state = jax.eval_shape(lambda p: learner.init_state(run.lm.replace(params=p), run.optim,
                                                      reference=shardings.ref_params is not None), run.lm.params)
  state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
  return iteration.lower(state).compile()


def evaluate(run: Run, params, n_tasks: int, seed: int, return_traj: bool = False):
  """Greedy episodes on held-out tasks: mean success and return (the same on every process).

  Best-of-K (`jarl.planning`) as `eval.act_candidates` says (default: the agent's): the first
  candidate is the greedy action, the others are sampled with the run's sampling config.
  """
  K = run.config.get("eval", {}).get("act_candidates")  # absent or None: the agent's
  agent = run.agent if K is None else dataclasses.replace(run.agent, act_candidates=K)
  greedy = SamplingConfig(temperature=0.0, vocab_limit=run.sampling.vocab_limit)
  collect = make_collect(run.lm, run.eval_env, agent, n_tasks, 1, greedy, run.mesh,
                         candidate_sampling=run.sampling if agent.act_candidates > 1 else None)
  traj = collect(params, jax.random.key(seed))
  means = {k: traj.episode[k].mean() for k in ("success", "return_", "turns", "cost") if k in traj.episode}
  if traj.attempts:  # self-critique: first attempt vs the answer the verdict chose, flips, verdict quality
    means.update({f"critique_{k}": v for k, v in credit.critique_metrics(traj).items()})
  if traj.planning:  # best-of-K: best vs candidate scores, how often search changed the action
    means.update({f"planning_{k}": v for k, v in planning.metrics(traj).items()})
  means = distributed.to_host(means)
  out = {k.rstrip("_"): float(v) for k, v in means.items()}
  return (out, traj) if return_traj else out


def warm_start(run: Run, params, writer: MetricsWriter) -> Any:
  """Supervised fine-tuning on expert episodes laid out in the rollout's template."""
  cfg = run.config.sft
  layout = make_layout(run.agent, run.env)
  data = expert_batch(layout, cfg.episodes, seed=run.config.seed, revise_fraction=cfg.get("revise_fraction", 0.0))
  optim = dataclasses.replace(run.optim, lr=cfg.lr, warmup_steps=0, schedule="constant")
  step_fn = make_sft_step(run.lm, optim, run.mesh)
  shardings = learner.state_shardings(run.lm, optim, run.mesh)
  params = jax.device_put(params, shardings.params)
  opt_state = jax.jit(learner.make_optimizer(optim).init, out_shardings=shardings.opt_state)(
      models.lora.split(run.lm, params)[0])
  rng = np.random.default_rng(run.config.seed)  # the same global batches on every process
  bar = tqdm(total=cfg.steps, desc="sft", leave=False, disable=not distributed.is_main())
  for i in range(cfg.steps):
    pick = rng.choice(cfg.episodes, size=cfg.batch_size, replace=False)
    batch = sharding.shard_batch({k: v[pick] for k, v in data.items()}, run.mesh)
    params, opt_state, metrics = step_fn(params, opt_state, batch)
    if (i + 1) % max(cfg.steps // 20, 1) == 0 or i + 1 == cfg.steps:
      writer.write(i + 1 - cfg.steps, metrics)  # SFT steps are logged at steps <= 0
    bar.update()
    if i == 0:  # it compiled the step: the ETA counts the steps after it
      _restart_clock(bar)
  bar.close()
  return models.lora.fold(run.lm, params)  # with LoRA the warm-started policy becomes the base (KL reference)


def _prepare_workdir(workdir: pathlib.Path, resume: bool, overwrite: bool) -> bool:
  """Every process checks, then process 0 alone deletes (overwrite) and creates the directory.
  True when the run resumes from a checkpoint: --resume of a run stopped before its first save
  (killed during the warm start) starts it over, with a warning."""
  if resume and overwrite:
    raise ConfigError("pass either resume or overwrite, not both")
  if resume and not workdir.exists():
    raise FileNotFoundError(f"--resume: no run directory {workdir}")
  saved = workdir / "checkpoints" / "latest"
  if resume and not (saved.exists() and any(p.name.isdigit() for p in saved.iterdir())):
    log.warning("--resume: %s has no checkpoint yet (the run stopped before its first save): starting it over",
                workdir)
    resume = overwrite = True
  stale = workdir.exists() and any(workdir.iterdir()) and (not resume or overwrite)
  if stale and not overwrite:
    raise FileExistsError(f"run directory {workdir} exists: pass --resume to continue it or --overwrite "
                          "to start over")
  distributed.barrier("jarl-workdir-checked")
  if distributed.is_main():
    if stale:
      shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
  distributed.barrier("jarl-workdir-ready")
  return resume and not overwrite


BAR_KEYS = ("episode/return", "episode/success", "policy/entropy", "policy/kl")


def progress_postfix(flat: dict, filtering: bool) -> dict[str, str]:
  """The progress bar's numbers for one step: BAR_KEYS, with "—" for a per-token mean when the step
  trained on no token, and with zero-variance filtering the fraction of groups filtered out."""
  out = {k.split("/")[-1]: f"{flat[k]:.3g}" if defined(flat, k) else "—" for k in BAR_KEYS if k in flat}
  if filtering and "policy/zero_variance_fraction" in flat:
    out["filtered"] = f"{flat['policy/zero_variance_fraction']:.0%}"
  return out


def _restart_clock(bar: tqdm) -> None:
  """Time `bar` from now on, keeping its count: its rate and ETA leave out the steps so far."""
  done = bar.n
  bar.reset()
  bar.n = bar.initial = done
  bar.refresh()


def _check_compatible(saved: dict, config: ml_collections.ConfigDict) -> None:
  now = json.loads(config.to_json())
  diff = [k for k in FROZEN_SECTIONS if saved.get(k) != now.get(k)]
  if diff:
    details = "; ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}" for k in diff)
    raise ConfigError(f"cannot resume: the config differs from the checkpoint's in {diff} ({details})")


def train(config: ml_collections.ConfigDict, resume: bool = False, overwrite: bool = False) -> dict:
  t0 = time.time()
  config_check.check(config)  # every bad field at once, before anything starts
  plan.check(config)  # refuses a config that will not fit the device memory
  workdir = pathlib.Path(config.workdir)
  resume = _prepare_workdir(workdir, resume, overwrite)
  stop = {"signal": None}  # SIGTERM (preemption) stops the run at the next step, with a checkpoint
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.update(signal=signum))
  summary = {"config": json.loads(config.to_json()), "machine": machine.info()}
  try:
    return _train(config, workdir, resume, stop, summary, t0)
  except BaseException as e:  # summary.json says how the run ended, whatever ended it (and keeps what it held)
    if distributed.is_main():
      path = workdir / "summary.json"
      try:
        ended = json.loads(path.read_text()) if path.exists() else {}
      except json.JSONDecodeError:
        ended = {}
      ended.update(summary, error=f"{type(e).__name__}: {e}", wall_time_s=round(time.time() - t0, 1))
      path.write_text(json.dumps(ended, indent=2, default=str) + "\n")
    raise
  finally:
    signal.signal(signal.SIGTERM, previous)


def _packing_advice(config: ml_collections.ConfigDict, run: Run) -> str:
  """Which knobs to raise when the update's packed rows (`algo.pack_len` / `pack_rows`, `head_len`) overflow."""
  algo = config.algo
  advice = []
  if algo.get("pack_len"):
    rows = f"{algo.pack_rows} rows" if algo.get("pack_rows") else "one row per episode"
    advice.append(f"raise algo.pack_len (now {algo.pack_len} slots, {rows}; an episode has up to "
                  f"{make_layout(run.agent, run.env).total_len} slots) or algo.pack_rows, or set pack_len to 0")
  if algo.get("head_len"):
    advice.append(f"raise algo.head_len (now {algo.head_len} trained slots per episode on average, for the output "
                  f"head; an episode trains on up to {len(make_layout(run.agent, run.env).policy_slots)}) or set it "
                  f"to 0")
  return "; or ".join(advice)


def _train(config, workdir: pathlib.Path, resume: bool, stop: dict, summary: dict, t0: float) -> dict:
  run = build(config)
  writer = MetricsWriter(workdir, tensorboard=config.train.tensorboard, wandb_project=config.train.wandb_project,
                         config=config.to_dict())
  ckpt = Checkpointer(workdir / "checkpoints", keep=config.train.keep_checkpoints)
  eval_seed = 10_000 + config.seed  # held-out tasks: a seed stream training never uses
  iteration, shardings = make_iteration(run)
  reference = shardings.ref_params is not None

  def fresh_state(lm):  # on the mesh from the start: a restore's target, and global on every process
    return jax.device_put(learner.init_state(lm, run.optim, seed=config.seed, reference=reference), shardings)

  def saving(action, step, *args, **kwargs):  # a full disk, a lost mount: one clear error, not a cascade
    try:
      action(*args, **kwargs)
    except Exception as e:  # noqa: BLE001  (orbax re-raises a failed async write at the next save or wait)
      raise RuntimeError(f"saving the checkpoint of step {step} in {ckpt.directory} failed: "
                         f"{type(e).__name__}: {e}") from None

  def save(step, force=False):
    if ckpt.latest_step() != step:
      saving(ckpt.save, step, step, state, {"summary": summary}, force=force)

  def stop_if_signalled(step):
    signum = distributed.process_max(stop["signal"] or 0)  # a signal to any process stops them all
    if signum:
      save(step, force=True)
      saving(ckpt.wait, step)
      raise SystemExit(f"stopped by signal {signum} at step {step}; checkpoint saved, --resume continues")

  state = fresh_state(run.lm)
  if resume:
    state, meta = ckpt.restore(state)
    _check_compatible(meta["summary"]["config"], config)
    summary.update(meta["summary"], config=summary["config"], machine=summary["machine"])
    writer.truncate_after(int(state.step))
  else:
    if config.sft.steps:
      state = fresh_state(run.lm.replace(params=warm_start(run, state.params, writer)))
    summary["eval_before_rl"] = evaluate(run, state.params, config.eval.tasks, eval_seed)
    writer.write(0, {f"eval/{k}": v for k, v in summary["eval_before_rl"].items()})
    save(0)  # the warm-started start: a run stopped from here on resumes without redoing it
    stop_if_signalled(0)

  schedule = optim.make_schedule(run.optim)
  best = summary.get("best_eval_success", -1.0)
  first_step = int(state.step) + 1
  bar = tqdm(initial=first_step - 1, total=config.train.steps, desc="rl", disable=not distributed.is_main())
  for _ in range(first_step - 1, config.train.steps):
    state, metrics, _ = iteration(state)
    step = int(state.step)
    metrics["lr"] = float(schedule(step - 1))
    if int(metrics["episode/nonfinite_logprobs"]):
      writer.write(step, metrics)
      raise FloatingPointError(
          f"step {step}: the policy's logits are not finite ({int(metrics['episode/nonfinite_logprobs'])} sampled "
          f"tokens): its params have diverged ({int(learner.skipped_updates(state))} optimizer steps skipped so "
          f"far). Lower optim.lr (now {config.optim.lr}) or resume from an earlier checkpoint (--resume reads "
          f"step {ckpt.latest_step()}).")
    if int(metrics.get("policy/pack_overflow", 0)):
      writer.write(step, metrics)
      raise ConfigError(f"step {step}: {int(metrics['policy/pack_overflow'])} episodes did not fit in the update's "
                        f"packed rows (this step's update was skipped): {_packing_advice(config, run)}, and --resume")
    if step % config.eval.every == 0 or step == config.train.steps:
      result = evaluate(run, state.params, config.eval.tasks, eval_seed)
      metrics.update({f"eval/{k}": v for k, v in result.items()})
      if result["success"] > best:
        best = summary["best_eval_success"] = result["success"]
        saving(ckpt.save_best, step, step, state, {"summary": summary}, result["success"])
    flat = writer.write(step, metrics)
    bar.set_postfix(progress_postfix(flat, run.algo.filter_zero_variance), refresh=False)
    bar.update()
    if step == first_step:  # it compiled the iteration: the rate and the ETA count the steps after it
      _restart_clock(bar)
    if step % config.train.checkpoint_every == 0:
      save(step)
    stop_if_signalled(step)
  bar.close()

  final, traj = evaluate(run, state.params, config.eval.tasks, eval_seed, return_traj=True)
  n_samples = min(config.train.sample_episodes, traj.tokens.shape[0])
  traj = distributed.to_host(jax.tree.map(lambda x: x[:n_samples], traj))
  summary.update(final_eval=final, steps=int(state.step), wall_time_s=round(time.time() - t0, 1),
                 skipped_updates=int(learner.skipped_updates(state)))
  save(int(state.step), force=True)
  saving(ckpt.wait, int(state.step))
  ckpt.close()
  writer.close()
  if distributed.is_main():
    plot(read_jsonl(writer.path), workdir / "curves.png")
    samples = [render_episode(traj, b, run.env.codec) for b in range(n_samples)]
    (workdir / "samples.txt").write_text("\n\n".join(samples) + "\n")
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
  return summary


def main(config: ml_collections.ConfigDict, resume: bool = False, overwrite: bool = False,
         coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> None:
  """`jarl train` entry point; joins the other processes of a multi-host run first. Prints the
  summary (config and machine aside) and what it wrote where."""
  distributed.initialize(coordinator, num_processes, process_id)
  summary = train(config, resume=resume, overwrite=overwrite)
  if distributed.is_main():
    print(json.dumps({k: v for k, v in summary.items() if k not in ("config", "machine")}, indent=2))
    workdir = pathlib.Path(config.workdir)
    wrote = sorted(f"{p.name}/" if p.is_dir() else p.name for p in workdir.iterdir())
    print(f"jarl train: wrote {workdir}/: {', '.join(wrote)}")
