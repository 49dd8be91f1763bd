"""The paired comparison of two models on the same test images (exact McNemar).

On the same N images, only the discordant pairs carry information about which
model is better: `b` images the baseline gets right and the candidate wrong,
`c` the other way round. The accuracy difference (candidate - baseline) is
(c - b) / N. Given n = b + c, `b` is binomial(n, theta); the candidate is
exactly as good as the baseline when theta = 1/2, and worse by the margin
delta (accuracy points) when theta = 1/2 + delta * N / (2 n).

- inferior: the candidate is worse than the baseline by more than the margin,
  significantly: P(X >= b | n, theta_delta) < alpha (one-sided exact test of
  H0 "worse by at most delta"). One image worse is never significant alone.
- better: P(X <= b | n, 1/2) < alpha (one-sided exact test of H0 "not better").
- otherwise: no significant difference.

The confidence interval of the difference is the exact (Clopper-Pearson)
interval of c / n, mapped to (2 theta_c - 1) * n / N. `detectable` says how
large a regression this many images can show at all: the fewest images worse
(with no image better) that the test calls significant.

SciPy's `binomtest` does the arithmetic.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _theta(margin: float, total: int, discordant: int) -> float:
    """P(baseline right | discordant) at the margin's boundary (capped at 1)."""
    if discordant == 0:
        return 0.5
    return min(1.0, 0.5 + margin * total / (2 * discordant))


def p_inferior(b: int, c: int, total: int, margin: float) -> float:
    """p-value of "the candidate is worse than the baseline by more than `margin`"."""
    from scipy.stats import binomtest

    n = b + c
    if n == 0:
        return 1.0
    theta = _theta(margin, total, n)
    if theta >= 1.0:
        return 1.0  # even b == n is within the margin
    return float(binomtest(b, n, theta, alternative="greater").pvalue)


def p_better(b: int, c: int) -> float:
    """p-value of "the candidate is better than the baseline"."""
    from scipy.stats import binomtest

    n = b + c
    if n == 0:
        return 1.0
    return float(binomtest(b, n, 0.5, alternative="less").pvalue)


def detectable(total: int, margin: float, alpha: float) -> dict[str, Any]:
    """The smallest regression this test could call significant on `total` images."""
    for k in range(1, total + 1):
        if p_inferior(k, 0, total, margin) < alpha:
            return {"images": k, "accuracy_points": k / total}
    return {"images": None, "accuracy_points": None}


def compare(
    candidate_right: np.ndarray, baseline_right: np.ndarray, margin: float, alpha: float
) -> dict[str, Any]:
    """Both models' correctness on the same images -> the paired verdict and its numbers."""
    from scipy.stats import binomtest

    candidate_right = np.asarray(candidate_right, dtype=bool)
    baseline_right = np.asarray(baseline_right, dtype=bool)
    total = len(candidate_right)
    b = int((baseline_right & ~candidate_right).sum())
    c = int((candidate_right & ~baseline_right).sum())
    n = b + c
    inferior, better = p_inferior(b, c, total, margin), p_better(b, c)
    if n:
        interval = binomtest(c, n).proportion_ci(confidence_level=1 - alpha, method="exact")
        low, high = ((2 * t - 1) * n / total for t in (interval.low, interval.high))
    else:
        low = high = 0.0
    verdict = "inferior" if inferior < alpha else "better" if better < alpha else "no difference"
    return {
        "test": "exact McNemar (binomial on the discordant pairs)",
        "images": total,
        "candidate_accuracy": float(candidate_right.mean()) if total else 0.0,
        "baseline_accuracy": float(baseline_right.mean()) if total else 0.0,
        "difference": (c - b) / total if total else 0.0,
        "baseline_only_right": b,
        "candidate_only_right": c,
        "margin": margin,
        "alpha": alpha,
        "p_inferior": inferior,
        "p_better": better,
        "confidence": 1 - alpha,
        "difference_interval": [float(low), float(high)],
        "verdict": verdict,
        "detectable": detectable(total, margin, alpha) if total else None,
    }


def describe(result: dict[str, Any]) -> str:
    """One line: the counts, the p-value and the interval."""
    low, high = result["difference_interval"]
    return (
        f"{result['baseline_only_right']} images only the baseline gets right, "
        f"{result['candidate_only_right']} only the candidate; difference "
        f"{result['difference']:+.4f} ({result['confidence']:.0%} interval {low:+.4f} to "
        f"{high:+.4f}), p(worse by more than {result['margin']}) = {result['p_inferior']:.3g}, "
        f"p(better) = {result['p_better']:.3g}"
    )
