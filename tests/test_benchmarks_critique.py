"""benchmarks/critique.py's variants: the SmolLM2 arms are configs/real_lm.py's critique recipe, and the
single-attempt control samples as many token slots as the critique (more iterations)."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import critique  # noqa: E402


@pytest.mark.parametrize("prefix, slots, act", [("", 6 + 2 + 1 + 6, 6), ("countdown_", 12 + 2 + 1 + 12, 12),
                                               ("smollm2_", 16 + 24 + 1 + 16, 16)])
def test_single_attempt_control_samples_as_many_slots(tmp_path, prefix, slots, act):
  credit = critique.config_for(f"{prefix}credit", 0, tmp_path / "credit")
  single = critique.config_for(f"{prefix}single", 0, tmp_path / "single")
  assert credit.agent.critique_budget > 0 and credit.algo.segment_credit
  assert single.agent.critique_budget == 0 and not single.algo.segment_credit
  assert (credit.agent.act_budget, single.agent.act_budget) == (act, act)
  assert single.train.steps == round(credit.train.steps * slots / act)


def test_smollm2_arms_run_the_pretrained_model_on_chain_sum(tmp_path):
  config = critique.config_for("smollm2_credit", 2, tmp_path / "run")
  assert config.model.hf_path == "package:smollm2-135m-instruct" and config.env.name == "rg:chain_sum"
  assert config.agent.chat and config.agent.verdict_request and (config.seed, config.workdir) == (2, str(tmp_path / "run"))
  assert config.sft.steps == 0  # RL from the pretrained weights, no warm start
