"""The model registry's layout, which push writes and evaluate and prepare read.

  <registry>/<model_name>/latest.json              {"version", "uri", "manifest_sha256"}
  <registry>/<model_name>/<version>/manifest.json  every file with its sha256 and size
  <registry>/<model_name>/<version>/...            the export folder (model.onnx, ...)
  <registry>/<model_name>/<version>/model/         model.keras (+ metadata.json, config.json)
  <registry>/<model_name>/<version>/dataset/       classes.json, stats.json, splits/*.csv
                                                   (each image's sha256 and split)
  <registry>/<model_name>/<version>/dataset/reference/  a small stratified sample of the
                                                   version's images (a prepared dataset:
                                                   splits/, tfrecords/), validate's reference
  <registry>/<model_name>/<version>/evaluation/    metrics.json, blessing.json
  <registry>/<model_name>/<version>/provenance.json  the data fingerprint and config digest

A reference is `<registry>/<model_name>` (the version latest.json names) or
`<registry>/<model_name>/<version>`, on a folder or `gs://`. The deployed
version is what the next run's gate (`evaluate.baseline_model`) re-measures
and what `prepare.keep_splits` keeps each known image's split from.

A model folder holding only `history.jsonl` (and unfinished version folders) has
nothing published yet: a refused or interrupted first night, never an error
(`nothing_published`). Whether a night may run with nothing deployed behind its
reference is `validate.first_night` (`first_night_refusal`).
"""

from __future__ import annotations

import csv
import difflib
import io
import json
from dataclasses import dataclass
from typing import Any

from components.infra import storage
from components.infra.errors import UserError

LATEST = "latest.json"
MANIFEST = "manifest.json"
CLAIM = ".claimed"  # created first, exclusively: the version name is taken
MODEL, DATASET, EVALUATION = "model", "dataset", "evaluation"
# what made the version: the data fingerprint and the digest of the resolved configs
# (pipelines/runkey.py); an unchanged night is one whose key equals it
PROVENANCE = "provenance.json"
REFERENCE_SAMPLE = "reference"  # dataset/reference/: the sample validate compares with
FIRST_NIGHT = ("auto", "allow", "refuse")  # validate.first_night


@dataclass
class Version:
    uri: str
    version: str
    model_name: str
    manifest: dict[str, Any]

    @property
    def label(self) -> str:
        """How messages name it: `visionpipe-classifier 20261129-...`."""
        return f"{self.model_name} {self.version}"

    def part(self, name: str) -> str:
        return f"{self.uri}/{name}"

    def has(self, name: str) -> bool:
        return any(e["path"].startswith(name + "/") for e in self.manifest.get("files", []))


def resolve(reference: str) -> Version | None:
    """The version a registry reference names; None when `reference` is not one.

    A model folder with latest.json that names nothing readable is refused with one line.
    """
    ref = str(reference).rstrip("/")
    if storage.exists(f"{ref}/{MANIFEST}"):
        return _version(ref)
    if storage.exists(f"{ref}/{LATEST}"):
        latest = json.loads(storage.read_bytes(f"{ref}/{LATEST}"))
        uri = latest.get("uri", "")
        if not uri or not storage.exists(f"{uri}/{MANIFEST}"):
            raise UserError(
                f"{ref}/{LATEST} names version {latest.get('version')!r} at {uri!r}, which has "
                f"no {MANIFEST}; fix {LATEST} or point at a version folder"
            )
        return _version(uri)
    return None


def _version(uri: str) -> Version:
    manifest = json.loads(storage.read_bytes(f"{uri}/{MANIFEST}"))
    return Version(
        uri=uri,
        version=str(manifest.get("version", uri.rsplit("/", 1)[-1])),
        model_name=str(manifest.get("model_name", "")),
        manifest=manifest,
    )


def resolve_part(reference: str, part: str, setting: str, fix: str) -> Version | None:
    """`resolve`, refusing a version published without `part` (model/, dataset/, ...)."""
    version = resolve(reference)
    if version is not None and not version.has(part):
        raise UserError(
            f"{setting}: {version.label} at {version.uri} was published without its {part}/; {fix}"
        )
    return version


@dataclass
class ManifestRow:
    split: str
    label: str
    uri: str


