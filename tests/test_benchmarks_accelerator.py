"""benchmarks/accelerator.py --dry-run: every measurement's code path on CPU with tiny shapes."""

import json
import pathlib

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def test_accelerator_dry_run(tmp_path, monkeypatch):
  monkeypatch.syspath_prepend(str(BENCHMARKS))
  import accelerator
  import common
  monkeypatch.setattr(common, "RESULTS", common.RESULTS)  # main() points it at --results-dir; restore after
  path = accelerator.main(["--dry-run", "--results-dir", str(tmp_path)])
  assert path == tmp_path / "accelerator_dryrun_cpu.json"
  out = json.loads(path.read_text())
  machine, rows = out["machine"], out["rows"]
  assert "cpu" in machine and machine["devices"]["backend"] == "cpu" and machine["chip"] == "cpu"
  assert machine["hbm_bytes_per_s"] is None and machine["peak_bf16_flops"] is None and machine["skipped"] == []
  assert not [r for r in rows if r.get("note", "").startswith(("error", "skipped"))], rows
  decode = {r["batch"]: r for r in rows if r["measurement"] == "decode"}
  assert set(decode) == set(accelerator.DRY_RUN.batches)
  for row in decode.values():
    assert row["tokens_per_s"] > 0 and row["bytes_per_step"] > 0
    assert row.get("roofline_tokens_per_s") is None and row.get("fraction_of_roofline") is None
  [grpo] = [r for r in rows if r["measurement"] == "grpo"]
  assert grpo["seconds"] > 0 and grpo["completion_tokens_per_s"] > 0 and grpo["model_flops"] > 0
  assert grpo["mfu"] is None and grpo.get("meets_target") is None and "update_s" not in grpo  # no breakdown
  [turns] = [r for r in rows if r["measurement"] == "multiturn"]
  assert turns["episodes_per_s"] > 0
  [mem] = [r for r in rows if r["measurement"] == "memory"]
  assert mem["update_temp_gib"] > 0
  assert all(r["peak_memory_gib"] is None for r in rows)  # XLA:CPU keeps no memory stats
  assert "| decode | tiny | 4 |" in (tmp_path / "accelerator_dryrun_cpu.md").read_text()


def test_chip_table(monkeypatch):
  monkeypatch.syspath_prepend(str(BENCHMARKS))
  import accelerator
  assert accelerator.chip("NVIDIA H100 80GB HBM3") == ("h100", 3.35e12, 989e12)
  assert accelerator.chip("NVIDIA H100 PCIe")[0] == "h100-pcie"
  assert accelerator.chip("NVIDIA H200")[0] == "h200"
  assert accelerator.chip("NVIDIA A100-SXM4-80GB")[0] == "a100-80gb"
  assert accelerator.chip("NVIDIA A100-SXM4-40GB")[0] == "a100-40gb"
  assert [accelerator.chip(k)[0] for k in ("TPU v4", "TPU v5 lite", "TPU v5", "TPU v5p", "TPU v6 lite")] == \
      ["v4", "v5e", "v5p", "v5p", "v6e"]
  assert accelerator.chip("cpu") == ("cpu", None, None)
  assert accelerator.chip("Some New GPU 9000") == ("some-new-gpu-9000", None, None)


def test_run_records_failures_and_skips_past_the_budget(monkeypatch):
  monkeypatch.syspath_prepend(str(BENCHMARKS))
  import accelerator

  def oom():
    raise RuntimeError("RESOURCE_EXHAUSTED: out of memory")
  todo = [(dict(measurement="decode", batch=256), oom), (dict(measurement="grpo"), lambda: dict(seconds=1.0))]
  rows, skipped = accelerator.run(todo, budget_s=60)
  assert rows[0]["note"].startswith("error: RuntimeError: RESOURCE_EXHAUSTED") and rows[1]["seconds"] == 1.0
  assert skipped == []
  rows, skipped = accelerator.run(todo, budget_s=-1)
  assert skipped == ["decode 256", "grpo"] and all(r["note"].startswith("skipped") for r in rows)
