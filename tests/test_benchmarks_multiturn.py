"""Smoke test of benchmarks/multiturn.py: a reduced workload end to end, so the benchmark does not rot."""

import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import multiturn  # noqa: E402


def test_bench_tokenizer_stop_is_outside_the_vocab_or_its_last_id():
  tok = multiturn.BenchTokenizer(512)
  assert tok.encode(tok.STOP) == [512] and tok.decode([48, 512, 49]) == "01"
  tok = multiturn.BenchTokenizer(512, stop_id=511)
  assert tok.encode("1" + tok.STOP) == [49, 511] and tok.vocab_size == 512


def test_python_step_matches_env():
  work = multiturn.Workload(episodes=1, turns=2)
  env = multiturn.DigitCount(multiturn.Codec.from_tokenizer(multiturn.BenchTokenizer(512)), work)
  reset, step = env.jitted
  state, obs = reset(None)
  assert env.codec.text(obs) == multiturn.observation(0, 0, work.obs_tokens)
  text = "a1b22 x9\xe9!"
  state, obs, reward, _, truncated, _ = step(state, env.action_tokens(text), None)
  turn, obs_text, py_reward, done = multiturn.py_step(0, text, work)
  assert (env.codec.text(obs), float(reward), bool(truncated)) == (obs_text, py_reward, done) == ("n=04 t=1", 0.25, False)


def test_variable_step_ends_the_episode_on_a_short_stopped_reply():
  work = multiturn.Workload(episodes=1, turns=4, mean_len=8.0)
  env = multiturn.DigitCount(multiturn.Codec.from_tokenizer(multiturn.BenchTokenizer(512, 511)), work)
  reset, step = env.jitted
  for text, ends in (("1a2", True), ("1a2b", False)):
    state, _ = reset(None)
    _, obs, reward, terminated, truncated, _ = step(state, env.action_tokens(text), None)
    turn, obs_text, py_reward, done = multiturn.py_step(0, text, work, len(text), stopped=True)
    assert (bool(terminated), bool(truncated), done, env.codec.text(obs), float(reward)) == \
        (ends, False, ends, obs_text, py_reward)
  assert not multiturn.py_step(0, "12", work, 2, stopped=False)[3]  # cut at the budget, not a short answer


def test_reduced_run(tmp_path):
  rows = multiturn.main(["--presets", "tiny", "--episodes", "4", "--turns", "2", "--repeats", "1",
                         "--workloads", "fixed"], results_dir=str(tmp_path))
  assert [r["system"] for r in rows] == ["jarl", "python-loop"]
  assert all(r["episodes_per_s"] > 0 and r["tokens_per_s"] == pytest.approx(r["episodes_per_s"] * 2 * 16) for r in rows)
  assert rows[0]["ms_per_decode_step"] > 0 and rows[1]["speedup_vs_python_loop"] == 1
  assert len(json.loads((tmp_path / "multiturn.json").read_text())["rows"]) == 2
  assert "| jarl | fixed | tiny | 4 | 4 | 2 | 16 | 8 | 32 | 2 | 16 |" in (tmp_path / "multiturn.md").read_text()


def test_reduced_variable_run(tmp_path):
  """Replies stop early and episodes end at different turns in both systems (jarl's checked against
  the Python twin of the env, turn by turn)."""
  rows = multiturn.main(["--presets", "tiny", "--episodes", "16", "--turns", "3", "--repeats", "2",
                         "--workloads", "variable", "--mean-len", "4"], results_dir=str(tmp_path))
  assert [(r["system"], r["workload"]) for r in rows] == [("jarl", "variable"), ("python-loop", "variable"),
                                                          ("jarl-compact", "variable")]
  for r in rows:
    assert 1.0 <= r["mean_turns"] < 2.9 and 2.0 < r["mean_reply"] < 6.0, r  # P(end) = 1 - (3/4)^4 a turn
    assert r["tokens_per_s"] > 0 and "decode_s" not in r
  jarl, _, compact = rows  # compaction decodes ended episodes' and stopped replies' rows no more
  assert 0 < compact["decode_row_fraction"] < 0.8 * jarl["decode_row_fraction"] <= 0.8
