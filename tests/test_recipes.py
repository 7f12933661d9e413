"""Recipes for real models: each fits its hardware with the peak its docstring states; the real-model
presets have the published sizes and transformers' shapes; a preset stands in for a hub checkpoint
when planning, and `jarl train` checks the checkpoint against it."""

import json
import os
import pathlib
import re
import runpy
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
import torch
import transformers

from jarl import models, plan, train

ROOT = pathlib.Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "configs" / "recipes").glob("*.py"))
GiB = 2**30
PEAK = re.compile(r"peak (\d+\.\d+) GiB of (\d+\.\d+) GiB \((\w+)\) -> fits")
# Published sizes (model cards): total and non-embedding parameters, in billions, as written there.
PUBLISHED = {"qwen2.5-0.5b": ("0.49", "0.36"), "qwen2.5-1.5b": ("1.54", "1.31"), "qwen2.5-3b": ("3.09", "2.77"),
             "qwen2.5-7b": ("7.61", "6.53"), "qwen3-0.6b": ("0.6", "0.44"), "qwen3-1.7b": ("1.7", "1.4"),
             "qwen3-4b": ("4.0", "3.6"), "qwen3-8b": ("8.2", "6.95")}
HUB_IDS = {"qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B-Instruct", "qwen2.5-1.5b": "Qwen/Qwen2.5-1.5B-Instruct",
           "qwen2.5-3b": "Qwen/Qwen2.5-3B-Instruct", "qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct",
           "qwen3-0.6b": "Qwen/Qwen3-0.6B", "qwen3-1.7b": "Qwen/Qwen3-1.7B", "qwen3-4b": "Qwen/Qwen3-4B",
           "qwen3-8b": "Qwen/Qwen3-8B"}
CHIPS_PER_UNIT = {"v4": 0.5, "v5p": 0.5, "v5litepod": 1, "v6e": 1}  # v4-N and v5p-N count TensorCores


def _recipe(path):
  module = runpy.run_path(str(path))
  return module["__doc__"], module["get_config"]()


def _sbatch_default(flag: str) -> int:
  return int(re.search(rf"^#SBATCH --{flag}=(\d+)", (ROOT / "slurm" / "train.sbatch").read_text(), re.M).group(1))


def _devices_from_launch(doc: str) -> int:
  """The device count of the hardware the docstring's launch command asks for."""
  tpu = re.search(r"tpu/create\.sh \S+ (v4|v5p|v5litepod|v6e)-(\d+)", doc)
  if tpu:
    return int(int(tpu.group(2)) * CHIPS_PER_UNIT[tpu.group(1)])
  sbatch = re.search(r"sbatch (.*?)slurm/train\.sbatch", doc)
  assert sbatch, "a recipe names its hardware: tpu/create.sh NAME TYPE or sbatch ... slurm/train.sbatch"
  flags = sbatch.group(1)
  nodes = re.search(r"(?:--nodes=|-N ?)(\d+)", flags)
  tasks = re.search(r"--ntasks-per-node=(\d+)", flags)
  return (int(nodes.group(1)) if nodes else _sbatch_default("nodes")) * (
      int(tasks.group(1)) if tasks else _sbatch_default("ntasks-per-node"))


