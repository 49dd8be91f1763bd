"""The paired gate (exact McNemar) against hand computation, and the run key."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from components.evaluate import paired


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k), X ~ Binomial(n, p), summed by hand."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def outcomes(both: int, only_baseline: int, only_candidate: int, neither: int):
    candidate = [1] * both + [0] * only_baseline + [1] * only_candidate + [0] * neither
    baseline = [1] * both + [1] * only_baseline + [0] * only_candidate + [0] * neither
    return np.array(candidate, bool), np.array(baseline, bool)


def test_the_exact_test_matches_a_hand_computation():
    candidate, baseline = outcomes(250, 7, 2, 11)  # 270 images, 9 discordant
    found = paired.compare(candidate, baseline, margin=0.0, alpha=0.05)
    assert (found["baseline_only_right"], found["candidate_only_right"]) == (7, 2)
    assert found["difference"] == pytest.approx(-5 / 270)
    # H0 "not worse": b ~ Binomial(9, 1/2); P(b >= 7) = (36 + 9 + 1) / 512
    assert found["p_inferior"] == pytest.approx(46 / 512)
    assert found["p_inferior"] == pytest.approx(binomial_tail(7, 9, 0.5))
    assert found["p_better"] == pytest.approx(1 - binomial_tail(8, 9, 0.5))  # P(b <= 7)
    assert found["verdict"] == "no difference"  # 5 images worse of 270: p 0.09, not < 0.05
    # with a margin of 1 point, theta = 1/2 + 0.01 * 270 / 18 = 0.65
    margin = paired.compare(candidate, baseline, margin=0.01, alpha=0.05)
    assert margin["p_inferior"] == pytest.approx(binomial_tail(7, 9, 0.65))
    # the interval: Clopper-Pearson of c / n, mapped to (2 theta - 1) n / N
    from scipy.stats import beta

    low = beta.ppf(0.025, 2, 8)
    high = beta.ppf(0.975, 3, 7)
    assert found["difference_interval"] == pytest.approx(
        [(2 * low - 1) * 9 / 270, (2 * high - 1) * 9 / 270]
    )


def test_one_image_worse_is_chance_and_a_real_regression_is_not():
    one = paired.compare(*outcomes(260, 1, 0, 9), margin=0.0, alpha=0.05)
    assert one["verdict"] == "no difference" and one["p_inferior"] == pytest.approx(0.5)
    worse = paired.compare(*outcomes(240, 12, 1, 17), margin=0.0, alpha=0.05)
    assert worse["verdict"] == "inferior" and worse["p_inferior"] < 0.01
    # inside a 5-point margin, the same 11 images (4.1 points) are not a refusal
    lenient = paired.compare(*outcomes(240, 12, 1, 17), margin=0.05, alpha=0.05)
    assert lenient["verdict"] != "inferior"
    better = paired.compare(*outcomes(240, 1, 12, 17), margin=0.0, alpha=0.05)
    assert better["verdict"] == "better"
    same = paired.compare(*outcomes(270, 0, 0, 0), margin=0.0, alpha=0.05)
    assert same["verdict"] == "no difference" and same["difference_interval"] == [0.0, 0.0]


def test_what_a_small_test_split_could_detect():
    # 0.5 ** 5 = 0.031 < 0.05: five images worse, none better, is the least it can see
    assert paired.detectable(270, 0.0, 0.05) == {"images": 5, "accuracy_points": 5 / 270}
    assert paired.detectable(3, 0.0, 0.05) == {"images": None, "accuracy_points": None}


def test_the_run_key_ignores_spelled_out_defaults_and_sees_changes(tmp_path):
    from pipelines import runkey

    plain = runkey.provenance("fp-1", {})
    spelled = runkey.provenance("fp-1", {"train": {"epochs": 40}, "prepare": {"seed": 42}})
    assert plain["key"] == spelled["key"]
    assert runkey.provenance("fp-2", {})["key"] != plain["key"]
    assert runkey.provenance("fp-1", {"train": {"seed": 7}})["key"] != plain["key"]

    registry = tmp_path / "registry" / "visionpipe-classifier"
    configs = {"push": {"registry": str(tmp_path / "registry")}}
    assert "nothing published" in runkey.decide("fp-1", configs)["message"]
    version = registry / "v1"
    version.mkdir(parents=True)
    (version / "manifest.json").write_text(json.dumps({"version": "v1", "files": []}))
    (registry / "latest.json").write_text(json.dumps({"version": "v1", "uri": str(version)}))
    assert "records no provenance" in runkey.decide("fp-1", configs)["message"]
    (version / "provenance.json").write_text(json.dumps(runkey.provenance("fp-1", configs)))
    same = runkey.decide("fp-1", configs)
    assert same["changed"] is False and "no change since version v1" in same["message"]
    forced = {**configs, "validate": {"skip_unchanged": False}}
    assert runkey.decide("fp-1", forced)["changed"] is True
    moved = runkey.decide("fp-2", {**configs, "train": {"epochs": 3}})
    assert moved["changed"] is True
    assert (
        "fingerprint fp-1 -> fp-2" in moved["message"]
        and "train config (epochs)" in moved["message"]
    )
