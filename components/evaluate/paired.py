"""The paired comparison of two models on the same test images: non-inferiority.

On the same N images, only the discordant pairs carry information about which
model is better: `b` images the baseline gets right and the candidate wrong,
`c` the other way round. The accuracy difference (candidate - baseline) is
d = (c - b) / N.

The gate asks the non-inferiority question: does the comparison *show* that
the candidate is not worse than the baseline by more than the margin? H0 "d <=
-margin" is rejected at level alpha when the lower end of the (1 - 2 alpha)
two-sided interval of d lies above -margin (the one-sided (1 - alpha) bound).
Churn cannot hide a regression: 14 images lost and 6 gained is 8 net worse with
a wide interval, and a wide interval shows nothing.

The interval is Tango's asymptotic score interval for the difference of paired
proportions (Tango 1998, Stat Med 17:891-908; recommended by Fagerland, Lydersen
and Laake 2013, Stat Med 33:2850 for paired differences): the score statistic

    T(delta) = (c - b - N delta) / sqrt(N (2 q + delta (1 - delta)))

with q the maximum-likelihood P(baseline only right) under d = delta, in closed
form; the interval is {delta : |T(delta)| <= z}. It is not degenerate when b = c =
0 (an identical candidate): its lower end is then -z^2 / (N + z^2), the
smallest margin this many images can certify at all (`resolution`). SciPy
solves the roots (`brentq`) and gives the normal quantiles.

The exact McNemar p-values (SciPy's `binomtest` on the discordant pairs) are kept
beside it: p(worse), one-sided "the candidate is worse at all", and the
two-sided p.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _restricted_q(delta: float, b: int, c: int, total: int) -> float:
    """MLE of P(baseline only right) given candidate - baseline accuracy = delta."""
    a = 2.0 * total
    bq = -c - b + (2.0 * total - c + b) * delta
    cq = -b * delta * (1.0 - delta)
    return (math.sqrt(max(bq * bq - 4.0 * a * cq, 0.0)) - bq) / (2.0 * a)


def score_statistic(delta: float, b: int, c: int, total: int) -> float:
    """Tango's score statistic of H "candidate - baseline accuracy = delta"; decreasing
    in delta, positive when the observed difference is above delta."""
    numerator = c - b - total * delta
    variance = total * (2.0 * _restricted_q(delta, b, c, total) + delta * (1.0 - delta))
    if variance <= 1e-15:
        return 0.0 if numerator == 0 else math.copysign(math.inf, numerator)
    return numerator / math.sqrt(variance)


def score_interval(b: int, c: int, total: int, confidence: float) -> tuple[float, float]:
    """Tango's score interval of candidate - baseline accuracy at `confidence` (two-sided)."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    if total <= 0:
        return -1.0, 1.0
    z = float(norm.ppf(0.5 + confidence / 2))
    estimate, edge = (c - b) / total, 1.0 - 1e-12
    low = -1.0
    if estimate > -1.0:
        low = brentq(lambda d: score_statistic(d, b, c, total) - z, -edge, estimate, xtol=1e-12)
    high = 1.0
    if estimate < 1.0:
        high = brentq(lambda d: score_statistic(d, b, c, total) + z, estimate, edge, xtol=1e-12)
    return float(low), float(high)


def p_noninferior(b: int, c: int, total: int, margin: float) -> float:
    """One-sided p-value of H0 "the candidate is worse by `margin` or more" (score test);
    below alpha, the candidate is shown non-inferior."""
    from scipy.stats import norm

    if total <= 0:
        return 1.0
    return float(norm.sf(score_statistic(-min(margin, 1.0 - 1e-12), b, c, total)))


def p_worse(b: int, c: int) -> float:
    """Exact McNemar, one-sided: p-value of "the candidate is worse at all"."""
    from scipy.stats import binomtest

    return float(binomtest(b, b + c, 0.5, alternative="greater").pvalue) if b + c else 1.0


def p_mcnemar(b: int, c: int) -> float:
    """Exact McNemar, two-sided."""
    from scipy.stats import binomtest

    return float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0


def resolution(total: int, alpha: float) -> dict[str, Any]:
    """The smallest regression these images can tell from none: the margin below which even
    a candidate that agrees with the baseline on every image cannot be shown non-inferior
    (the one-sided bound of b = c = 0, z^2 / (N + z^2)), in accuracy points and images."""
    from scipy.stats import norm

    if total <= 0:
        return {"accuracy_points": 1.0, "images": None}
    z = float(norm.ppf(1 - alpha))
    points = z * z / (total + z * z)
    return {"accuracy_points": points, "images": math.ceil(points * total - 1e-9)}


def counts(candidate_right, baseline_right) -> tuple[int, int, int]:
    """(b, c, N): images only the baseline gets right, only the candidate, in all."""
    candidate_right = np.asarray(candidate_right, dtype=bool)
    baseline_right = np.asarray(baseline_right, dtype=bool)
    b = int((baseline_right & ~candidate_right).sum())
    c = int((candidate_right & ~baseline_right).sum())
    return b, c, len(candidate_right)


def compare(
    candidate_right: np.ndarray, baseline_right: np.ndarray, margin: float, alpha: float
) -> dict[str, Any]:
    """Both models' correctness on the same images -> the non-inferiority verdict and its
    numbers: `shown` (non-inferior), `inferior` (the whole interval is below -margin),
    or `not shown` (the interval reaches below -margin: the images cannot show it)."""
    b, c, total = counts(candidate_right, baseline_right)
    low, high = score_interval(b, c, total, 1 - 2 * alpha)
    p_ni = p_noninferior(b, c, total, margin)
    verdict = "shown" if p_ni < alpha else "inferior" if high < -margin else "not shown"
    smallest = resolution(total, alpha)
    return {
        "test": "non-inferiority, Tango's score interval for paired proportions",
        "images": total,
        "candidate_accuracy": float(np.mean(candidate_right)) if total else 0.0,
        "baseline_accuracy": float(np.mean(baseline_right)) if total else 0.0,
        "difference": (c - b) / total if total else 0.0,
        "baseline_only_right": b,
        "candidate_only_right": c,
        "margin": margin,
        "alpha": alpha,
        "p_noninferior": p_ni,
        "p_worse_mcnemar_exact": p_worse(b, c),
        "p_mcnemar_exact_two_sided": p_mcnemar(b, c),
        "confidence": 1 - 2 * alpha,  # two-sided; its lower end is the one-sided 1 - alpha bound
        "difference_interval": [low, high],
        "verdict": verdict,
        "resolution": smallest,
        "can_detect_margin": smallest["accuracy_points"] < margin,
    }


def describe(result: dict[str, Any]) -> str:
    """One line: the counts, the interval and the p-values."""
    low, high = result["difference_interval"]
    return (
        f"{result['baseline_only_right']} images only the baseline gets right, "
        f"{result['candidate_only_right']} only the candidate, of {result['images']}; "
        f"difference {result['difference']:+.4f} ({result['confidence']:.0%} score interval "
        f"{low:+.4f} to {high:+.4f}, margin -{result['margin']}); "
        f"p(worse by {result['margin']} or more) = {result['p_noninferior']:.3g}, "
        f"exact McNemar p(worse) = {result['p_worse_mcnemar_exact']:.3g}"
    )
