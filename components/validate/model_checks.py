"""The checks that ask the deployed model: out-of-distribution pictures, label agreement.

Both look at stratified samples (at most `validate.max_images` images each) of four
groups of today's images: the new ones (in none of the reference's splits) and the
reference's own train, val and test images (the sample push published with the version,
or, for a version without one, its images still in today's data with their labels).

- out_of_distribution: an image is far when its mean Euclidean distance to its nearest
  reference train images, in the deployed model's embedding space (scikit-learn's
  NearestNeighbors; cosine distance was measured and missed 93% of noise pictures whose
  ReLU features point the same way as a digit's, only longer), is beyond the `ood_quantile` of the reference val images', or its
  top probability is below their (1 - ood_quantile) quantile. The far rate of the new
  images is compared with the same rate on the reference's test images by an exact
  one-sided binomial test (SciPy); flagged when significant at `alpha` and more than
  `max_ood_excess` above it.
- label_agreement: per class, the share of new images labelled c that the deployed model
  reads as another class with probability >= `label_confidence` (far images left out),
  against the share its own test images of c get (a binomial test, Bonferroni over the
  classes); flagged when significant and more than `max_label_disagreement` above it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components.validate.checks import Check, nothing_new, skipped
from components.validate.config import ValidateConfig
from components.vision.monitoring import distances  # shared with visionpipe serve


@dataclass
class Seen:
    """One group of images as the deployed model sees it."""

    uris: list[str]
    labels: list[str]  # class names, as today's manifests give them
    probs: np.ndarray  # (N, K) over the reference's classes
    embeddings: np.ndarray  # (N, D) float32


def far_rule(train: Seen, val: Seen, config: ValidateConfig):
    """The thresholds (distance, confidence) fitted on the reference val images, and
    `is_far(group) -> bool array`."""
    q = config.ood_quantile
    distance = float(np.quantile(distances(train.embeddings, val.embeddings, config.neighbours), q))
    confidence = float(np.quantile(val.probs.max(axis=1), 1 - q))

    def is_far(group: Seen) -> np.ndarray:
        d = distances(train.embeddings, group.embeddings, config.neighbours)
        return (d > distance) | (group.probs.max(axis=1) < confidence), d

    return {"distance": distance, "confidence": confidence}, is_far


def out_of_distribution(
    groups: dict[str, Seen], config: ValidateConfig, label: str
) -> tuple[Check, np.ndarray]:
    """The check, and which new images are far (label agreement leaves them out)."""
    from scipy.stats import binomtest

    train, val, test, new = (groups[g] for g in ("train", "val", "test", "new"))
    nothing = np.zeros(len(new.uris), dtype=bool)
    if not new.uris:
        return nothing_new("out_of_distribution", config.max_ood_excess, 0.0), nothing
    if len(train.uris) < config.neighbours or len(val.uris) < 20 or len(test.uris) < 20:
        return skipped(
            "out_of_distribution",
            config.max_ood_excess,
            f"too few of {label}'s own images to compare with ({len(train.uris)} train, "
            f"{len(val.uris)} val, {len(test.uris)} test; needs {config.neighbours}, 20, 20) "
            "to know what its usual pictures look like (a version published without its "
            "reference sample: re-publish it)",
        ), nothing
    thresholds, is_far = far_rule(train, val, config)
    far_test, _ = is_far(test)
    far_new, score = is_far(new)
    base = max(float(far_test.mean()), 1 - config.ood_quantile)
    rate = float(far_new.mean())
    p = float(binomtest(int(far_new.sum()), len(far_new), base, alternative="greater").pvalue)
    order = np.argsort(-score)
    files = [
        {
            "uri": new.uris[i],
            "label": new.labels[i],
            "distance": round(float(score[i]), 4),
            "confidence": round(float(new.probs[i].max()), 4),
        }
        for i in order
        if far_new[i]
    ]
    found = Check("out_of_distribution", round(rate, 4), config.max_ood_excess, files=files)
    found.detail = {
        **thresholds,
        "reference_test_rate": round(float(far_test.mean()), 4),
        "expected_rate": round(base, 4),
        "p_value": p,
        "new_images": len(far_new),
    }
    if p < config.alpha and rate - base > config.max_ood_excess:
        classes = sorted({f["label"] for f in files})
        found.flag(
            f"out_of_distribution: {int(far_new.sum())} of {len(far_new)} new images "
            f"({rate:.0%}) are unlike anything {label} knows, against {base:.1%} of its own "
            f"test images (binomial p {p:.2g}; threshold +{config.max_ood_excess:.0%}), "
            f"e.g. {', '.join(f['uri'] for f in files[:3])}",
            *classes,
        )
    return found, far_new


def confident_reads(group: Seen, classes: list[str], confidence: float):
    """Per image: the class the model reads confidently other than its label, or None."""
    predicted = group.probs.argmax(axis=1)
    sure = group.probs.max(axis=1) >= confidence
    return [
        classes[k] if s and classes[k] != y else None
        for k, s, y in zip(predicted, sure, group.labels, strict=True)
    ]


def label_agreement(
    groups: dict[str, Seen], far: np.ndarray, classes: list[str], config: ValidateConfig, label
) -> Check:
    from scipy.stats import binomtest

    test, new = groups["test"], groups["new"]
    keep = ~far
    new_labels = [y for y, k in zip(new.labels, keep, strict=True) if k]
    if not new.uris:
        return nothing_new("label_agreement", config.max_label_disagreement, {})
    if not new_labels:
        return skipped(
            "label_agreement",
            config.max_label_disagreement,
            f"every one of the {len(new.uris)} new images is out of distribution: none left "
            "to read a label from",
        )
    if len(test.uris) < 20:
        return skipped(
            "label_agreement",
            config.max_label_disagreement,
            f"only {len(test.uris)} of {label}'s test images to read: its own confusion is "
            "not known",
        )
    reads_new = [
        r
        for r, k in zip(confident_reads(new, classes, config.label_confidence), keep, strict=True)
        if k
    ]
    reads_test = confident_reads(test, classes, config.label_confidence)
    uris = [u for u, k in zip(new.uris, keep, strict=True) if k]
    found = Check("label_agreement", {}, config.max_label_disagreement)
    present = [c for c in classes if c in set(new_labels)]
    for name in present:
        mine = [i for i, y in enumerate(new_labels) if y == name]
        other = [reads_new[i] for i in mine if reads_new[i] is not None]
        theirs = [r for r, y in zip(reads_test, test.labels, strict=True) if y == name]
        wrong_test = sum(r is not None for r in theirs)
        expected = (wrong_test + 1) / (len(theirs) + 2)  # never 0 on a small test split
        share = len(other) / len(mine)
        p = float(binomtest(len(other), len(mine), expected, alternative="greater").pvalue)
        found.value[name] = {
            "new": len(mine),
            "read_as_other": round(share, 4),
            "expected": round(expected, 4),
            "p_value": p,
        }
        if p < config.alpha / len(present) and share - expected > config.max_label_disagreement:
            target = max(set(other), key=other.count)
            as_target = other.count(target) / len(mine)
            on_test = sum(r == target for r in theirs) / max(1, len(theirs))
            found.flag(
                f"label_agreement: new images labelled {name!r}: {label} reads "
                f"{as_target:.0%} of them ({other.count(target)} of {len(mine)}) as "
                f"{target!r}, against {on_test:.0%} on its own test images (binomial p "
                f"{p:.2g}; threshold +{config.max_label_disagreement:.0%})",
                name,
                target,
            )
            found.files.extend(
                {"uri": uris[i], "label": name, "read_as": reads_new[i]}
                for i in mine
                if reads_new[i] is not None
            )
    return found
