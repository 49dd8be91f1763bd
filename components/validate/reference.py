"""What the new data is compared with: the deployed version, found through the registry.

The reference is `validate.reference`, else the places a scheduled config already
names the deployed version: `evaluate.baseline_model`, `prepare.keep_splits`, then
the registry push publishes to (`push.registry`/`push.model_name`); the pipeline's
`changes` task resolves it (pipelines/runkey.py: choose_reference). It may be a
registry reference (`<registry>/<model_name>[/<version>]`: its dataset/ manifests
and model/) or a prepared dataset folder (manifests only: the model-based checks
say they had no model). A published version may hold a sample of its own images
(`dataset/reference/`, written by push): the model checks compare with it. Nothing
published there yet (nothing at all, or a model folder with only history.jsonl: a
refused first night) is the first night, as `validate.first_night` allows.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.infra import registry, storage
from components.infra.errors import UserError


@dataclass
class Reference:
    reference: str
    label: str  # how messages name it
    version: str | None
    classes: list[str]
    rows: dict[str, registry.ManifestRow]  # sha256 -> where and how it was labelled
    model_dir: str | None  # None: a dataset folder, no model to ask
    provenance: dict[str, Any] = field(default_factory=dict)
    sample: str | None = None  # the published sample of its images (a dataset folder)

    def counts(self) -> dict[str, int]:
        from components.validate.checks import label_counts

        return label_counts((row.label for row in self.rows.values()), self.classes)


def read_rows(folder: str) -> dict[str, registry.ManifestRow]:
    return registry.split_manifests(folder, True, "validate.reference")


def load(reference: str) -> Reference | None:
    """The reference's manifests, classes and model; None when nothing is published yet."""
    version = registry.resolve_part(
        reference,
        registry.DATASET,
        "validate.reference",
        "push it with --dataset, or point validate.reference at a prepared dataset",
    )
    if version is not None:
        folder = version.part(registry.DATASET)
        provenance_uri = f"{version.uri}/{registry.PROVENANCE}"
        sample = f"{folder}/{registry.REFERENCE_SAMPLE}"
        return Reference(
            reference,
            f"deployed {version.label}",
            version.version,
            json.loads(storage.read_bytes(f"{folder}/classes.json")),
            read_rows(folder),
            version.part(registry.MODEL) if version.has(registry.MODEL) else None,
            json.loads(storage.read_bytes(provenance_uri))
            if storage.exists(provenance_uri)
            else {},
            sample if storage.exists(f"{sample}/stats.json") else None,
        )
    root = str(reference).rstrip("/")
    if storage.exists(f"{root}/splits/train.csv"):
        classes = json.loads(storage.read_bytes(f"{root}/classes.json"))
        return Reference(reference, f"dataset {root}", None, classes, read_rows(root), None)
    if registry.nothing_published(root):
        return None
    raise UserError(
        f"validate.reference {reference!r} is neither a registry reference (no latest.json or "
        "manifest.json) nor a prepared dataset (no splits/train.csv); pass "
        "<registry>/<model_name>[/<version>] or a dataset folder"
    )


@contextlib.contextmanager
def sample_folder(found: Reference) -> Iterator[Path | None]:
    """The published sample as a local folder (a copy of a remote one), or None."""
    if found.sample is None:
        yield None
        return
    with storage.local_folder(found.sample, "stats.json") as folder:
        yield Path(folder)