def split_manifests(folder: str, required: bool, setting: str) -> dict[str, ManifestRow]:
    """sha256 -> (split, label, uri) of every image in a dataset folder's split manifests
    (the first row of an image listed twice); a missing manifest is refused when
    `required`, else skipped."""
    found: dict[str, ManifestRow] = {}
    for split in ("train", "val", "test"):
        uri = f"{folder}/splits/{split}.csv"
        if not storage.exists(uri):
            if required:
                raise UserError(f"{setting}: {uri} is missing; the dataset is incomplete")
            continue
        for row in csv.DictReader(io.StringIO(storage.read_bytes(uri).decode("utf-8"))):
            if row.get("sha256"):
                found.setdefault(
                    row["sha256"], ManifestRow(split, row.get("label", ""), row.get("uri", ""))
                )
    return found


HISTORY = "history.jsonl"  # beside latest.json: one line per night, published or refused
HISTORY_ATTEMPTS = 20


def append_history(base: str, entry: dict) -> bool:
    """Append one night to `<base>/history.jsonl` with the preconditions latest.json is
    moved with (a generation or ETag match; a local lock): two runs appending at once
    both land, neither overwrites the other. False (and a warning) after 20 contested
    attempts; the published version itself is unaffected."""
    uri = f"{base.rstrip('/')}/{HISTORY}"
    line = (json.dumps(entry, sort_keys=True) + "\n").encode()
    for _ in range(HISTORY_ATTEMPTS):
        current, token = storage.read_versioned(uri)
        if storage.write_if_unchanged(uri, (current or b"") + line, token):
            return True
    from components.infra import progress

    progress.log("registry", f"warning: {uri} kept changing; this night was not recorded")
    return False


def read_history(base: str) -> list[dict]:
    """Every recorded night of `<base>` (a registry reference `<registry>/<model_name>`)."""
    uri = f"{base.rstrip('/')}/{HISTORY}"
    if not storage.exists(uri):
        return []
    rows = []
    for number, text in enumerate(storage.read_bytes(uri).decode().splitlines(), start=1):
        if text.strip():
            try:
                rows.append(json.loads(text))
            except ValueError as error:
                raise UserError(
                    f"{uri} line {number} is not JSON ({error}); fix or remove it"
                ) from None
    return rows


def nothing_published(reference: str) -> bool:
    """Nothing published at `reference` yet: no such folder, an empty one, or a model
    folder holding only history.jsonl and version folders never finished (claimed,
    without manifest.json): a refused or interrupted first night."""
    root = str(reference).rstrip("/")
    if storage.exists(f"{root}/{LATEST}") or storage.exists(f"{root}/{MANIFEST}"):
        return False
    unfinished: dict[str, bool] = {}
    for uri in storage.list_files(root):
        name = storage.relative(uri, root)
        if name == HISTORY:
            continue
        top = name.split("/", 1)[0]
        if top not in unfinished:
            unfinished[top] = (
                "/" in name
                and storage.exists(f"{root}/{top}/{CLAIM}")
                and not storage.exists(f"{root}/{top}/{MANIFEST}")
            )
        if not unfinished[top]:
            return False
    return True


def published_models(registry: str) -> list[str]:
    """The names under `registry` with a latest.json (a published model), sorted."""
    root = str(registry).rstrip("/")
    if not storage.is_remote(root):
        from pathlib import Path

        folder = Path(root)
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if (p / LATEST).is_file())
    names = (storage.relative(uri, root).split("/") for uri in storage.list_files(root))
    return sorted({parts[0] for parts in names if len(parts) == 2 and parts[1] == LATEST})


def first_night_refusal(reference: str, policy: str, setting: str) -> str | None:
    """None when a night may run against `reference` (something is published there, or
    the first night is allowed); else the one line that refuses it.

    policy (validate.first_night): allow: nothing published is the first night; refuse:
    it is an error (a scheduled config: the first night is run once with --first-night);
    auto: the first night only while the registry holds no published model at all (a
    fresh local registry), an error when it holds others (the name is likely misspelled).
    """
    if policy == "allow" or not nothing_published(reference):
        return None
    parent, _, name = str(reference).rstrip("/").rpartition("/")
    others = published_models(parent) if parent else []
    if policy == "auto" and not others:
        return None
    nearest = difflib.get_close_matches(name, others, n=1, cutoff=0.0)
    held = (
        f"the nearest name {parent} holds is {nearest[0]!r} ({len(others)} published: "
        f"{', '.join(others[:5])}{' ...' if len(others) > 5 else ''})"
        if nearest
        else f"{parent} holds no published model"
    )
    nights = len(read_history(reference)) if storage.exists(f"{reference}/{HISTORY}") else 0
    tried = f"; its history.jsonl records {nights} nights, none published" if nights else ""
    return (
        f"{setting}: nothing is published at {reference}{tried}; {held}. Fix the name "
        f"(push.registry/push.model_name), or run a new model's first night once with "
        f"--first-night (validate.first_night=allow; now {policy})"
    )
