"""`prepare.keep_splits`: every image an earlier dataset knew stays in the split it had.

When data grows, a fresh split would move some of yesterday's training images
into today's test split, and the deployed model would be tested on images it
trained on. The earlier dataset's split manifests (each image's sha256) pin
those images; only new images are allocated, keeping the class ratios, and
group rules still hold (a group that joins images kept in different splits is
refused with one line).

The source is a prepared dataset folder, local or gs://, or a registry
reference (`<registry>/<model_name>[/<version>]`: the published version's
dataset/ folder). A reference with nothing published yet keeps nothing; that
is recorded in stats.json.
"""

from __future__ import annotations

from collections import defaultdict

from components.infra import registry, storage
from components.infra.errors import UserError


def splits_folder(source: str) -> tuple[str | None, str]:
    """(the folder holding splits/*.csv, how to name it); None when nothing is there yet."""
    version = registry.resolve_part(
        source,
        registry.DATASET,
        "prepare.keep_splits",
        "push it with --dataset, or pass a prepared dataset folder",
    )
    if version is not None:
        return version.part(registry.DATASET), version.label
    root = str(source).rstrip("/")
    if storage.exists(f"{root}/splits/train.csv"):
        return root, root
    if not registry.nothing_published(root):  # a model folder with only history: nothing yet
        raise UserError(
            f"prepare.keep_splits {source!r} is neither a prepared dataset (no "
            "splits/train.csv) nor a registry reference (no latest.json or manifest.json)"
        )
    return None, root


def kept_splits(source: str) -> tuple[dict[str, str], str | None]:
    """sha256 -> split of every image the source's manifests list, and its name."""
    folder, label = splits_folder(source)
    if folder is None:
        return {}, None
    rows = registry.split_manifests(folder, True, "prepare.keep_splits")
    return {sha: row.split for sha, row in rows.items()}, label


def fixed_groups(
    keys: list[str], sha256: list[str], uris: list[str], kept: dict[str, str], label: str
) -> dict[str, str]:
    """Group key -> split for every group holding a kept image; a group whose kept images
    sit in different splits is refused, naming two of them."""
    splits: dict[str, dict[str, str]] = defaultdict(dict)  # group -> split -> an example uri
    for key, digest, uri in zip(keys, sha256, uris, strict=True):
        if digest in kept:
            splits[key].setdefault(kept[digest], uri)
    for where in splits.values():
        if len(where) > 1:
            (a_split, a_uri), (b_split, b_uri) = list(where.items())[:2]
            raise UserError(
                f"prepare.keep_splits: {a_uri} ({a_split} in {label}) and {b_uri} ({b_split}) "
                "are now one group (duplicates or the same group value), which cannot be in two "
                "splits; remove one of them or give them different groups"
            )
    return {key: next(iter(where)) for key, where in splits.items()}
