"""Duplicate groups and leakage-free stratified splits.

Items that must stay together (exact duplicates, by content hash) form a
group; the split is made over groups, stratified by label with scikit-learn,
so no picture can appear in two splits.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from components.common.errors import UserError

SPLITS = ("train", "val", "test")


@dataclass
class DuplicateGroup:
    sha256: str
    uris: list[str]
    labels: list[str]

    @property
    def conflicting(self) -> bool:
        return len(set(self.labels)) > 1


def duplicate_groups(hashes: list[str], uris: list[str], labels: list[str]) -> list[DuplicateGroup]:
    """Exact duplicates: items whose file bytes hash the same, two or more per group."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    for index, digest in enumerate(hashes):
        by_hash[digest].append(index)
    return [
        DuplicateGroup(digest, [uris[i] for i in members], [labels[i] for i in members])
        for digest, members in by_hash.items()
        if len(members) > 1
    ]


def stratified_split(
    labels: list[str],
    groups: list[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> list[str]:
    """Assign each item a split; items sharing a group key always share a split.

    Stratification is over groups (each carrying its first item's label), with
    scikit-learn's `train_test_split`, first test from all, then val from the
    rest, so each class's share of every split is within about one group of
    the requested ratio.
    """
    group_label: dict[str, str] = {}
    for label, group in zip(labels, groups, strict=True):
        group_label.setdefault(group, label)
    keys = list(group_label)
    key_labels = [group_label[k] for k in keys]
    counts = Counter(key_labels)
    too_few = {label: n for label, n in counts.items() if n < 3}
    if too_few:
        raise UserError(
            "cannot split three ways: classes with fewer than 3 distinct images: "
            + ", ".join(f"{label!r} ({n})" for label, n in sorted(too_few.items()))
        )
    index = np.arange(len(keys))
    n_classes = len(counts)
    test_count = max(n_classes, int(round(test_fraction * len(keys))))
    rest, test = train_test_split(
        index, test_size=test_count, stratify=key_labels, random_state=seed
    )
    rest_labels = [key_labels[i] for i in rest]
    val_count = max(n_classes, int(round(val_fraction * len(keys))))
    if len(rest) - val_count < n_classes:
        raise UserError(
            f"too few images ({len(keys)} distinct) for val_fraction={val_fraction} and "
            f"test_fraction={test_fraction} over {n_classes} classes; add images or lower them"
        )
    train, val = train_test_split(
        rest, test_size=val_count, stratify=rest_labels, random_state=seed
    )
    split_of_key = {}
    for name, members in (("train", train), ("val", val), ("test", test)):
        for i in members:
            split_of_key[keys[i]] = name
    return [split_of_key[group] for group in groups]
