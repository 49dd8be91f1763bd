"""The paired comparison against published values and hand computation (Tango's score
interval, exact McNemar), and the run key."""

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


def test_tangos_interval_matches_the_published_value():
    """Cavo et al. 2012 (Fagerland, Lydersen and Laake, Statistical Analysis of Contingency
    Tables, ch. 8; R package contingencytables): the paired table [[59, 6], [16, 80]],
    estimate -0.0621, Tango's asymptotic score 95% CI -0.1240 to -0.0054."""
    low, high = paired.score_interval(b=16, c=6, total=161, confidence=0.95)
    assert (round(low, 4), round(high, 4)) == (-0.1240, -0.0054)


def test_the_closed_form_constrained_estimate_is_the_likelihood_maximum():
    """The score statistic's variance uses the maximum-likelihood P(b-cell) under the null;
    here it is found again by brute force over the multinomial likelihood."""
    b, c, total = 14, 6, 270
    for delta in (-0.08, -0.04, -0.01, 0.02):
        grid = np.linspace(1e-6, 0.2, 200_001)  # q = P(baseline only right)
        q_c = grid + delta  # P(candidate only right) = q + delta
        q_rest = 1 - grid - q_c
        ok = (q_c > 0) & (q_rest > 0)
        loglik = b * np.log(grid[ok]) + c * np.log(q_c[ok]) + (total - b - c) * np.log(q_rest[ok])
        best = grid[ok][np.argmax(loglik)]
        assert paired._restricted_q(delta, b, c, total) == pytest.approx(best, abs=2e-6)
        variance = 2 * best + delta * (1 - delta)
        by_hand = (c - b - total * delta) / math.sqrt(total * variance)
        assert paired.score_statistic(delta, b, c, total) == pytest.approx(by_hand, rel=1e-4)


def test_an_identical_candidate_and_the_smallest_detectable_regression():
    from scipy.stats import norm

    z = norm.ppf(0.95)
    low, high = paired.score_interval(0, 0, 270, 0.90)
    assert low == pytest.approx(-(z**2) / (270 + z**2)) and high == pytest.approx(-low)
    smallest = paired.resolution(270, 0.05)
    assert smallest["accuracy_points"] == pytest.approx(z**2 / (270 + z**2))  # 0.0099
    assert smallest["images"] == 3
    same = paired.compare(*outcomes(262, 0, 0, 8), margin=0.04, alpha=0.05)
    assert same["verdict"] == "shown" and same["can_detect_margin"]
    # 20 images can tell nothing smaller than 0.119 from none: a 4-point margin is hopeless
    few = paired.compare(*outcomes(20, 0, 0, 0), margin=0.04, alpha=0.05)
    assert few["verdict"] == "not shown" and not few["can_detect_margin"]


def test_the_noninferiority_p_value_agrees_with_the_interval():
    b, c, total, alpha = 14, 6, 270, 0.05
    low, _ = paired.score_interval(b, c, total, 1 - 2 * alpha)
    # at a margin equal to the interval's lower end, the one-sided p is exactly alpha
    assert paired.p_noninferior(b, c, total, -low) == pytest.approx(alpha, rel=1e-6)
    assert paired.p_noninferior(b, c, total, -low + 0.001) < alpha
    assert paired.p_noninferior(b, c, total, -low - 0.001) > alpha


def test_the_exact_mcnemar_p_values_match_a_hand_computation():
    candidate, baseline = outcomes(250, 7, 2, 11)  # 270 images, 9 discordant
    found = paired.compare(candidate, baseline, margin=0.04, alpha=0.05)
    assert (found["baseline_only_right"], found["candidate_only_right"]) == (7, 2)
    assert found["difference"] == pytest.approx(-5 / 270)
    assert found["p_worse_mcnemar_exact"] == pytest.approx(46 / 512)  # P(b >= 7 | 9, 1/2)
    assert found["p_worse_mcnemar_exact"] == pytest.approx(binomial_tail(7, 9, 0.5))
    assert found["p_mcnemar_exact_two_sided"] == pytest.approx(2 * 46 / 512)


def test_churn_does_not_hide_a_regression_and_noise_is_not_one():
    # 14 lost, 6 gained: 8 net worse of 270, McNemar p(worse) 0.058 (the old gate blessed it)
    churn = paired.compare(*outcomes(240, 14, 6, 10), margin=0.04, alpha=0.05)
    assert churn["p_worse_mcnemar_exact"] > 0.05
    assert churn["verdict"] == "not shown" and churn["difference_interval"][0] < -0.04
    noise = paired.compare(*outcomes(246, 8, 7, 9), margin=0.04, alpha=0.05)
    assert noise["verdict"] == "shown"
    far = paired.compare(*outcomes(200, 60, 0, 10), margin=0.04, alpha=0.05)
    assert far["verdict"] == "inferior"  # the whole interval is below -0.04


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
