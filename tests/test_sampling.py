"""The batched sampler: sampling functions against numpy references, parity with a teacher-forced
forward and with transformers' greedy generate, mixed lengths, stops, keys and shardings."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jarl import compaction, models, sampling, sharding
from jarl.sampling import SamplingConfig

CFG = models.ModelConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, mlp_dim=64)
# Heads divisible by every mesh axis size up to 8 (as in test_sharding.py).
CFG_8 = models.ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=16, n_kv_heads=8, head_dim=8,
                           mlp_dim=128)
PROMPTS = [[5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9], [42], [3, 1, 4, 1, 5]]


@pytest.fixture(scope="module")
def lm():
  return models.create(CFG, seed=0)


_compiled = functools.lru_cache(sampling.make_generate)
_score = jax.jit(sampling.score, static_argnums=(0, 5))


def _run(lm, cfg, prompts, key=0, prompt_len=None):
  prompt_BxP, valid_BxP = sampling.pad_prompts(prompts, prompt_len, cfg.pad_id)
  out = _compiled(lm, cfg, prompt_BxP.shape[1])(lm.params, prompt_BxP, valid_BxP, jax.random.key(key))
  return prompt_BxP, valid_BxP, jax.device_get(out)


# --- the pure sampling functions ------------------------------------------------------------------

def _filter_reference(logits_V, temperature, top_k, top_p):
  """Slow numpy: scale, keep the k largest, then the smallest prefix by probability reaching top_p."""
  x = np.asarray(logits_V, np.float64) / temperature
  order = np.argsort(-x, kind="stable")
  keep = np.zeros(x.shape, bool)
  keep[order[:top_k or len(x)]] = True
  if top_p < 1:
    kept = order[:top_k or len(x)]
    p = np.exp(x[kept] - x[kept].max())
    p /= p.sum()
    n = int(np.searchsorted(np.cumsum(p), top_p) + 1)  # first prefix whose mass reaches top_p
    keep[:] = False
    keep[kept[:n]] = True
  return keep


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8),
                                                     (0.5, 20, 0.6), (1.0, 1, 1.0), (2.0, 0, 0.05)])
def test_filter_logits_matches_numpy_reference(temperature, top_k, top_p):
  logits_BxV = jax.random.normal(jax.random.key(1), (6, 50)) * 2
  cfg = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
  got = sampling.filter_logits(logits_BxV, cfg)
  # jit keeps the same tokens; under jax 0.12 its scaled values differ from eager's by an ulp when temperature != 1
  jitted = jax.jit(sampling.filter_logits, static_argnums=1)(logits_BxV, cfg)
  np.testing.assert_array_equal(np.isfinite(jitted), np.isfinite(got))
  np.testing.assert_allclose(jitted, got, rtol=1e-6)
  for row in range(6):
    keep = _filter_reference(logits_BxV[row], temperature, top_k, top_p)
    np.testing.assert_array_equal(np.isfinite(got[row]), keep)
    np.testing.assert_allclose(got[row][keep], np.asarray(logits_BxV[row])[keep] / temperature, rtol=1e-6)


def test_categorical_draws_from_softmax_and_never_a_masked_token():
  logits_BxV = jnp.log(jnp.array([[0.1, 0.0, 0.3, 0.6] + [0.0] * 300,
                                  [0.0] * 127 + [0.25, 0.5, 0.25] + [0.0] * 174]))
  draw = jax.jit(jax.vmap(lambda k: sampling.categorical(k, logits_BxV)))
  tokens_SxB, logprobs_SxB = draw(jax.random.split(jax.random.key(0), 20000))
  np.testing.assert_allclose(np.bincount(tokens_SxB[:, 0], minlength=304)[:4] / 20000, [0.1, 0, 0.3, 0.6],
                             atol=0.015)
  np.testing.assert_allclose(np.bincount(tokens_SxB[:, 1], minlength=304)[126:131] / 20000,
                             [0, 0.25, 0.5, 0.25, 0], atol=0.015)
  np.testing.assert_allclose(logprobs_SxB, jnp.take_along_axis(jax.nn.log_softmax(logits_BxV), tokens_SxB.T, 1).T,
                             atol=1e-6)


def test_argmax_is_the_first_maximum():
  x_BxV = jnp.array([[1.0, 3.0, 3.0, 0.0], [-jnp.inf, -1.0, -2.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
  np.testing.assert_array_equal(sampling.argmax(x_BxV), [1, 1, 0])
  logits_BxV = jax.random.normal(jax.random.key(2), (16, 300))
  np.testing.assert_array_equal(sampling.argmax(logits_BxV), jnp.argmax(logits_BxV, -1))


def test_non_finite_logits_never_give_an_out_of_vocabulary_token():
  logits_BxV = jnp.array([[jnp.nan] * 300, [jnp.inf] * 300, [0.0] * 299 + [jnp.nan]])
  for token_B in (sampling.argmax(logits_BxV), sampling.categorical(jax.random.key(0), logits_BxV)[0]):
    assert ((token_B >= 0) & (token_B < 300)).all(), token_B


def test_vocab_limit_never_draws_padded_rows():
  """Ids at or above vocab_limit (a model's rows beyond its tokenizer) are never drawn, greedy or sampled,
  and their mass leaves the sampling distribution; the policy log-prob stays the full softmax's."""
  logits_BxV = jax.random.normal(jax.random.key(5), (64, 40)).at[:, 30:].add(8.0)  # the padded rows dominate
  key = jax.random.key(6)
  for cfg in (SamplingConfig(vocab_limit=30), SamplingConfig(temperature=0, vocab_limit=30),
              SamplingConfig(top_p=0.9, vocab_limit=30)):
    token_B, logprob_B, raw_B = sampling.sample_tokens(logits_BxV, key, cfg)
    assert (np.asarray(token_B) < 30).all()
    np.testing.assert_allclose(raw_B, sampling.policy_logprob(logits_BxV, token_B), atol=1e-6)
    if not cfg.greedy:
      kept_BxV = np.asarray(logits_BxV)[:, :30]
      np.testing.assert_array_less(np.asarray(raw_B), np.asarray(logprob_B))
      if cfg.top_p == 1:
        ref = np.take_along_axis(jax.nn.log_softmax(kept_BxV), np.asarray(token_B)[:, None], 1)[:, 0]
        np.testing.assert_allclose(logprob_B, ref, atol=1e-5)
  assert not SamplingConfig(vocab_limit=30).plain
  unlimited = sampling.sample_tokens(logits_BxV, key, SamplingConfig(vocab_limit=40))
  np.testing.assert_array_equal(unlimited[0], sampling.sample_tokens(logits_BxV, key, SamplingConfig())[0])


def test_sample_tokens_jit_matches_eager_and_top_k_1_is_greedy():
  logits_BxV = jax.random.normal(jax.random.key(3), (8, 97)) * 3
  key = jax.random.key(4)
  cfg = SamplingConfig(temperature=0.8, top_k=10, top_p=0.9)
  eager = sampling.sample_tokens(logits_BxV, key, cfg)
  jitted = jax.jit(sampling.sample_tokens, static_argnums=2)(logits_BxV, key, cfg)
  for a, b in zip(eager, jitted):
    np.testing.assert_allclose(a, b, atol=1e-6)
  greedy = sampling.sample_tokens(logits_BxV, key, SamplingConfig(temperature=0))
  top1 = sampling.sample_tokens(logits_BxV, key, SamplingConfig(top_k=1))
  np.testing.assert_array_equal(top1[0], greedy[0])
  np.testing.assert_array_equal(top1[1], 0.0)  # the only token left has probability 1
  np.testing.assert_allclose(top1[2], greedy[2], atol=1e-6)


@pytest.mark.parametrize("changes,match", [(dict(top_p=0.0), "top_p=0.0 must be in"), (dict(top_p=1.5), "top_p"),
                                           (dict(temperature=-1), "temperature"), (dict(top_k=-2), "top_k"),
                                           (dict(max_new_tokens=0), "max_new_tokens"),
                                           (dict(pad_id=-1), "pad_id=-1 must be a token id"),
                                           (dict(compact_every=2, early_stop=False), "needs early_stop=True")])
def test_bad_sampling_config_is_a_clear_error(changes, match):
  with pytest.raises(ValueError, match=match):
    SamplingConfig(**changes)


def test_bad_prompts_are_clear_errors(lm):
  with pytest.raises(ValueError, match="prompt 1 is empty"):
    sampling.pad_prompts([[1], []])
  with pytest.raises(ValueError, match="prompt 0 has 4 tokens, more than prompt_len=3"):
    sampling.pad_prompts([[1, 2, 3, 4]], prompt_len=3)
  with pytest.raises(ValueError, match="exceeds the model's max_seq_len"):
    sampling.make_generate(lm, SamplingConfig(max_new_tokens=2000), prompt_len=100)
  with pytest.raises(ValueError, match=r"stop_ids=\(97,\) must be in \[0, 97\)"):
    sampling.make_generate(lm, SamplingConfig(stop_ids=(97,)), prompt_len=4)


# --- the generate program --------------------------------------------------------------------------

# 20 new tokens: the decode loop runs in two segments (16 + 4 steps) with a cache grown in between.
@pytest.mark.parametrize("cfg", [SamplingConfig(max_new_tokens=20, temperature=0.7, top_k=20, top_p=0.9),
                                 SamplingConfig(max_new_tokens=20)], ids=["filtered", "plain"])
def test_logprobs_equal_a_teacher_forced_forward(lm, cfg):
  prompt_BxP, valid_BxP, out = _run(lm, cfg, PROMPTS, prompt_len=11)
  assert out.tokens_BxN.shape == (4, 20) and out.tokens_BxN.dtype == np.int32
  logprobs_BxN, raw_BxN = _score(lm, lm.params, prompt_BxP, valid_BxP, out, cfg)
  np.testing.assert_allclose(raw_BxN, out.raw_logprobs_BxN, atol=1e-4)
  np.testing.assert_allclose(logprobs_BxN, out.logprobs_BxN, atol=1e-4)
  # Independently of the slot layout: row 1 alone, unpadded, through one forward.
  n = int(out.lengths_B[1])
  alone_1xT = jnp.array([PROMPTS[1] + out.tokens_BxN[1, :n - 1].tolist()])
  logp_TxV = jax.nn.log_softmax(lm.apply(lm.params, alone_1xT)[0][0])[len(PROMPTS[1]) - 1:]
  np.testing.assert_allclose(out.raw_logprobs_BxN[1, :n],
                             jnp.take_along_axis(logp_TxV, jnp.asarray(out.tokens_BxN[1, :n])[:, None], 1)[:, 0],
                             atol=1e-4)
  if cfg.plain:
    np.testing.assert_array_equal(out.logprobs_BxN, out.raw_logprobs_BxN)
  else:
    assert (out.logprobs_BxN > out.raw_logprobs_BxN).all()  # renormalised over fewer tokens


def test_mixed_lengths_continue_as_each_prompt_alone(lm):
  cfg = SamplingConfig(max_new_tokens=10, temperature=0)
  batched = sampling.generate(lm, PROMPTS, jax.random.key(0), cfg, prompt_len=12)
  for prompt, got in zip(PROMPTS, batched):
    alone = sampling.generate(lm, [prompt], jax.random.key(0), cfg, prompt_len=12)[0]
    assert got.tokens == alone.tokens
    np.testing.assert_allclose(got.raw_logprobs, alone.raw_logprobs, atol=1e-5)


def test_same_key_same_tokens_other_key_other_tokens(lm):
  cfg = SamplingConfig(max_new_tokens=16, temperature=1.0)
  a, b, c = (_run(lm, cfg, PROMPTS, key=k)[2] for k in (7, 7, 8))
  np.testing.assert_array_equal(a.tokens_BxN, b.tokens_BxN)
  np.testing.assert_array_equal(a.logprobs_BxN, b.logprobs_BxN)
  assert (a.tokens_BxN != c.tokens_BxN).mean() > 0.5


def test_stop_ids_end_rows_and_lengths_count_the_stop(lm):
  free = _run(lm, SamplingConfig(max_new_tokens=12, temperature=1.0), PROMPTS, key=3)[2]
  stop = int(free.tokens_BxN[0, 4])
  first_B = [list(row).index(stop) if stop in row else None for row in free.tokens_BxN]
  unused = next(t for t in range(CFG.vocab_size) if t not in free.tokens_BxN)
  for early_stop in (True, False):
    cfg = SamplingConfig(max_new_tokens=12, temperature=1.0, stop_ids=(unused, stop), pad_id=unused,
                         early_stop=early_stop)
    out = _run(lm, cfg, PROMPTS, key=3)[2]
    for row, first in enumerate(first_B):
      n = 12 if first is None else first + 1
      assert out.lengths_B[row] == n
      np.testing.assert_array_equal(out.tokens_BxN[row, :n], free.tokens_BxN[row, :n])
      np.testing.assert_allclose(out.logprobs_BxN[row, :n], free.logprobs_BxN[row, :n], atol=1e-5)
      np.testing.assert_array_equal(out.tokens_BxN[row, n:], unused)
      np.testing.assert_array_equal(out.logprobs_BxN[row, n:], 0.0)
      np.testing.assert_array_equal(out.raw_logprobs_BxN[row, n:], 0.0)


def test_live_row_compaction_changes_no_token(lm):
  """Rows that stopped are left out (the rest gathered into 8, 4 or 2 rows every 2 steps): the same tokens and
  log-probs as decoding the full batch (compact_buckets=1: each row draws from its own key either way), and
  the log-probs are those of a teacher-forced forward."""
  prompts = [p[:1 + i % 3] + [i] for i, p in enumerate(PROMPTS * 2)]
  base = dict(max_new_tokens=20, temperature=1.0, stop_ids=tuple(range(0, CFG.vocab_size, 5)), compact_every=2)
  full, compact = (_run(lm, SamplingConfig(**base, compact_buckets=n), prompts, key=4, prompt_len=6)
                   for n in (1, 3))
  assert compact[2].lengths_B.min() < 8 and compact[2].lengths_B.max() == 20  # rows stop at different steps
  for name in ("tokens_BxN", "lengths_B", "logprobs_BxN", "raw_logprobs_BxN"):
    np.testing.assert_allclose(getattr(compact[2], name), getattr(full[2], name), atol=1e-6, err_msg=name)
  prompt_BxP, valid_BxP, out = compact
  _, raw_BxN = _score(lm, lm.params, prompt_BxP, valid_BxP, out, SamplingConfig(**base))
  np.testing.assert_allclose(raw_BxN, out.raw_logprobs_BxN, atol=1e-4)


def test_a_decode_loop_keeps_its_bucket_until_its_rows_fit_a_smaller_one():
  """compaction.keeps_bucket: a loop gathered at step 1 into 8 of buckets [8, 4, 2], checking every 2 steps."""
  def keeps(n, b, step, every=2):  # n active rows in a bucket of b
    return bool(compaction.keeps_bucket(jnp.arange(b) < n, [8, 4, 2], step, 1, every))
  assert keeps(5, 8, 3)  # 5 rows need 8
  assert not keeps(4, 8, 3)  # step 3 (start + 2) checks: 4 rows fit the bucket of 4
  assert keeps(4, 8, 2) and keeps(4, 8, 4)  # steps that do not check go on
  assert keeps(4, 8, 1) and keeps(1, 8, 1)  # the first step always runs (with an active row)
  assert not keeps(1, 8, 2, every=1)  # every step checks
  assert keeps(1, 2, 5) and not keeps(0, 2, 4)  # the smallest bucket: while a row is active
  assert not keeps(0, 8, 2)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_sharded_generation_matches_one_device():
  cfg = SamplingConfig(max_new_tokens=20, temperature=0.9, top_k=50)
  lm1 = models.create(CFG_8, seed=0)
  prompts = [list(range(1 + i, 3 + 2 * i)) for i in range(8)]
  _, _, want = _run(lm1, cfg, prompts, prompt_len=16)
  for shape in [(2, 2, 2), (1, 1, 8)]:
    mesh = sharding.make_mesh(*shape)
    lm = models.create(CFG_8, seed=0, mesh=mesh)
    prompt_BxP, valid_BxP = sharding.shard_batch(sampling.pad_prompts(prompts, 16), mesh)
    out = sampling.make_generate(lm, cfg, 16)(lm.params, prompt_BxP, valid_BxP, jax.random.key(0))
    assert out.tokens_BxN.sharding.spec == sharding.batch_sharding(mesh).spec
    np.testing.assert_array_equal(out.tokens_BxN, want.tokens_BxN)
    np.testing.assert_array_equal(out.lengths_B, want.lengths_B)
    np.testing.assert_allclose(out.logprobs_BxN, want.logprobs_BxN, atol=1e-5)
    np.testing.assert_allclose(out.raw_logprobs_BxN, want.raw_logprobs_BxN, atol=1e-5)
  # live-row compaction over 4 batch shards (buckets of 8 and 4 rows): the one-device result
  cfg = SamplingConfig(max_new_tokens=20, temperature=0.9, stop_ids=tuple(range(0, 256, 6)), compact_every=2)
  _, _, want = _run(lm1, cfg, prompts, prompt_len=16)
  mesh = sharding.make_mesh(2, 2, 2)
  lm = models.create(CFG_8, seed=0, mesh=mesh)
  prompt_BxP, valid_BxP = sharding.shard_batch(sampling.pad_prompts(prompts, 16), mesh)
  out = sampling.make_generate(lm, cfg, 16)(lm.params, prompt_BxP, valid_BxP, jax.random.key(0))
  assert want.lengths_B.min() < 8
  np.testing.assert_array_equal(out.tokens_BxN, want.tokens_BxN)
  np.testing.assert_allclose(out.raw_logprobs_BxN, want.raw_logprobs_BxN, atol=1e-5)


def test_greedy_equals_transformers_generate(tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  torch.manual_seed(0)
  hf_cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                    rms_norm_eps=1e-6, initializer_range=0.2, bos_token_id=1, eos_token_id=2,
                                    pad_token_id=0, tie_word_embeddings=False)
  hf = transformers.LlamaForCausalLM(hf_cfg).eval()
  hf.save_pretrained(tmp_path)
  lm = models.from_pretrained(tmp_path)
  prompts = [[1, 17, 33, 90, 4, 8], [1, 5], [1, 100, 101, 102]]
  prompt_BxP, valid_BxP = sampling.pad_prompts(prompts, pad_id=0)
  with torch.no_grad():
    want = hf.generate(input_ids=torch.tensor(prompt_BxP, dtype=torch.long),
                       attention_mask=torch.tensor(valid_BxP, dtype=torch.long), max_new_tokens=24,
                       do_sample=False, eos_token_id=2, pad_token_id=0)[:, prompt_BxP.shape[1]:].numpy()
  cfg = SamplingConfig(max_new_tokens=24, temperature=0, stop_ids=(2,), pad_id=0)
  out = jax.device_get(sampling.make_generate(lm, cfg, prompt_BxP.shape[1])(
      lm.params, prompt_BxP, valid_BxP, jax.random.key(0)))
  np.testing.assert_array_equal(out.tokens_BxN[:, :want.shape[1]], want)


def test_generate_command_says_random_weights_give_noise(capsys):
  """`jarl generate` on its defaults (no checkpoint) says the text is noise and how to get real text, then
  prints the samples and the speed."""
  import importlib.util
  import os
  path = os.path.join(os.path.dirname(__file__), "..", "configs", "generate.py")
  spec = importlib.util.spec_from_file_location("generate_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.num_samples, config.max_new_tokens = jax.device_count(), 4  # one row per (fake) device
  sampling.main(config)
  out = capsys.readouterr().out
  assert "randomly initialised 'tiny' model" in out and "package:smollm2-135m-instruct" in out
  assert out.count("--- sample ") == jax.device_count() and "tokens/s" in out
