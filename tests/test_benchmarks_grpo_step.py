"""Smoke test of benchmarks/grpo_step.py: the jarl side only, on a reduced workload (TRL skipped)."""

import json
import pathlib

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def test_grpo_step_jarl_smoke(tmp_path, monkeypatch):
  monkeypatch.syspath_prepend(str(BENCHMARKS))
  import common
  import grpo_step
  monkeypatch.setattr(common, "matmul_peak_flops", lambda: 1e10)  # the peak's own timing is not under test
  monkeypatch.setattr(common, "RESULTS", common.RESULTS)  # main() points it at --results-dir; restore after
  path = grpo_step.main(["--presets", "tiny", "--systems", "jarl", "--prompts", "2", "--group-size", "2",
                         "--completion-tokens", "8", "--repeats", "1", "--no-breakdown", "--results-dir",
                         str(tmp_path)])
  assert path == tmp_path / "grpo_step.json"
  out = json.loads(path.read_text())
  assert "cpu" in out["machine"] and out["machine"]["matmul_peak_flops"] == 1e10
  [row] = out["rows"]
  assert row["system"] == "jarl" and row["preset"] == "tiny"
  assert (row["batch"], row["group_size"], row["completion_tokens"], row["prompt_len"]) == (4, 2, 8, 32)
  assert row["seconds_per_iteration"] > 0 and len(row["seconds"]) == 1
  assert row["completion_tokens_per_s"] == 4 * 8 / row["seconds_per_iteration"]
  assert 0 < row["mfu"] and "speedup_vs_trl" not in row
  assert "| jarl | tiny | 4 | 2 | 8 | 32 |" in (tmp_path / "grpo_step.md").read_text()
