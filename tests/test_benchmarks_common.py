"""benchmarks/common.py: a learning benchmark's sweep over variants x seeds, and partial reruns."""

import json
import pathlib
import sys

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
COLUMNS = ("variant", "seed", "score", "wall_time_s")


def _sweep(common, monkeypatch, argv, score):
  def run(variant, seed, workdir, rerun):
    return dict(variant=variant, seed=seed, score=score[variant] + seed, wall_time_s=1.0)
  monkeypatch.setattr(sys, "argv", ["sweep.py", *argv])
  common.variant_sweep("sweep", ("a", "b", "c"), run, COLUMNS, notes="n.", description="d")
  return json.loads((common.RESULTS / "sweep.json").read_text())["rows"]


def test_variant_sweep_means_and_partial_reruns(tmp_path, monkeypatch):
  monkeypatch.syspath_prepend(str(BENCHMARKS))
  import common
  monkeypatch.setattr(common, "RESULTS", tmp_path)
  monkeypatch.setattr(common, "machine_info", lambda: dict(cpu="cpu", cores=2, load_average_at_start=0, versions={}))
  rows = _sweep(common, monkeypatch, ["--seeds", "0", "2"], dict(a=1, b=10, c=100))
  assert [(r["variant"], r["seed"], r["score"]) for r in rows] == [
      ("a", 0, 1), ("a", 2, 3), ("a", "mean", 2), ("b", 0, 10), ("b", 2, 12), ("b", "mean", 11),
      ("c", 0, 100), ("c", 2, 102), ("c", "mean", 101)]
  # Rerunning b alone replaces b's rows and keeps a's and c's, in the variants' order.
  rows = _sweep(common, monkeypatch, ["--variants", "b", "--seeds", "1"], dict(a=-1, b=50, c=-1))
  assert [(r["variant"], r["seed"], r["score"]) for r in rows] == [
      ("a", 0, 1), ("a", 2, 3), ("a", "mean", 2), ("b", 1, 51), ("b", "mean", 51),
      ("c", 0, 100), ("c", 2, 102), ("c", "mean", 101)]
  assert "Rows of a, c are from an earlier run" in (tmp_path / "sweep.md").read_text()


import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.mark.parametrize("tied", [False, True])
def test_stop_rate_weights_draw_the_stop_at_the_asked_rate_in_jarl_and_transformers(tmp_path, monkeypatch, tied):
  """Whatever the context: the stop with probability 1 / mean_len, every other token equally likely;
  transformers reading the exported weights gives the same distribution."""
  monkeypatch.syspath_prepend(str(BENCHMARKS))
  import common
  import torch
  import transformers
  from jarl import models
  cfg = models.preset("tiny", d_model=64, n_layers=2, n_heads=2, n_kv_heads=1, mlp_dim=128, tie_embeddings=tied)
  lm = common.stop_rate_weights(models.create(cfg, seed=0), stop_id=7, mean_len=12.0)
  ids = np.random.RandomState(1).randint(0, cfg.vocab_size, (2, 9))
  ids[1, 4] = 7  # a stop inside the context changes nothing
  out = lm.apply(lm.params, ids)
  probs = np.asarray(jax.nn.softmax(out[0] if isinstance(out, tuple) else out, -1))
  rtol = 1e-3 if tied else 1e-5  # tied: the stop's raised embedding moves the norm's eps share after it
  np.testing.assert_allclose(probs[..., 7], 1 / 12, rtol=rtol)
  others = np.delete(probs, 7, axis=-1)
  np.testing.assert_allclose(others, (1 - 1 / 12) / (cfg.vocab_size - 1), rtol=rtol)
  models.save_pretrained(lm, tmp_path)
  hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
  with torch.inference_mode():
    theirs = torch.softmax(hf(torch.as_tensor(ids)).logits, -1).numpy()
  np.testing.assert_allclose(theirs, probs, rtol=1e-4)
  with pytest.raises(ValueError, match="stop_id"):
    common.stop_rate_weights(lm, stop_id=cfg.vocab_size, mean_len=12.0)
