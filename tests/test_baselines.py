"""The baselines evaluate measures (majority class, logistic regression on the pixels) and
the gate's margin over the learned one."""

import json

import pytest

from components.evaluate.config import EvaluateConfig
from components.evaluate.gate import bless


@pytest.mark.slow
def test_the_evaluation_holds_both_baselines_and_the_model_beats_them(evaluation):
    metrics = json.loads((evaluation / "metrics.json").read_text())
    found = metrics["baselines"]
    assert 0.05 < found["majority"]["accuracy"] < 0.15  # ten balanced digit classes
    learned = found["logistic_regression"]
    assert 0.6 < learned["accuracy"] < metrics["accuracy"]  # pixels alone get far, not as far
    assert found["gain_over_logistic"] == pytest.approx(
        metrics["accuracy"] - learned["accuracy"], abs=1e-5
    )
    assert "Baselines" in (evaluation / "report.md").read_text()


def metrics_with(accuracy: float, learned: float) -> dict:
    return {
        "accuracy": accuracy,
        "macro_f1": accuracy,
        "worst_class_recall": accuracy,
        "baselines": {
            "majority": {"class": "a", "accuracy": 0.5, "macro_f1": 0.33},
            "logistic_regression": {
                "accuracy": learned,
                "macro_f1": learned,
                "features": "16x16 RGB pixels, standardised",
            },  # fmt: skip
        },
    }


def test_a_model_that_cannot_beat_a_linear_classifier_is_not_blessed():
    config = EvaluateConfig(min_accuracy=0.5, min_gain_over_baseline=0.02)
    refused = bless(metrics_with(0.91, 0.90), config)
    assert refused["blessed"] is False
    (reason,) = refused["reasons"]
    assert "logistic-regression baseline" in reason and "+0.0100" in reason
    assert bless(metrics_with(0.95, 0.90), config)["blessed"] is True
    off = EvaluateConfig(min_accuracy=0.5)  # 0: the margin is not asked for
    assert bless(metrics_with(0.85, 0.90), off)["blessed"] is True
