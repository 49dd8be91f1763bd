"""What the new data is compared with: the deployed version, found through the registry.

The reference is `validate.reference`, else the places a scheduled config already
names the deployed version: `evaluate.baseline_model`, `prepare.keep_splits`, then
the registry push publishes to (`push.registry`/`push.model_name`); the pipeline's
`changes` task resolves it (pipelines/runkey.py: choose_reference). It may be a
registry reference (`<registry>/<model_name>[/<version>]`: its dataset/ manifests
and model/) or a prepared dataset folder (manifests only: the model-based checks
say they had no model). Nothing published there yet is the first night, recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
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
        )
    root = str(reference).rstrip("/")
    if storage.exists(f"{root}/splits/train.csv"):
        classes = json.loads(storage.read_bytes(f"{root}/classes.json"))
        return Reference(reference, f"dataset {root}", None, classes, read_rows(root), None)
    if storage.is_empty(root):
        return None
    raise UserError(
        f"validate.reference {reference!r} is neither a registry reference (no latest.json or "
        "manifest.json) nor a prepared dataset (no splits/train.csv); pass "
        "<registry>/<model_name>[/<version>] or a dataset folder"
    )
