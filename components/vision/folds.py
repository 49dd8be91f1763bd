"""Stratified, group-aware k-fold: the folds prepare writes (`prepare.kfold`, kfold.csv)
and train uses (k-fold ensembles, `train.cross_validate`)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from components.infra.errors import UserError


def kfold_assignment(
    labels: list[str],
    groups: list[str],
    k: int,
    seed: int,
    setting: str = "prepare.kfold",
    items: str = "training images",
    fix: str = "",
) -> list[int]:
    """The fold of each item (scikit-learn's StratifiedGroupKFold); a class with fewer
    than k items is refused with one line naming `setting`."""
    from sklearn.model_selection import StratifiedGroupKFold

    smallest = min(Counter(labels).values())
    if smallest < k:
        raise UserError(
            f"{setting}={k} needs at least {k} {items} per class; "
            f"the smallest class has {smallest}{fix}"
        )
    folds = [0] * len(labels)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        for i in held_out:
            folds[i] = fold
    return folds


def fold_uris(uris: list[str], folds: list[int]) -> list[tuple[list[str], list[str]]]:
    """(train uris, held-out uris) for each fold number, in order."""
    return [
        (
            [u for u, f in zip(uris, folds, strict=True) if f != fold],
            [u for u, f in zip(uris, folds, strict=True) if f == fold],
        )
        for fold in sorted(set(folds))
    ]
