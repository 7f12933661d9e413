"""HF checkpoints: logits parity with transformers (torch CPU), round trips, clear errors."""

import copy
import functools
import json
import shutil

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from jarl import models, sharding

BASE = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, rms_norm_eps=1e-5, max_position_embeddings=64, initializer_range=0.1)
LLAMA3_ROPE = dict(rope_type="llama3", rope_theta=5000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=16)
CASES = {
    "llama_gqa": ("llama", dict(rope_parameters=dict(rope_type="default", rope_theta=500.0))),
    "llama_tied": ("llama", dict(tie_word_embeddings=True)),
    "llama3_rope": ("llama", dict(rope_parameters=LLAMA3_ROPE)),
    "llama_bias": ("llama", dict(attention_bias=True, num_key_value_heads=4)),
    "qwen2": ("qwen2", {}),
    "qwen3": ("qwen3", dict(head_dim=24, tie_word_embeddings=True)),
}
B, T = 3, 24  # T > original_max_position_embeddings, so llama3 scaling matters
TOKENS = np.random.RandomState(0).randint(0, 128, (B, T))


def _hf_model(model_type, changes):
  torch.manual_seed(0)
  config = transformers.AutoConfig.for_model(model_type, **{**BASE, **changes})
  model = transformers.AutoModelForCausalLM.from_config(config).eval()
  with torch.no_grad():  # norms init to 1 and biases to 0: randomise them so the mapping is tested
    for name, p in model.named_parameters():
      if p.ndim == 1:
        p.copy_(torch.randn_like(p) * 0.3 + (1.0 if "norm" in name else 0.0))
  return model


def _hf_logits(model, tokens, mask=None):
  kwargs = {}
  if mask is not None:
    kwargs = dict(attention_mask=torch.tensor(mask, dtype=torch.long),
                  position_ids=torch.tensor(np.maximum(np.cumsum(mask, 1) - 1, 0)))
  with torch.no_grad():
    return model(torch.tensor(tokens), **kwargs).logits.float().numpy()


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, params, tokens_BxT, valid_BxT):
  """lm.apply, compiled once per model config rather than once per handle."""
  return nnx.merge(graphdef, params)(tokens_BxT, None, None, valid_BxT)[0]


def _logits(lm, tokens, valid=None):
  valid = np.ones(tokens.shape, bool) if valid is None else valid
  return np.asarray(_forward(lm.graphdef, lm.params, jnp.asarray(tokens), jnp.asarray(valid)))


def _random_lm(cfg, seed=0):
  """A handle with random params, norm scales and biases too (quicker than models.create)."""
  rng = np.random.RandomState(seed)
  def one(path, shape):
    noise = rng.normal(size=shape.shape).astype(np.float32)
    return 1.0 + 0.3 * noise if sharding.path_name(path).endswith("scale") else 0.2 * noise
  return models.from_params(cfg, jax.tree_util.tree_map_with_path(one, models.abstract(cfg)[1]))


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
  """(name, HF model, its logits on TOKENS, a single-file save, a sharded save)."""
  model_type, changes = CASES[request.param]
  model = _hf_model(model_type, changes)
  single, sharded = (tmp_path_factory.mktemp(f"{request.param}_{kind}") for kind in ("single", "sharded"))
  model.save_pretrained(single)
  model.save_pretrained(sharded, max_shard_size="20KB")
  return request.param, model, _hf_logits(model, TOKENS), single, sharded


def test_logits_match_transformers(case):
  name, model, ref, single, sharded = case
  assert (sharded / "model.safetensors.index.json").exists() and not (sharded / "model.safetensors").exists()
  diffs = []
  for path in (single, sharded):
    lm = models.from_pretrained(path)
    diffs.append(np.abs(_logits(lm, TOKENS) - ref).max())
  # Left-padded batch: transformers with attention_mask + position_ids, jarl with valid_BxT.
  valid = np.ones((B, T), bool)
  valid[0, :5], valid[1, :11] = False, False
  padded_ref = _hf_logits(model, TOKENS, valid)
  diffs.append(np.abs(_logits(lm, TOKENS, valid) - padded_ref)[valid].max())
  print(f"\n{name}: max |logit diff| {max(diffs):.2e} (|logits| up to {np.abs(ref).max():.2f})")
  assert max(diffs) < 1e-4, diffs
  assert np.abs(ref).max() > 1.0  # the comparison is not between near-zero numbers


