"""Evaluation: exact metric values on constructed predictions, and the stage on a real model."""

import csv
import json

import numpy as np
import pytest

from components.evaluate.config import EvaluateConfig
from components.evaluate.gate import bless
from components.evaluate.metrics import (
    classification_metrics,
    confusion,
    expected_calibration_error,
    most_confused_pairs,
)

CLASSES = ["a", "b", "c"]


def one_hot_probs(predicted, confidence=0.8, k=3):
    probs = np.full((len(predicted), k), (1 - confidence) / (k - 1))
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs


def test_model_that_confuses_b_with_c_puts_that_pair_on_top():
    labels = np.array([0] * 10 + [1] * 10 + [2] * 10)
    predicted = labels.copy()
    predicted[10:16] = 2  # six b's called c
    predicted[0] = 1  # one a called b
    matrix = confusion(labels, predicted, 3)
    pairs = most_confused_pairs(matrix, CLASSES)
    assert pairs[0] == {"true": "b", "predicted": "c", "count": 6}
    assert pairs[1] == {"true": "a", "predicted": "b", "count": 1}
    metrics = classification_metrics(one_hot_probs(predicted), labels, CLASSES, 2, 10)
    assert metrics["accuracy"] == pytest.approx(23 / 30)
    assert metrics["per_class"]["b"]["recall"] == pytest.approx(4 / 10)
    assert metrics["worst_class_recall"] == pytest.approx(0.4)


def test_ece_of_a_constant_confidence_model():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    predicted = np.array([0, 0, 0, 0, 1, 1, 1, 2, 0, 2])  # 8 of 10 right
    ece, table = expected_calibration_error(one_hot_probs(predicted, 0.9), labels, 10)
    assert ece == pytest.approx(abs(0.8 - 0.9)) and len(table) == 1


def test_gate_states_every_refusal_reason():
    metrics = {"accuracy": 0.8, "macro_f1": 0.7, "worst_class_recall": 0.2}
    blessing = bless(
        metrics, EvaluateConfig(min_accuracy=0.9, min_macro_f1=0.75, min_class_recall=0.1)
    )
    assert blessing["blessed"] is False
    assert blessing["reasons"] == [
        "accuracy 0.8000 is below the threshold 0.9",
        "macro_f1 0.7000 is below the threshold 0.75",
    ]
    assert bless(metrics, EvaluateConfig(min_accuracy=0.8))["blessed"] is True


@pytest.mark.slow
def test_evaluate_stage_on_a_trained_model(tmp_path, digits_dataset, trained_model):
    from components.evaluate.core import run

    out = tmp_path / "evaluation"
    result = run(EvaluateConfig(min_accuracy=0.9), digits_dataset, trained_model, out)
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "accuracy",
        "top_3_accuracy",
        "macro_f1",
        "per_class",
        "ece",
        "log_loss",
        "roc_auc_ovr",
    ):
        assert key in metrics
    assert metrics["count"] == 270 and metrics["accuracy"] >= 0.9
    with open(out / "confusion_matrix.csv") as handle:
        rows = list(csv.reader(handle))
    assert len(rows) == 11 and sum(int(v) for row in rows[1:] for v in row[1:]) == 270
    with open(out / "errors.csv") as handle:
        errors = list(csv.DictReader(handle))
    assert len(errors) == round(270 * (1 - metrics["accuracy"]))
    assert all(e["true"] != e["predicted"] for e in errors)
    blessing = json.loads((out / "blessing.json").read_text())
    assert blessing["blessed"] is True and result["blessing"] == blessing
    html = (out / "report.html").read_text()
    for section in ("Gate", "Headline metrics", "Per class", "Confusion matrix", "Calibration"):
        assert f">{section}<" in html
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
