"""Smoke test of benchmarks/grpo_step.py: the jarl side only, on a reduced workload (TRL skipped)."""

import json
import pathlib

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def test_grpo_step_jarl_smoke(tmp_path, monkeypatch):
  monkeypatch.syspath_prepend(str(BENCHMARKS))
  import common
  import grpo_step
  monkeypatch.setattr(common, "matmul_peak_flops", lambda: 1e10)  # the peak's own timing is not under test
  monkeypatch.setattr(common, "RESULTS", common.RESULTS)  # main() points it at --results-dir; restore after
  path = grpo_step.main(["--presets", "tiny", "--systems", "jarl", "--prompts", "2", "--group-size", "2",
                         "--completion-tokens", "8", "--repeats", "1", "--no-breakdown", "--workloads", "fixed",
                         "--results-dir", str(tmp_path)])
  assert path == tmp_path / "grpo_step.json"
  out = json.loads(path.read_text())
  assert "cpu" in out["machine"] and out["machine"]["matmul_peak_flops"] == 1e10
  [row] = out["rows"]
  assert row["system"] == "jarl" and row["preset"] == "tiny"
  assert (row["batch"], row["group_size"], row["completion_tokens"], row["prompt_len"]) == (4, 2, 8, 32)
  assert row["seconds_per_iteration"] > 0 and len(row["seconds"]) == 1
  assert row["completion_tokens_per_s"] == 4 * 8 / row["seconds_per_iteration"]
  assert 0 < row["mfu"] and "speedup_vs_trl" not in row
  assert row["workload"] == "fixed" and row["mean_len"] == 8
  assert "| jarl | fixed | tiny | 4 | 2 | 8 | 32 | 8 |" in (tmp_path / "grpo_step.md").read_text()


def test_grpo_step_variable_workload_stops_completions_early(tmp_path, monkeypatch):
  """Completions end at the drawn stop (each checked: one stop at its end, rewards from the text before it)."""
  monkeypatch.syspath_prepend(str(BENCHMARKS))
  import common
  import grpo_step
  monkeypatch.setattr(common, "matmul_peak_flops", lambda: 1e10)
  monkeypatch.setattr(common, "RESULTS", common.RESULTS)
  path = grpo_step.main(["--presets", "tiny", "--systems", "jarl,jarl-compact", "--prompts", "4", "--group-size",
                         "4", "--completion-tokens", "24", "--repeats", "2", "--no-breakdown", "--workloads",
                         "variable", "--mean-len", "4", "--results-dir", str(tmp_path)])
  row, packed = json.loads(path.read_text())["rows"]
  # jarl-compact: the update over episodes laid end to end in rows of 2 x (32 + 24) slots, sized from mean_len,
  # and the rollout's decode over the rows still sampling
  assert packed["system"] == "jarl-compact" and (packed["pack_len"], packed["pack_rows"]) == (112, 7), packed
  assert packed["pack_overflow"] == 0 and 0.5 < packed["pack_fill"] <= 1 and "7 rows of 112 slots" in packed["note"]
  # and the output head only at the trained slots: 16 rows of 1.4 x mean_len
  assert packed["head_len"] == 6 and 0.4 < packed["head_fill"] <= 1 and "head over 6 slots a row" in packed["note"]
  assert row["workload"] == "variable" and 2.0 < row["mean_len"] < 6.5, row  # geometric, mean 4, cut at 24
  assert 0 < packed["decode_row_fraction"] < 0.8 * row["decode_row_fraction"] <= 0.8
  assert row["completion_tokens_per_s"] == pytest.approx(2 * 16 * row["mean_len"] / sum(row["seconds"]))
  assert row["model_flops"] < grpo_step.model_flops(grpo_step.models.preset("tiny"), grpo_step.Workload(4, 4, 32, 24))
