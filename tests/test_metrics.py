"""The end-of-run plot: one panel per distinct series, per-token means only where tokens were
trained, smoothing, the run's name as the title."""

import numpy as np

from jarl import metrics


def records(n=30):
  rng = np.random.default_rng(0)
  out = [{"step": s, "sft/loss": 3.0 + s} for s in range(-4, 1)]
  out.append({"step": 0, "eval/success": 0.25})
  for s in range(1, n + 1):
    success = float(rng.integers(0, 2))
    out.append({"step": s, "episode/return": success, "episode/success": success, "policy/entropy": 1.0 / s,
                "policy/trained_tokens": 0.0 if s % 5 == 0 else 100.0})  # every 5th step: all groups filtered
  out[-1]["eval/success"] = 0.5
  return out


def test_identical_series_share_a_panel_and_untrained_steps_have_no_entropy():
  panels = metrics.panels(records())
  assert [names for names, _ in panels] == [["sft/loss"], ["episode/return", "episode/success"], ["eval/success"],
                                            ["policy/entropy"]]
  entropy_steps = [step for step, _ in panels[3][1]]
  assert len(entropy_steps) == 24 and not any(step % 5 == 0 for step in entropy_steps)
  assert panels[2][1] == [(0, 0.25), (30, 0.5)]
  different = [dict(r, **{"episode/return": 2 * r["episode/return"]}) for r in records() if "episode/return" in r]
  assert [names for names, _ in metrics.panels(different)][:2] == [["episode/return"], ["episode/success"]]


def test_figure_titles_and_smoothing(tmp_path, monkeypatch):
  fig = metrics.figure(records(), title="quickstart")
  assert fig.get_suptitle() == "quickstart"
  assert [ax.get_title() for ax in fig.axes] == ["sft/loss", "episode/return = episode/success", "eval/success",
                                                 "policy/entropy"]
  assert [len(ax.lines) for ax in fig.axes] == [1, 2, 1, 2]  # 24+ points: raw (faint) and smoothed
  np.testing.assert_allclose(metrics.smooth([0, 3, 0, 3, 0], 3), [1.5, 1, 2, 1, 1.5])
  (tmp_path / "run_a").mkdir()
  figure, titles = metrics.figure, []
  monkeypatch.setattr(metrics, "figure", lambda records, keys, title: titles.append(title) or figure(records, keys,
                                                                                                    title))
  assert metrics.plot(records(), tmp_path / "run_a" / "curves.png").exists()
  assert titles == ["run_a"]  # the run's name: its directory's
