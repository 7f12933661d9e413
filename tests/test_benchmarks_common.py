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