def test_there_are_recipes_for_tpus_and_gpus():
  names = {p.stem for p in RECIPES}
  assert {"qwen25_05b_v5e8", "qwen3_17b_v5e8", "qwen3_4b_v5p8", "qwen3_8b_v5p16", "qwen25_7b_lora_h100",
          "qwen3_8b_h100x16"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_fits_with_the_peak_its_docstring_states(path):
  doc, c = _recipe(path)
  p = plan.plan(c)  # plan.n_devices: the slice's devices, whatever this machine has
  assert p.fits, p.refusal()
  found = PEAK.findall(doc)
  assert len(found) == 1, "the docstring states the plan's peak once: 'peak X GiB of Y GiB (device) -> fits'"
  peak, memory, device = found[0]
  assert abs(float(peak) - p.peak / GiB) <= 0.1, f"docstring peak {peak} GiB, plan {p.peak / GiB:.2f} GiB"
  assert float(memory) == p.device_bytes / GiB and device == c.plan.device
  assert p.peak <= 0.9 * p.device_bytes  # headroom for what the estimate does not count
  assert f"configs/recipes/{path.name}" in doc and "jarl plan" in doc


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_is_a_real_model_laid_out_to_fit(path):
  doc, c = _recipe(path)
  assert c.plan.n_devices == _devices_from_launch(doc)
  assert c.model.hf_path == HUB_IDS[c.model.preset] and c.tokenizer == c.model.hf_path
  assert c.model.dtype == "bfloat16" and c.plan.tokenizer == "byte"
  assert c.model.get("param_dtype") == "float32" or c.model.lora.rank > 0  # no bfloat16 AdamW updates
  train._dataclass(train.learner.AlgoConfig, c.algo)  # valid names
  mesh = plan._mesh(c.mesh, c.plan.n_devices)
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  rows = c.rollout.n_tasks * c.rollout.group_size
  micro = rows // (c.algo.minibatches * c.algo.microbatches)
  assert micro * c.algo.minibatches * c.algo.microbatches == rows and micro % shards == 0
  assert c.eval.tasks <= rows and c.eval.tasks % shards == 0  # eval's rollout fits the planned one
  assert c.sft.batch_size <= micro and c.sft.batch_size % shards == 0  # the warm start fits the update's


def test_jarl_plan_on_a_recipe_needs_no_network_and_no_accelerator():
  env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", XLA_FLAGS="")
  out = subprocess.run([sys.executable, "-m", "jarl.cli", "plan", "--config",
                        str(ROOT / "configs/recipes/qwen3_8b_v5p16.py")],
                       capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode == 0, out.stderr
  assert "qwen3 8.19B" in out.stdout and "mesh data=1 fsdp=8 tensor=1" in out.stdout and "-> fits" in out.stdout


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_has_the_published_size(name):
  cfg = models.preset(name)
  shapes = models.abstract(cfg)[1]  # jax.eval_shape: nothing allocated
  n = sum(x.size for x in jax.tree.leaves(shapes))
  embeddings = cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)
  assert n == cfg.num_params()
  for count, published in zip((n, n - embeddings), PUBLISHED[name]):
    digits = len(published.split(".")[1])  # within 1%, or within the rounding of the figure as written
    assert abs(count / 1e9 - float(published)) <= max(0.01 * float(published), 0.5 * 10**-digits), published


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_is_what_transformers_builds_from_its_config(name):
  cfg = models.preset(name)
  hf = models.config_to_hf(cfg)
  assert models.config_from_hf(json.loads(json.dumps(hf))) == cfg
  tc = transformers.AutoConfig.for_model(**hf)
  assert (tc.hidden_size, tc.num_hidden_layers, tc.num_attention_heads, tc.num_key_value_heads, tc.head_dim,
          tc.intermediate_size, tc.vocab_size, tc.tie_word_embeddings, tc.max_position_embeddings) == (
      cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.mlp_dim, cfg.vocab_size,
      cfg.tie_embeddings, cfg.max_seq_len)
  with torch.device("meta"):  # shapes only
    model = transformers.AutoModelForCausalLM.from_config(tc)
  assert sum(p.numel() for p in model.parameters()) == cfg.num_params()
  assert type(model).__name__ == {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[cfg.family]


def test_plan_uses_the_preset_for_a_hub_id_and_config_json_for_a_directory(tmp_path, monkeypatch):
  import huggingface_hub

  def no_network(*args, **kwargs):
    raise AssertionError("planning must not download")
  monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
  section = dict(hf_path="Qwen/Qwen3-8B", preset="qwen3-8b", dtype="bfloat16", param_dtype="float32")
  assert plan.model_config(section) == models.preset("qwen3-8b", dtype="bfloat16", param_dtype="float32")
  (tmp_path / "config.json").write_text(json.dumps(models.config_to_hf(models.preset("tiny"))))
  local = plan.model_config(dict(section, hf_path=str(tmp_path)))  # a local directory: its config.json
  assert local == models.preset("tiny", dtype="bfloat16", param_dtype="float32")
  with pytest.raises(AssertionError, match="must not download"):  # a hub id alone: the hub's config.json
    plan.model_config(dict(hf_path="Qwen/Qwen3-8B"))


def test_plan_refuses_a_mesh_the_devices_cannot_hold():
  _, c = _recipe(ROOT / "configs/recipes/qwen3_8b_v5p16.py")
  with pytest.raises(ValueError, match="does not fit 4 devices.*plan.n_devices"):
    plan.plan(c, n_devices=4)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
  path = tmp_path_factory.mktemp("tiny_hf")
  models.save_pretrained(models.create(models.preset("tiny"), seed=0), path)
  return str(path)


def test_train_checks_the_checkpoint_against_the_preset(tiny_checkpoint):
  lm = train.load_pretrained(dict(hf_path=tiny_checkpoint, preset="tiny", dtype="bfloat16"), None)
  assert lm.config == models.preset("tiny", dtype="bfloat16", param_dtype="bfloat16")
  with pytest.raises(ValueError, match=r"not the architecture of model.preset='small'.*d_model: 512 vs 256.*"
                                       r"n_layers: 8 vs 4"):
    train.load_pretrained(dict(hf_path=tiny_checkpoint, preset="small"), None)


def test_float32_params_with_bfloat16_compute(tiny_checkpoint):
  lm = train.load_pretrained(dict(hf_path=tiny_checkpoint, dtype="bfloat16", param_dtype="float32"), None)
  assert lm.config.dtype == "bfloat16" and lm.config.param_dtype == "float32"
  assert {x.dtype for x in jax.tree.leaves(lm.params)} == {jnp.dtype("float32")}
  tokens = jnp.arange(8, dtype=jnp.int32)[None]
  logits = lm.apply(lm.params, tokens, tokens, None)[0]
  full = train.load_pretrained(dict(hf_path=tiny_checkpoint), None)  # float32 throughout
  reference = full.apply(full.params, tokens, tokens, None)[0]
  assert logits.dtype == jnp.float32
  assert jnp.abs(logits.astype(jnp.float32) - reference).max() < 0.1 * jnp.abs(reference).max()