def test_llama3_scaling_matters_and_legacy_rope_keys_read_the_same(tmp_path):
  model = _hf_model("llama", dict(rope_parameters=LLAMA3_ROPE))
  model.save_pretrained(tmp_path)
  ref = _hf_logits(model, TOKENS)
  unscaled = models.from_pretrained(tmp_path)
  unscaled = models.from_params(unscaled.config.replace(rope_type="default"), unscaled.params)
  assert np.abs(_logits(unscaled, TOKENS) - ref).max() > 1e-2
  # Files from transformers 4 write rope_theta + rope_scaling (with "type" or "rope_type").
  config = json.loads((tmp_path / "config.json").read_text())
  rope = config.pop("rope_parameters")
  config["rope_theta"] = rope.pop("rope_theta")
  config["rope_scaling"] = {"type": rope.pop("rope_type"), **rope}
  (tmp_path / "config.json").write_text(json.dumps(config))
  np.testing.assert_allclose(_logits(models.from_pretrained(tmp_path), TOKENS), ref, atol=1e-4)


ROUND_TRIP = {
    "llama": models.ModelConfig(vocab_size=96, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, mlp_dim=64,
                                rope_type="llama3", rope_factor=4.0, rope_original_max_position=8,
                                rope_theta=1000.0, rms_norm_eps=1e-5, max_seq_len=64),
    "qwen2": models.ModelConfig(vocab_size=96, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, mlp_dim=64,
                                family="qwen2", qkv_bias=True, rope_type="linear", rope_factor=2.0),
    "qwen3": models.ModelConfig(vocab_size=96, d_model=32, n_layers=2, n_heads=4, n_kv_heads=1, mlp_dim=64,
                                head_dim=12, family="qwen3", qk_norm=True, qkv_bias=True, o_bias=True,
                                tie_embeddings=True),
}


@pytest.mark.parametrize("family", sorted(ROUND_TRIP))
def test_jarl_to_hf_and_back(family, tmp_path):
  cfg = ROUND_TRIP[family]
  assert models.config_from_hf(models.config_to_hf(cfg)) == cfg
  lm = _random_lm(cfg, seed=1)
  models.save_pretrained(lm, tmp_path)
  again = models.from_pretrained(tmp_path)
  assert again.config == cfg
  chex.assert_trees_all_equal(again.params, lm.params)  # bit-exact
  model, info = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
  assert type(model).__name__ == models.hf.ARCHITECTURES[family]
  assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
  tokens = TOKENS % cfg.vocab_size
  np.testing.assert_allclose(_logits(lm, tokens), _hf_logits(model.eval(), tokens), atol=1e-4)


def test_bfloat16(tmp_path):
  model = _hf_model("qwen3", dict(head_dim=24))
  model.save_pretrained(tmp_path / "f32")
  ref = _hf_logits(model, TOKENS)
  lm16 = models.from_pretrained(tmp_path / "f32", dtype="bfloat16")
  assert lm16.config.dtype == lm16.config.param_dtype == "bfloat16"
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(lm16.params))
  assert np.abs(_logits(lm16, TOKENS) - ref).max() < 0.1 * np.abs(ref).max()
  # A bfloat16 checkpoint loads exactly (float32 by default) and saves back as bfloat16.
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(p.to(torch.bfloat16).float())
  copy.deepcopy(model).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
  lm = models.from_pretrained(tmp_path / "bf16")
  np.testing.assert_allclose(_logits(lm, TOKENS), _hf_logits(model, TOKENS), atol=1e-4)
  models.save_pretrained(lm16, tmp_path / "again")
  assert json.loads((tmp_path / "again" / "config.json").read_text())["torch_dtype"] == "bfloat16"
  header = safetensors.numpy.load_file(str(tmp_path / "again" / "model.safetensors"))
  assert header["model.embed_tokens.weight"].dtype == ml_dtypes.bfloat16
  chex.assert_trees_all_equal(models.from_pretrained(tmp_path / "again", dtype="bfloat16").params, lm16.params)


def test_sharded_load_on_a_mesh(tmp_path):
  model = _hf_model(*CASES["llama_gqa"])
  model.save_pretrained(tmp_path)
  mesh = sharding.make_mesh(2, 2, 2)
  lm = models.from_pretrained(tmp_path, mesh=mesh)
  assert lm.params["embed"].sharding == NamedSharding(mesh, P("tensor", "fsdp"))
  assert lm.params["layers"][1]["attn"]["q"]["kernel"].sharding == NamedSharding(mesh, P("fsdp", "tensor", None))
  assert lm.params["layers"][0]["mlp"]["down"]["kernel"].sharding == NamedSharding(mesh, P("tensor", "fsdp"))
  np.testing.assert_allclose(_logits(lm, TOKENS), _hf_logits(model, TOKENS), atol=1e-4)


HF_CONFIG = models.config_to_hf(ROUND_TRIP["qwen3"])


