"""Metric writers (JSONL, TensorBoard, optional W&B) and the end-of-run plot.

Only process 0 writes; every process calls `write` (reading global arrays back is
collective). Every record is one JSON line {"step": int, **scalars}.
"""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Iterable, Mapping

from jarl import distributed

log = logging.getLogger(__name__)

PLOT_KEYS = ("episode/return", "episode/success", "eval/success", "policy/entropy", "policy/kl")


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


def plot(records: Iterable[dict], out_png: str | pathlib.Path, keys: Iterable[str] = PLOT_KEYS) -> pathlib.Path:
  """A PNG with one panel per key (the ones present in the records) over steps."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  records = list(records)
  keys = [k for k in keys if any(k in r for r in records)]
  fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(4 * max(1, len(keys)), 3.2), squeeze=False)
  for ax, key in zip(axes[0], keys):
    points = [(r["step"], r[key]) for r in records if key in r]
    ax.plot(*zip(*points), marker="." if len(points) < 30 else None)
    ax.set_title(key)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(out_png, dpi=100)
  plt.close(fig)
  return pathlib.Path(out_png)
