"""benchmarks/memory.py on tiny shapes: XLA's temporaries for the update and the prefill, and the plan beside them."""

import pathlib

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def test_memory_rows_shrink_with_blockwise_attention_and_remat(monkeypatch):
  monkeypatch.syspath_prepend(str(BENCHMARKS))
  import memory
  rows = {v: memory.measure("tiny", v, rows=1, tokens=256, block=32, logits_chunk=32) for v in ("baseline", "all")}
  for row in rows.values():
    assert set(memory.COLUMNS) <= set(row) and row["update_temp_gib"] > 0 and row["prefill_temp_gib"] > 0
  baseline = rows["baseline"]
  assert 0.8 < baseline["planned_gib"] / baseline["update_temp_gib"] < 1.25  # the plan's fit to XLA's count
  assert rows["all"]["update_temp_gib"] < rows["baseline"]["update_temp_gib"] / 2
  assert rows["all"]["prefill_temp_gib"] < rows["baseline"]["prefill_temp_gib"] / 2