@pytest.mark.parametrize("changes,match", [
    (dict(model_type="gpt2"), r"model_type='gpt2' \(supported: \['llama', 'qwen2', 'qwen3'\]\)"),
    (dict(hidden_act="gelu"), "hidden_act='gelu'"),
    (dict(mlp_bias=True), "mlp_bias=True"),
    (dict(rope_parameters=dict(rope_type="yarn", rope_theta=1e4, factor=4.0)), "rope type='yarn'"),
    (dict(rope_parameters=None, rope_scaling=dict(type="dynamic", factor=2.0)), "rope type='dynamic'"),
    (dict(rope_parameters=dict(rope_type="longrope", rope_theta=1e4)), "rope type='longrope'"),
    (dict(rope_parameters=dict(rope_type="linear", rope_theta=1e4, factor=2.0, beta=1.0)), "rope parameter beta"),
    (dict(use_sliding_window=True), "use_sliding_window=True"),
    (dict(layer_types=["full_attention", "sliding_attention"]), "layer_types=.*sliding_attention"),
    (dict(attention_dropout=0.1), "attention_dropout=0.1"),
    (dict(quantization_config={"quant_method": "gptq"}), "quantization_config="),
    (dict(num_experts=8), "num_experts=8"),
])
def test_bad_config_is_a_clear_error_before_any_tensor_is_read(changes, match, tmp_path):
  with pytest.raises(ValueError, match=match):
    models.config_from_hf({**HF_CONFIG, **changes})
  (tmp_path / "config.json").write_text(json.dumps({**HF_CONFIG, **changes}))
  (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
  with pytest.raises(ValueError, match=match):
    models.from_pretrained(tmp_path)


def test_harmless_fields_are_accepted():
  cfg = models.config_from_hf({**HF_CONFIG, "pretraining_tp": 2, "use_mrope": False, "sliding_window": 4096,
                               "bos_token_id": 1, "rope_scaling": None, "_name_or_path": "x"})
  assert cfg == ROUND_TRIP["qwen3"]
  with pytest.raises(ValueError, match="cannot express"):
    models.config_to_hf(ROUND_TRIP["qwen3"].replace(family="llama"))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  path = tmp_path_factory.mktemp("saved")
  models.save_pretrained(_random_lm(ROUND_TRIP["llama"]), path)
  return path, safetensors.numpy.load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize("edit,match", [
    (lambda t: t.pop("model.layers.1.mlp.up_proj.weight"),
     r"missing tensor model.layers.1.mlp.up_proj.weight \(expected shape \(64, 32\)\)"),
    (lambda t: t.update({"model.layers.0.self_attn.extra.weight": np.zeros(3, np.float32)}),
     r"unexpected tensor model.layers.0.self_attn.extra.weight \(shape \(3,\)\)"),
    (lambda t: t.update({"model.layers.0.self_attn.k_proj.weight": np.zeros((8, 32), np.float32)}),
     r"tensor model.layers.0.self_attn.k_proj.weight has shape \(8, 32\) in the checkpoint, expected \(16, 32\)"),
    (lambda t: t.update({"model.norm.weight": np.zeros(32, np.int8)}), r"model.norm.weight has dtype I8"),
])
def test_bad_tensors_are_named(saved, edit, match, tmp_path):
  path, tensors = saved
  tensors = dict(tensors)
  edit(tensors)
  shutil.copy(path / "config.json", tmp_path / "config.json")
  safetensors.numpy.save_file(tensors, str(tmp_path / "model.safetensors"))
  with pytest.raises(ValueError, match=match):
    models.from_pretrained(tmp_path)


def test_harmless_extra_tensors_and_other_kinds(saved, tmp_path):
  path, tensors = saved
  shutil.copy(path / "config.json", tmp_path / "config.json")
  extra = {"model.layers.0.self_attn.rotary_emb.inv_freq": np.ones(4, np.float32)}
  safetensors.numpy.save_file({**tensors, **extra}, str(tmp_path / "model.safetensors"))
  pv = models.from_pretrained(tmp_path, kind="policy_value")
  assert pv.kind == "policy_value" and "value_head" in pv.params
  with pytest.raises(ValueError, match="writes 'lm' handles only, got kind 'policy_value'"):
    models.save_pretrained(pv, tmp_path / "out")
  with pytest.raises(ValueError, match="got 'reward'"):
    models.from_pretrained(tmp_path, kind="reward")
  with pytest.raises(FileNotFoundError, match="not a model directory"):
    models.from_pretrained(tmp_path / "nowhere")


def test_damaged_checkpoints_name_the_file_and_the_field(tmp_path):
  import safetensors.numpy
  lm = _random_lm(ROUND_TRIP["llama"], seed=1)
  models.save_pretrained(lm, tmp_path)
  weights = tmp_path / "model.safetensors"
  tensors = safetensors.numpy.load_file(weights)
  name = sorted(n for n in tensors if "q_proj" in n)[0]
  tensors[name][0, 0] = np.inf
  safetensors.numpy.save_file(tensors, weights, metadata={"format": "pt"})
  with pytest.raises(ValueError, match=rf"checkpoint {tmp_path}: tensor {name} has non-finite values"):
    models.from_pretrained(tmp_path)
  (tmp_path / "config.json").write_text('{"model_type": "llama", ')
  with pytest.raises(ValueError, match=r"config.json: cannot read the model config"):
    models.from_pretrained(tmp_path)
