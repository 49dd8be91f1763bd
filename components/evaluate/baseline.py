"""The model to beat: a model folder, a .keras file, or the deployed version in a registry.

`evaluate.baseline_model` may name
  - a registry reference, `<registry>/<model_name>` (the version latest.json names) or
    `<registry>/<model_name>/<version>`, on a folder or gs:// (components/common/registry.py);
  - a model folder or .keras file, local or gs://.

The baseline is re-measured here, with the same code, on today's test split. A
registry version also says which images it trained and validated on (its split
manifests, by sha256): those are left out of the comparison, so both models are
compared on test images neither trained on. A reference where nothing has been
published yet (the first run of a schedule) is no baseline; that is recorded.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from components.common import registry, storage
from components.common.errors import UserError
from components.common.models import load_model, model_file


@dataclass
class Baseline:
    reference: str  # as configured
    label: str  # how reasons and the report name it
    model_dir: str  # where model.keras (and metadata.json) are
    seen_sha256: set[str] | None  # images it was fitted or selected on; None: not known
    version: str | None = None


def trained_on(version: registry.Version) -> set[str] | None:
    """sha256 of every image in the version's train and val split manifests."""
    if not version.has(registry.DATASET):
        return None
    seen: set[str] = set()
    for split in ("train", "val"):
        uri = f"{version.part(registry.DATASET)}/splits/{split}.csv"
        if storage.exists(uri):
            rows = csv.DictReader(io.StringIO(storage.read_bytes(uri).decode()))
            seen.update(row["sha256"] for row in rows if row.get("sha256"))
    return seen


def find_baseline(reference: str) -> Baseline | None:
    """What `reference` names; None when it names a place with nothing published yet."""
    version = registry.resolve_part(
        reference,
        registry.MODEL,
        "evaluate.baseline_model",
        "push it with --model, or point evaluate.baseline_model at a model folder",
    )
    if version is not None:
        return Baseline(
            reference,
            f"deployed {version.label}",
            version.part(registry.MODEL),
            trained_on(version),
            version.version,
        )
    if storage.exists(model_file(reference)):
        return Baseline(reference, f"baseline {reference}", reference, None)
    if storage.is_empty(reference):
        return None  # nothing there at all: nothing deployed yet
    raise UserError(
        f"evaluate.baseline_model {reference!r} is neither a model (no model.keras) nor a "
        "registry reference (no latest.json or manifest.json); pass <registry>/<model_name>, "
        "<registry>/<model_name>/<version>, or a model folder"
    )


def load(baseline: Baseline):
    return load_model(baseline.model_dir)


GATED = ("accuracy", "macro_f1")


def compare(
    reference: str,
    dataset,
    images,
    labels,
    uris: list[str],
    probs,
    classes: list[str],
    predict,
    metric_fn,
) -> dict | None:
    """Both models on the test images neither trained on: the `baseline` entry of the
    blessing (None: nothing to compare with). `predict(model, rows)` gives a model's
    probabilities on `images`; `metric_fn(probs, labels)` the classification metrics."""
    import numpy as np

    from components.common import metadata
    from components.common.models import metadata_rows

    found = find_baseline(reference)
    if found is None:
        return {"model": reference, "found": False}
    model = load(found)
    if model.output_shape[-1] != len(classes):
        raise UserError(
            f"{found.label} predicts {model.output_shape[-1]} classes, not {len(classes)}; "
            "a baseline must be trained on the same classes"
        )
    _, rows = metadata_rows(model, found.model_dir, dataset, {"test": uris})
    base_probs = predict(model, rows["test"])
    sha = {row["uri"]: row.get("sha256", "") for row in metadata.read_rows(dataset, "test")}
    seen = found.seen_sha256 or set()
    fresh = np.array([sha.get(u, "") not in seen for u in uris], dtype=bool)
    result = {
        "model": found.label,
        "reference": reference,
        "version": found.version,
        "found": True,
        "images": int(fresh.sum()),
        "excluded_seen_by_baseline": int((~fresh).sum()),
        "split_known": found.seen_sha256 is not None,
    }
    if not fresh.any():
        return {**result, "comparable": False}
    candidate = metric_fn(probs[fresh], labels[fresh])
    base = metric_fn(base_probs[fresh], labels[fresh])
    result["comparable"] = True
    result["candidate"] = {k: candidate[k] for k in (*GATED, "worst_class_recall", "log_loss")}
    result["baseline"] = {k: base[k] for k in (*GATED, "worst_class_recall", "log_loss")}
    return result
