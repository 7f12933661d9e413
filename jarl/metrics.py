"""Metric writers (JSONL, TensorBoard, optional W&B) and the end-of-run plot.

Only process 0 writes; every process calls `write` (reading global arrays back is
collective). Every record is one JSON line {"step": int, **scalars}; the warm start's
(`sft/*`) at steps <= 0.
"""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Iterable, Mapping

import numpy as np

from jarl import distributed

log = logging.getLogger(__name__)

PLOT_KEYS = ("sft/loss", "episode/return", "episode/success", "eval/success", "policy/entropy", "policy/kl")
# Means over the tokens an update trained on: a step that trained on none (every group filtered
# out, `policy/trained_tokens` 0) logs them as 0, which means nothing.
PER_TOKEN_KEYS = ("policy/entropy", "policy/kl", "policy/clip_fraction", "policy/dual_clip_fraction",
                  "policy/approx_kl", "policy/ratio_mean", "policy/value_loss", "policy/value_clip_fraction")


def defined(record: Mapping, key: str) -> bool:
  """Whether `record[key]` means something: a per-token mean needs a trained token (older records,
  without `policy/trained_tokens`, are taken as they are)."""
  return key in record and (key not in PER_TOKEN_KEYS or record.get("policy/trained_tokens", 1) > 0)


def scalars(tree: Mapping) -> dict[str, float]:
  """Flatten a (nested) dict of 0-d arrays into {"a/b": float}; call it on every process."""
  out = {}
  for key, value in distributed.to_host(dict(tree)).items():
    if isinstance(value, Mapping):
      out.update({f"{key}/{k}": v for k, v in scalars(value).items()})
    else:
      out[key] = float(value)
  return out


class MetricsWriter:
  def __init__(self, workdir: str | pathlib.Path, tensorboard: bool = True, wandb_project: str | None = None,
               config: Mapping | None = None):
    self.enabled = distributed.is_main()
    self.path = pathlib.Path(workdir) / "metrics.jsonl"
    self._tb = self._wandb = None
    if not self.enabled:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    if tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"))
    if wandb_project:
      try:
        import wandb
      except ImportError as e:
        raise ImportError("W&B logging was asked for (wandb_project) but wandb is not installed: "
                          "pip install wandb") from e
      self._wandb = wandb.init(project=wandb_project, config=dict(config or {}), dir=str(workdir))

  def write(self, step: int, metrics: Mapping) -> dict[str, float]:
    flat = scalars(metrics)
    if self.enabled:
      with self.path.open("a") as f:
        f.write(json.dumps({"step": int(step), **flat}) + "\n")
      if self._tb is not None:
        for k, v in flat.items():
          self._tb.add_scalar(k, v, int(step))
      if self._wandb is not None:
        self._wandb.log(flat, step=int(step))
    return flat

  def truncate_after(self, step: int) -> None:
    """Drop records past `step` (a resumed run rewrites them)."""
    if self.enabled and self.path.exists():
      keep = [r for r in read_jsonl(self.path) if r["step"] <= step]
      self.path.write_text("".join(json.dumps(r) + "\n" for r in keep))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
    if self._wandb is not None:
      self._wandb.finish()


def read_jsonl(path: str | pathlib.Path) -> list[dict]:
  """The records of a JSON-lines file. Lines that do not parse (the partial last line of a run
  killed mid-write) are left out with a warning naming them."""
  records, bad = [], []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        try:
          records.append(json.loads(line))
        except json.JSONDecodeError:
          bad.append(number)
  if bad:
    log.warning("%s: left out %d line(s) that are not JSON (a run killed mid-write?): line %s", path, len(bad),
                ", ".join(map(str, bad[:5])))
  return records


def panels(records: Iterable[dict], keys: Iterable[str] = PLOT_KEYS) -> list[tuple[list[str], list[tuple]]]:
  """(names, [(step, value), ...]) per panel: each key with a defined value in the records, in
  `keys` order; keys whose series are identical (return and success on a 0/1-reward env) share
  one panel."""
  records, out = list(records), []
  for key in keys:
    points = [(r["step"], r[key]) for r in records if defined(r, key)]
    same = next((names for names, other in out if other == points), None)
    if same is not None:
      same.append(key)
    elif points:
      out.append(([key], points))
  return out


def smooth(values: Iterable[float], window: int) -> np.ndarray:
  """Centred moving average over `window` points (fewer at the ends)."""
  values, ones = np.asarray(list(values), float), np.ones(window)
  return np.convolve(values, ones, "same") / np.convolve(np.ones_like(values), ones, "same")


def figure(records: Iterable[dict], keys: Iterable[str] = PLOT_KEYS, title: str = ""):
  """A matplotlib figure with one panel per `panels` entry over steps: the raw values faint, a
  moving average over a tenth of the points on top (series of 20 points or more)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  found = panels(records, keys)
  fig, axes = plt.subplots(1, max(1, len(found)), figsize=(4 * max(1, len(found)), 3.4), squeeze=False)
  for ax, (names, points) in zip(axes[0], found):
    steps, values = zip(*points)
    window = len(points) // 10 | 1  # odd: centred
    if window > 1:
      ax.plot(steps, values, color="C0", alpha=0.25, linewidth=1)
      ax.plot(steps, smooth(values, window), color="C0")
    else:
      ax.plot(steps, values, color="C0", marker=".")
    ax.set_title(" = ".join(names), fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  fig.suptitle(title)
  fig.tight_layout()
  return fig


def plot(records: Iterable[dict], out_png: str | pathlib.Path, keys: Iterable[str] = PLOT_KEYS,
         title: str | None = None) -> pathlib.Path:
  """`figure(records, keys, title)` as a PNG; the title defaults to the run's name (the PNG's folder)."""
  import matplotlib.pyplot as plt
  out_png = pathlib.Path(out_png)
  fig = figure(records, keys, out_png.resolve().parent.name if title is None else title)
  fig.savefig(out_png, dpi=100)
  plt.close(fig)
  return out_png
