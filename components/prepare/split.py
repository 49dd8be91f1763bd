"""Duplicate groups and leakage-free, group-aware stratified splits.

Items that must stay together share a group: exact duplicates (same content
hash), near duplicates (perceptual hashes within a Hamming distance), and
items with the same `group` value in a manifest (several photos of one
patient or object). Groups, not items, are assigned to splits, so no picture
and no group can appear in two splits.

The 3-way split allocates each class's groups greedily to the split with the
largest remaining deficit against its target count (ratio x class size),
largest groups first: with single-image groups every split's count per class
is within one image of the requested ratio (scikit-learn's two successive
`train_test_split` calls can be off by two), and larger groups move it by at
most their size. k-fold manifests use scikit-learn's `StratifiedGroupKFold`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from components.infra.errors import UserError

SPLITS = ("train", "val", "test")


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class DuplicateGroup:
    kind: str  # "exact" or "near"
    members: list[int]  # item indices
    uris: list[str]
    labels: list[str]

    @property
    def conflicting(self) -> bool:
        return len(set(self.labels)) > 1


# mean absolute difference, in gray levels, of two brightness-normalised 16x16
# thumbnails below which a hash match is confirmed as the same picture
NEAR_PIXEL_TOLERANCE = 6.0


def near_duplicate_pairs(
    hashes: np.ndarray,
    thumbs: np.ndarray | None,
    max_distance: int,
    block: int = 256,  # (256 x N) uint64 per step: 40 MB at N = 20,000
):
    """Index pairs (i < j) that are the same picture, nearly.

    Candidates: 64-bit perceptual hashes within `max_distance` bits. A hash
    alone matches many different small, plain pictures (two handwritten zeros),
    and union-find would chain them into one giant group, so each candidate is
    confirmed on 16x16 thumbnails with their mean brightness removed.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    if thumbs is not None:
        thumbs = thumbs.astype(np.float32)
        thumbs -= thumbs.mean(axis=1, keepdims=True)
    for start in range(0, len(hashes), block):
        chunk = hashes[start : start + block]
        distance = np.bitwise_count(chunk[:, None] ^ hashes[None, start:])  # (b, n - start)
        rows, cols = np.nonzero(distance <= max_distance)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i, j = start + r, start + c
            if i < j and (
                thumbs is None or np.abs(thumbs[i] - thumbs[j]).mean() <= NEAR_PIXEL_TOLERANCE
            ):
                yield i, j


def duplicate_groups(
    sha256: list[str],
    dhash: np.ndarray | None,
    thumbs: np.ndarray | None,
    uris: list[str],
    labels: list[str],
    near_distance: int | None,
) -> list[DuplicateGroup]:
    """Groups of two or more items that are the same picture (exact) or nearly (near)."""
    n = len(sha256)
    exact = UnionFind(n)
    first: dict[str, int] = {}
    for i, digest in enumerate(sha256):
        if digest in first:
            exact.union(first[digest], i)
        else:
            first[digest] = i
    combined = UnionFind(n)
    for i in range(n):
        combined.union(i, exact.find(i))
    if near_distance is not None and dhash is not None:
        for i, j in near_duplicate_pairs(dhash, thumbs, near_distance):
            combined.union(i, j)
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        members[combined.find(i)].append(i)
    groups = []
    for items in members.values():
        if len(items) < 2:
            continue
        kind = "exact" if len({sha256[i] for i in items}) == 1 else "near"
        groups.append(
            DuplicateGroup(kind, items, [uris[i] for i in items], [labels[i] for i in items])
        )
    return groups


def group_keys(n: int, duplicates: list[DuplicateGroup], manifest_groups: list[str]) -> list[str]:
    """One key per item: items sharing a duplicate group or a manifest group share a key."""
    union = UnionFind(n)
    for group in duplicates:
        for i in group.members[1:]:
            union.union(group.members[0], i)
    by_value: dict[str, int] = {}
    for i, value in enumerate(manifest_groups):
        if value:
            if value in by_value:
                union.union(by_value[value], i)
            else:
                by_value[value] = i
    return [f"g{union.find(i)}" for i in range(n)]


def stratified_split(
    labels: list[str],
    groups: list[str],
    fractions: dict[str, float],
    seed: int,
    fixed: dict[str, str] | None = None,
) -> list[str]:
    """Assign every item a split; items with the same group key always share one.

    fixed: group key -> split for groups that must stay where they were
    (prepare.keep_splits); they count towards each split's target, and only the
    other groups are allocated, so the class ratios hold for old and new together.
    """
    fixed = fixed or {}
    group_items: dict[str, list[int]] = defaultdict(list)
    for i, group in enumerate(groups):
        group_items[group].append(i)
    by_class: dict[str, list[str]] = defaultdict(list)
    for group, items in group_items.items():
        label = Counter(labels[i] for i in items).most_common(1)[0][0]
        by_class[label].append(group)
    too_few = {c: len(g) for c, g in by_class.items() if len(g) < 3}
    if too_few:
        raise UserError(
            "cannot split three ways: classes with fewer than 3 distinct images or groups: "
            + ", ".join(f"{label!r} ({n})" for label, n in sorted(too_few.items()))
        )
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for label in sorted(by_class):
        total = sum(len(group_items[g]) for g in by_class[label])
        target = {name: fractions[name] * total for name in SPLITS}
        assigned = dict.fromkeys(SPLITS, 0)
        for group in by_class[label]:
            if group in fixed:
                assignment[group] = fixed[group]
                assigned[fixed[group]] += len(group_items[group])
        class_groups = [g for g in by_class[label] if g not in fixed]
        rng.shuffle(class_groups)
        class_groups.sort(key=lambda g: -len(group_items[g]))  # stable: big groups first
        for group in class_groups:
            # the split furthest below its target; ties go to the smaller splits first
            name = max(reversed(SPLITS), key=lambda s: target[s] - assigned[s])
            assignment[group] = name
            assigned[name] += len(group_items[group])
    return [assignment[group] for group in groups]
