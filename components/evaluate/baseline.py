"""The model to beat: a model folder, a .keras file, or the deployed version in a registry.

`evaluate.baseline_model` may name
  - a registry reference, `<registry>/<model_name>` (the version latest.json names) or
    `<registry>/<model_name>/<version>`, on a folder or gs:// (components/infra/registry.py);
  - a model folder or .keras file, local or gs://.

The baseline is re-measured here, with the same code, on today's test split. A
registry version also says which images it trained and validated on (its split
manifests, by sha256): those are left out of the comparison, so both models are
compared on test images neither trained on. A reference where nothing has been
published yet (the first run of a schedule) is no baseline; that is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.infra import registry, storage
from components.infra.errors import UserError
from components.vision.models import load_model, model_file


@dataclass
class Baseline:
    reference: str  # as configured
    label: str  # how reasons and the report name it
    model_dir: str  # where model.keras (and metadata.json) are
    # sha256 -> (split, label, uri) of every image its split manifests list; None: not known
    splits: dict[str, registry.ManifestRow] | None
    version: str | None = None

    @property
    def seen_sha256(self) -> set[str] | None:
        """The images it was fitted or selected on (train and val)."""
        if self.splits is None:
            return None
        return {sha for sha, row in self.splits.items() if row.split in ("train", "val")}


def manifest_splits(version: registry.Version) -> dict[str, registry.ManifestRow] | None:
    """sha256 -> (split, label, uri) of every image in the version's split manifests."""
    if not version.has(registry.DATASET):
        return None
    return registry.split_manifests(
        version.part(registry.DATASET), False, "evaluate.baseline_model"
    )


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
            manifest_splits(version),
            version.version,
        )
    if storage.exists(model_file(reference)):
        return Baseline(reference, f"baseline {reference}", reference, None)
    if registry.nothing_published(reference):
        return None  # nothing there, or only history (a refused first night): nothing yet
    raise UserError(
        f"evaluate.baseline_model {reference!r} is neither a model (no model.keras) nor a "
        "registry reference (no latest.json or manifest.json); pass <registry>/<model_name>, "
        "<registry>/<model_name>/<version>, or a model folder"
    )


def changed_classes(found: Baseline, classes: list[str]) -> str:
    """'added x; removed 9' when the baseline's own classes.json lists other classes."""
    import json

    uri = f"{str(found.model_dir).rstrip('/')}/classes.json"
    if not storage.exists(uri):
        return ""
    theirs = json.loads(storage.read_bytes(uri))
    if theirs == list(classes):
        return ""
    added = [c for c in classes if c not in theirs]
    removed = [c for c in theirs if c not in classes]
    parts = [
        f"added {', '.join(added)}" if added else "",
        f"removed {', '.join(removed)}" if removed else "",
    ]
    return "; ".join(p for p in parts if p) or "the same classes in another order"


def load(baseline: Baseline):
    return load_model(baseline.model_dir)


GATED = ("accuracy", "macro_f1")
SHOWN = (*GATED, "worst_class_recall", "log_loss")


