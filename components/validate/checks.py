"""The checks that need no model: schema, class counts and drift, image statistics, labels.

Each check returns one `Check`: its value, its threshold, its verdict (pass, anomaly,
skipped with the reason) and one line per anomaly naming the classes or files. A check
that could not decide (too few new images to test, nothing to compare with) is
skipped, never passed; one with no new images at all has nothing to find and passes,
saying so (`nothing_new`).

- schema: classes added or removed since the reference.
- class_counts: a class that lost more than `max_class_drop` of its images.
- class_drift: the L-infinity distance between the class shares of the new images and
  of the reference (TFDV's measure), flagged only when a chi-square goodness-of-fit
  test (SciPy) also says it is not chance at `alpha`.
- image_stats: width, height, aspect, greyscale share, brightness, contrast and
  sharpness of the new images against the reference's images (those still in today's
  data), as the Jensen-Shannon distance of their histograms (SciPy), over bins cut at
  the reference's deciles.
- changed_labels: images the reference knows (by sha256) that now carry another label.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from components.validate.config import ValidateConfig


@dataclass
class Check:
    check: str
    value: Any
    threshold: Any
    verdict: str = "pass"  # pass | anomaly | skipped
    anomalies: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    reason: str = ""  # why it was skipped
    accepted: bool = False  # an anomaly the config accepts as a deliberate change

    def flag(self, line: str, *classes: str) -> None:
        self.verdict = "anomaly"
        self.anomalies.append(line)
        self.classes.extend(c for c in classes if c not in self.classes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def label_counts(labels, classes: list[str]) -> dict[str, int]:
    """Images per class: every class in `classes` (0 when absent), then any other label."""
    from collections import Counter

    found = Counter(labels)
    return {**{name: found.get(name, 0) for name in classes}, **found}


def skipped(name: str, threshold: Any, reason: str, **detail: Any) -> Check:
    return Check(name, None, threshold, "skipped", reason=reason, detail=detail)


NOTHING_NEW = "no new images: nothing to check"


def nothing_new(name: str, threshold: Any, value: Any = 0) -> Check:
    """A check of the new images on a night with none: nothing can be wrong with them."""
    return Check(name, value, threshold, detail={"new_images": 0, "note": NOTHING_NEW})


def schema(now: list[str], before: list[str], label: str) -> Check:
    added = [c for c in now if c not in before]
    removed = [c for c in before if c not in now]
    found = Check("schema", {"added": added, "removed": removed}, "no class added or removed")
    if added:
        found.flag(f"schema: classes added since {label}: {', '.join(added)}", *added)
    if removed:
        found.flag(f"schema: classes removed since {label}: {', '.join(removed)}", *removed)
    return found


def class_counts(
    now: dict[str, int], before: dict[str, int], config: ValidateConfig, label: str
) -> Check:
    found = Check("class_counts", {}, config.max_class_drop)
    for name, was in before.items():
        count = now.get(name, 0)
        drop = 1 - count / was if was else 0.0
        found.value[name] = {"now": count, "reference": was, "drop": round(drop, 4)}
        if drop > config.max_class_drop:
            found.flag(
                f"class_counts: class {name!r} has {count} images, {label} had {was} "
                f"(a drop of {drop:.0%}, threshold {config.max_class_drop:.0%})",
                name,
            )
    return found


def class_drift(
    new_labels: list[str], before: dict[str, int], config: ValidateConfig, label: str
) -> Check:
    """The new images' class shares against the reference's, over the classes both have
    (an added or a removed class is the schema check's)."""
    from scipy.stats import chisquare

    names = list(before)
    tally = label_counts(new_labels, names)
    counts = np.array([tally[n] for n in names], dtype=float)
    total = counts.sum()
    if total == 0:
        return nothing_new("class_drift", config.max_class_linf)
    if total < config.min_new_images:
        return skipped(
            "class_drift",
            config.max_class_linf,
            f"{int(total)} new images of known classes, fewer than "
            f"validate.min_new_images={config.min_new_images}",
        )
    expected = np.array([before[n] for n in names], dtype=float)
    expected /= expected.sum()
    shares = counts / total
    gaps = np.abs(shares - expected)
    worst = int(gaps.argmax())
    p = float(chisquare(counts, expected * total).pvalue) if len(names) > 1 else 1.0
    found = Check("class_drift", round(float(gaps.max()), 4), config.max_class_linf)
    found.detail = {
        "p_value": p,
        "new_images": int(total),
        "shares": {n: round(float(s), 4) for n, s in zip(names, shares, strict=True)},
        "reference_shares": {n: round(float(s), 4) for n, s in zip(names, expected, strict=True)},
    }
    if gaps.max() > config.max_class_linf and p < config.alpha:
        found.flag(
            f"class_drift: the {int(total)} new images are {shares[worst]:.0%} class "
            f"{names[worst]!r} against {expected[worst]:.0%} in {label} (L-infinity "
            f"{gaps.max():.3f} > {config.max_class_linf}, chi-square p {p:.2g})",
            names[worst],
        )
    return found


def changed_labels(
    current: list[dict[str, str]], known: dict[str, Any], config: ValidateConfig, label: str
) -> Check:
    """`current`: today's manifest rows (uri, label, sha256, split); `known`: sha256 -> the
    reference's row (split, label, uri)."""
    moved = [
        {
            "uri": row["uri"],
            "sha256": row["sha256"],
            "was": known[row["sha256"]].label,
            "now": row["label"],
            "split": row["split"],
            "reference_split": known[row["sha256"]].split,
        }
        for row in current
        if row.get("sha256") in known and known[row["sha256"]].label != row["label"]
    ]
    found = Check("changed_labels", len(moved), config.max_changed_labels, files=moved)
    if len(moved) > config.max_changed_labels:
        pairs: dict[tuple[str, str], int] = {}
        for item in moved:
            pairs[(item["was"], item["now"])] = pairs.get((item["was"], item["now"]), 0) + 1
        shown = ", ".join(f"{n} from {a!r} to {b!r}" for (a, b), n in sorted(pairs.items()))
        found.flag(
            f"changed_labels: {len(moved)} images {label} knows now carry another label "
            f"({shown}; threshold {config.max_changed_labels}), e.g. {moved[0]['uri']}",
            *sorted({c for pair in pairs for c in pair}),
        )
    return found


STATS = ("width", "height", "aspect", "greyscale", "brightness", "contrast", "sharpness")


def image_features(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per image: greyscale (all channels equal), brightness and contrast (mean and std of
    the luminance, 0..255) and sharpness (variance of its Laplacian)."""
    if len(images) == 0:
        return {name: np.zeros(0) for name in ("greyscale", "brightness", "contrast", "sharpness")}
    rgb = images.astype(np.float32)
    grey = (rgb[..., 0] == rgb[..., 1]).all(axis=(1, 2)) & (rgb[..., 1] == rgb[..., 2]).all(
        axis=(1, 2)
    )
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    lap = (
        -4 * luma[:, 1:-1, 1:-1]
        + luma[:, :-2, 1:-1]
        + luma[:, 2:, 1:-1]
        + luma[:, 1:-1, :-2]
        + luma[:, 1:-1, 2:]
    )
    return {
        "greyscale": grey.astype(np.float64),
        "brightness": luma.mean(axis=(1, 2)).astype(np.float64),
        "contrast": luma.std(axis=(1, 2)).astype(np.float64),
        "sharpness": lap.reshape(len(images), -1).var(axis=1).astype(np.float64),
    }


def histograms(reference: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both samples' histograms over the same bins: each value its own bin when there are
    few distinct values, else bins cut at the reference's deciles."""
    values = np.unique(np.concatenate([reference, new]))
    if len(values) <= 20:
        return (
            np.array([(reference == v).sum() for v in values], float),
            np.array([(new == v).sum() for v in values], float),
        )
    edges = np.unique(np.quantile(reference, np.linspace(0.1, 0.9, 9)))
    edges = np.concatenate([[-np.inf], edges, [np.inf]])
    return np.histogram(reference, edges)[0].astype(float), np.histogram(new, edges)[0].astype(
        float
    )


def image_stats(
    reference: dict[str, np.ndarray], new: dict[str, np.ndarray], config: ValidateConfig, label
) -> Check:
    """`reference`, `new`: feature name -> one value per image (STATS)."""
    from scipy.spatial.distance import jensenshannon

    count = len(new["brightness"])
    if count == 0:
        return nothing_new("image_stats", config.max_image_stat_js, {})
    if count < config.min_new_images or len(reference["brightness"]) < config.min_new_images:
        return skipped(
            "image_stats",
            config.max_image_stat_js,
            f"{count} new and {len(reference['brightness'])} reference images, fewer than "
            f"validate.min_new_images={config.min_new_images}",
        )
    distances, medians = {}, {}
    for name in STATS:
        before, after = histograms(reference[name], new[name])
        distances[name] = round(float(jensenshannon(before, after, base=2)), 4)
        middle = np.mean if name == "greyscale" else np.median  # a share, not a median
        medians[name] = {
            "new": round(float(middle(new[name])), 4),
            "reference": round(float(middle(reference[name])), 4),
        }
    worst = max(distances, key=distances.get)
    found = Check("image_stats", distances, config.max_image_stat_js)
    found.detail = {"medians": medians, "new_images": count}
    for name, distance in distances.items():
        if distance > config.max_image_stat_js:
            found.flag(
                f"image_stats: the new images' {name} differs from {label}'s (Jensen-Shannon "
                f"distance {distance:.3f} > {config.max_image_stat_js}; "
                f"{'share' if name == 'greyscale' else 'median'} {medians[name]['new']:g} "
                f"against {medians[name]['reference']:g})"
            )
    found.detail["worst"] = worst
    return found
