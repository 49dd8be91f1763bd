"""The gate against the deployed version with the scheduled settings (k8s/base/run.yaml's
evaluate section), on prediction vectors through the gate's public function
(`gate.decide`): the bars of issue 31. No model is trained: the gate decides on which
images each model gets right, so planted predictions test exactly what it decides on
(evaluate's run() measures real models through the same functions; test_gate_deployed.py
runs that end to end)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from components.evaluate.config import EvaluateConfig
from components.evaluate.gate import bless, decide

ROOT = Path(__file__).resolve().parent.parent
CLASSES = [str(k) for k in range(10)]
LABELS = np.repeat(np.arange(10), 27)  # 270 test images, 27 per class: the digits' split
URIS = [f"digits/{k}/{i:03d}.png" for k in range(10) for i in range(27)]


def scheduled() -> EvaluateConfig:
    """k8s/base/run.yaml's evaluate settings (where the registry is named is another
    setting's business: the gate's own keys are what is read here)."""
    section = yaml.safe_load((ROOT / "k8s/base/run.yaml").read_text())["evaluate"]
    section.pop("baseline_model", None)
    return EvaluateConfig.from_dict(section)


def deployed() -> np.ndarray:
    """The deployed model: 8 of the 270 wrong (97%), spread over classes 0-7."""
    predicted = LABELS.copy()
    for k in range(8):
        predicted[k * 27 + 26] = (k + 1) % 10
    return predicted


def lose(predicted, images, into=None):
    """`images` (indices the model gets right) read as another class."""
    out = predicted.copy()
    for i in images:
        assert out[i] == LABELS[i]
        out[i] = (LABELS[i] + 1) % 10 if into is None else into
    return out


def gain(predicted, images):
    out = predicted.copy()
    out[list(images)] = LABELS[list(images)]
    return out


def spread(count: int, offset: int = 0) -> list[int]:
    """`count` right images spread over the classes (at most 3 per class)."""
    return [(i % 10) * 27 + offset + i // 10 for i in range(count)]


def judge(candidate, config=None):
    return decide(LABELS, candidate, deployed(), URIS, CLASSES, config or scheduled())


def test_the_scheduled_settings_bless_the_deployed_model_and_one_image_worse():
    assert judge(deployed())["blessed"] is True
    one = judge(lose(deployed(), [0]))
    assert one["blessed"] is True, one["reasons"]
    # retraining noise: 7 images lost, 7 others gained
    noise = gain(lose(deployed(), spread(7)), [26, 53, 80, 107, 134, 161, 188])
    assert judge(noise)["blessed"] is True


def test_eight_images_worse_is_refused_with_its_numbers():
    blessing = judge(lose(deployed(), spread(8)))
    assert blessing["blessed"] is False
    reason = blessing["reasons"][0]
    assert reason.startswith(
        "accuracy 0.9407 is not shown to be within the deployed model's 0.9704"
    )
    assert "8 images only the baseline gets right, 0 only the candidate, of 270" in reason
    check = next(c for c in blessing["checks"] if c["metric"].startswith("accuracy vs"))
    low, high = check["difference_interval"]
    assert low < -0.04 < high < 0  # significantly worse, and not shown within the margin
    assert check["p_noninferior"] > 0.05 and check["p_worse_mcnemar_exact"] < 0.01
    paired = blessing["baseline"]["paired"]
    assert paired["resolution"]["images"] == 3 and paired["can_detect_margin"] is True


def test_eight_images_net_worse_amid_churn_is_refused():
    """14 lost and 6 gained: the exact McNemar test alone (p 0.058) blessed this."""
    churn = gain(lose(deployed(), spread(14)), [26, 53, 80, 107, 134, 161])
    blessing = judge(churn)
    paired = blessing["baseline"]["paired"]
    assert (paired["baseline_only_right"], paired["candidate_only_right"]) == (14, 6)
    assert paired["p_worse_mcnemar_exact"] > 0.05
    assert blessing["blessed"] is False
    assert "14 images only the baseline gets right, 6 only the candidate" in blessing["reasons"][0]


def test_a_class_that_loses_six_of_its_images_is_named_with_them():
    lost = list(range(3 * 27, 3 * 27 + 6))  # six of class 3's 27, all read as '5'
    blessing = judge(lose(deployed(), lost, into=5))
    assert blessing["blessed"] is False
    reason = next(r for r in blessing["reasons"] if r.startswith("class '3'"))
    assert "recall 0.9630 -> 0.7407 on its 27 test images" in reason  # 26 -> 20 of 27
    assert all(URIS[i] in reason for i in lost) and "6 lost" in reason
    row = next(r for r in blessing["baseline"]["per_class"] if r["class"] == "3")
    assert row["lost"] == [URIS[i] for i in lost] and row["refused"] is True
    # the other classes are untouched and pass
    assert [r["class"] for r in blessing["baseline"]["per_class"] if r["refused"]] == ["3"]


def test_a_class_drop_the_images_cannot_tell_from_chance_is_not_refused():
    """Three of 27 lost is 11 points of recall: within max_class_regression 0.15; and 5 of
    one class lost while 2 others gained is not significant (exact McNemar p 0.23)."""
    small = judge(lose(deployed(), [81, 82, 83]))
    assert not [r for r in small["reasons"] if r.startswith("class ")]
    churned = gain(lose(deployed(), [0, 1, 2, 3, 4]), [26])
    churned = lose(churned, [27])  # keeps overall accuracy inside the margin
    row = next(r for r in judge(churned)["baseline"]["per_class"] if r["class"] == "0")
    assert row["drop"] > 0.1 and row["refused"] is False


def test_macro_f1_is_compared_with_the_deployed_model():
    # every image of class 9 read as '8': accuracy 10 points down, macro F1 far more
    blessing = judge(lose(deployed(), range(9 * 27, 270), into=8))
    macro = blessing["baseline"]["macro_f1"]
    assert macro["drop"] > 0.05
    assert any(r.startswith("macro F1 ") for r in blessing["reasons"])


def test_too_few_known_images_is_said_and_refused_when_configured():
    found = decide(LABELS[:40], LABELS[:40], LABELS[:40], URIS[:40], CLASSES, scheduled())
    baseline = found["baseline"]
    baseline["too_few_known"] = {"known": 40, "min_known_images": 100, "policy": "refuse"}
    metrics = {"accuracy": 1.0, "macro_f1": 1.0, "worst_class_recall": 1.0}
    refused = bless(metrics, scheduled().replace(few_known_images="refuse"), baseline)
    assert refused["blessed"] is False
    assert "only 40 of today's test images" in refused["reasons"][0]
    # 40 images can tell no regression below 0.064 from none: loud, even for itself
    assert "cannot detect a regression of max_regression 0.04" in refused["reasons"][1]


def test_a_margin_of_zero_can_never_be_shown_and_says_why():
    config = scheduled().replace(max_regression=0.0)
    blessing = judge(deployed(), config)
    assert blessing["blessed"] is False
    assert "cannot detect a regression of max_regression 0.0" in blessing["reasons"][0]


@pytest.mark.parametrize("key", ["max_class_regression", "max_macro_f1_regression"])
def test_the_new_settings_are_checked(key):
    from components.infra.errors import UserError

    with pytest.raises(UserError, match=key):
        EvaluateConfig.from_dict({key: 1.5})
    with pytest.raises(UserError, match="few_known_images"):
        EvaluateConfig.from_dict({"few_known_images": "maybe"})