def test_parts(found: Baseline, dataset, uris: list[str], classes, labels) -> dict:
    """Boolean masks over today's test images:
    known: in the baseline's own test split, with the same label (what it was judged on);
    relabelled: in its test split under another label (left out of the gate);
    new: in none of its splits; seen: in its train or val split (never compared)."""
    import numpy as np

    from components.vision import metadata

    sha = {row["uri"]: row.get("sha256", "") for row in metadata.read_rows(dataset, "test")}
    if found.splits is None:  # a plain model folder: nothing known about its data
        everything = np.ones(len(uris), dtype=bool)
        nothing = np.zeros(len(uris), dtype=bool)
        return {"known": nothing, "relabelled": nothing, "new": everything, "seen": nothing}
    where = [found.splits.get(sha.get(u, "")) for u in uris]
    label_of = [classes[int(y)] for y in labels]
    split = np.array([w.split if w else "" for w in where])
    same = np.array(
        [bool(w) and w.label == name for w, name in zip(where, label_of, strict=True)], dtype=bool
    )
    return {
        "known": (split == "test") & same,
        "relabelled": (split == "test") & ~same,
        "new": split == "",
        "seen": (split == "train") | (split == "val"),
    }


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
    judge,
    min_known_images: int = 1,
    few_known_images: str = "both",
) -> dict | None:
    """Both models on today's test images: the `baseline` entry of the blessing.

    The gate's images are the known part (the baseline's own test images, labels
    unchanged) when it holds at least `min_known_images`; fewer, and `few_known_images`
    says `both` (the known and the new images) or `refuse` (recorded; the gate refuses).
    A plain model folder (nothing known of its data): every test image. Both parts are
    measured for both models. `predict(model, rows)` gives a model's probabilities on
    `images`; `metric_fn(probs, labels)` the classification metrics; `judge(labels,
    candidate, baseline, uris)` (gate.compare_predictions) the comparison the gate decides on."""
    import numpy as np

    from components.vision.models import metadata_rows

    found = find_baseline(reference)
    if found is None:
        return {"model": reference, "found": False}
    changed = changed_classes(found, classes)
    if changed:  # a deliberate change validate let through (validate.accept): recorded
        return {
            "model": found.label,
            "reference": reference,
            "version": found.version,
            "found": True,
            "comparable": False,
            "classes_changed": changed,
        }
    model = load(found)
    if model.output_shape[-1] != len(classes):
        raise UserError(
            f"{found.label} predicts {model.output_shape[-1]} classes, not {len(classes)}; "
            "a baseline must be trained on the same classes"
        )
    _, rows = metadata_rows(model, found.model_dir, dataset, {"test": uris})
    base_probs = predict(model, rows["test"])
    parts = test_parts(found, dataset, uris, classes, labels)
    unseen = ~parts["seen"]
    gate_part, chosen, too_few = gate_images(found, parts, min_known_images, few_known_images)
    result = {
        "model": found.label,
        "reference": reference,
        "version": found.version,
        "found": True,
        "images": int(chosen.sum()),
        "gate_part": gate_part,
        "excluded_seen_by_baseline": int(parts["seen"].sum()),
        "relabelled_since_baseline": int(parts["relabelled"].sum()),
        "split_known": found.splits is not None,
        "parts": {},
        **too_few,
    }
    for name, mask in (("known", parts["known"]), ("new", parts["new"] & unseen)):
        if mask.any():
            result["parts"][name] = both_models(mask, probs, base_probs, labels, metric_fn)
    if not chosen.any():
        return {**result, "comparable": False}
    result.update(both_models(chosen, probs, base_probs, labels, metric_fn), comparable=True)
    where = np.flatnonzero(chosen)
    result.update(
        judge(
            labels[where],
            probs[where].argmax(axis=1),
            base_probs[where].argmax(axis=1),
            [uris[i] for i in where],
        )
    )
    return result


def gate_images(found, parts, min_known_images: int, few_known_images: str):
    """(the part the gate decides on, its mask, the too-few-known record or {}): the
    known images when there are `min_known_images`, else known and new together."""
    unseen = ~parts["seen"]
    known = int(parts["known"].sum())
    gate_part = (
        "unseen" if found.splits is None else "known" if known >= min_known_images else "both"
    )
    chosen = parts["known"] if gate_part == "known" else unseen & ~parts["relabelled"]
    too_few = {}
    if gate_part == "both":
        too_few = {
            "too_few_known": {
                "known": known,
                "min_known_images": min_known_images,
                "policy": few_known_images,
            }
        }
    return gate_part, chosen, too_few


def both_models(mask, probs, base_probs, labels, metric_fn) -> dict:
    """The candidate's and the baseline's metrics on the images `mask` selects."""
    candidate = metric_fn(probs[mask], labels[mask])
    base = metric_fn(base_probs[mask], labels[mask])
    return {
        "images": int(mask.sum()),
        "candidate": {k: candidate[k] for k in SHOWN},
        "baseline": {k: base[k] for k in SHOWN},
    }
