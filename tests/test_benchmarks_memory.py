"""benchmarks/memory.py on tiny shapes: XLA's figures for a whole iteration, the update and the prefill, beside the plan."""

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


def test_recipe_episodes_stretched_to_the_asked_length_with_the_variant(monkeypatch):
  monkeypatch.syspath_prepend(str(BENCHMARKS))
  import memory
  for tokens in (2048, 8192):
    config = memory.recipe_config("qwen3_8b_v5p16", tokens, "after")
    per_turn = config.env.kwargs.max_turns
    assert tokens - per_turn < memory.episode_slots(config) <= tokens
  assert config.model.scan_layers and config.model.remat == "block" and config.algo.logits_chunk == 512
  assert memory.recipe_config("qwen3_8b_v5p16", 2048, "after_f32").model.dtype == "float32"
  assert not memory.recipe_config("qwen3_8b_v5p16", 2048, "before").model.get("scan_layers", False)


def test_a_whole_iteration_compiled_from_shapes_beside_its_plan(monkeypatch):
  monkeypatch.syspath_prepend(str(BENCHMARKS))
  import memory
  config = memory.common.config_module("quickstart").get_config()
  row = memory.measure_recipe(config, "quickstart", "as written")
  assert row["xla_bytes_per_device"] > row["temp_gib"] * memory.GiB > 0  # the state is an argument too
  assert 0.5 < row["plan_bytes_per_device"] / row["xla_bytes_per_device"] < 2, row
  assert row["tokens"] == memory.episode_slots(config) and row["fits"] is None  # quickstart names no device
