"""Where labelled images come from: a folder or `gs://` prefix of class sub-folders,
a CSV/JSONL manifest, or `builtin:digits`.

A folder (nested folders allowed: the first level names the class) or a
manifest with `uri,label` and optional `group` and metadata columns (relative
paths resolve against the manifest's folder). Listing opens no image, so a
wrong path or a source without classes is refused in a second with one clear
line. Prepare lists a source to read it; the pipeline's fingerprint task and
`submit --upload` list it to know what it holds.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from components.infra import storage
from components.infra.errors import UserError
from components.vision import digits
from components.vision.images import IMAGE_EXTENSIONS, is_image_name
from components.vision.metadata import INPUT_COLUMNS, RESERVED, parse_rows

MANIFEST_SUFFIXES = (".csv", ".jsonl")


@dataclass
class Item:
    uri: str
    label: str
    group: str = ""  # items with the same group never cross splits
    extra: dict[str, str] = field(default_factory=dict)  # metadata columns of a manifest


@dataclass
class Listing:
    """What a source holds before any file is opened."""

    source: str  # as the user gave it
    root: str  # the folder, prefix or manifest it resolved to
    items: list[Item]
    ignored: list[dict[str, str]] = field(default_factory=list)  # other files, with the reason
    metadata_columns: list[str] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return sorted({item.label for item in self.items})


def resolve_source(source: str) -> str:
    if not source or not str(source).strip():
        raise UserError("no data source given; pass --data DIR (a folder of class sub-folders)")
    if digits.is_builtin(source):
        return digits.resolve_builtin(source)
    if storage.is_remote(storage.check_location(source, "data source")):
        return str(source).rstrip("/")
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(
            f"data folder {source!r} does not exist; pass --data DIR with one sub-folder per class"
        )
    if path.is_file() and path.suffix.lower() not in MANIFEST_SUFFIXES:
        raise UserError(
            f"data source {source!r} is a file, not a folder; pass a folder with one "
            "sub-folder per class, or a .csv / .jsonl manifest"
        )
    return str(path.resolve())


def is_manifest(root: str) -> bool:
    return root.lower().endswith(MANIFEST_SUFFIXES)


def list_source(source: str) -> Listing:
    """List a source; refuse an empty one or one with fewer than two classes."""
    root = resolve_source(source)
    listing = list_manifest(source, root) if is_manifest(root) else list_folder(source, root)
    if not listing.items:
        raise UserError(
            f"no images found in {source!r} (looked for {', '.join(IMAGE_EXTENSIONS)} files "
            "inside class sub-folders); pass a folder laid out as DIR/<class>/<image>"
        )
    if len(listing.classes) < 2:
        raise UserError(
            f"found only {len(listing.classes)} class ({listing.classes[0]!r}) in {source!r}; "
            "a classifier needs at least 2 classes"
        )
    return listing


def list_folder(source: str, root: str) -> Listing:
    items: list[Item] = []
    ignored: list[dict[str, str]] = []
    for uri in storage.list_files(root):
        parts = storage.relative(uri, root).split("/")
        if len(parts) < 2:
            ignored.append({"uri": uri, "reason": "not inside a class sub-folder"})
        elif not is_image_name(parts[-1]):
            ignored.append({"uri": uri, "reason": "file extension is not an image extension"})
        else:
            items.append(Item(uri, parts[0]))
    return Listing(source=str(source), root=root, items=items, ignored=ignored)


def list_manifest(source: str, root: str) -> Listing:
    """Rows of a CSV (header row) or JSONL manifest: uri, label, optional group and metadata."""
    try:
        text = storage.read_bytes(root).decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read manifest {source!r}: {error}") from None
    rows = parse_rows(text, root.lower().endswith(".jsonl"), f"manifest {source!r}")
    columns = list(rows[0]) if rows else []
    missing = [c for c in ("uri", "label") if c not in columns]
    if rows and missing:
        raise UserError(
            f"manifest {source!r} has no {' or '.join(missing)} column "
            f"(columns: {', '.join(columns)}); it needs uri,label[,group,...]"
        )
    clashing = [c for c in columns if c in RESERVED and c not in INPUT_COLUMNS]
    if clashing:
        raise UserError(
            f"manifest {source!r} has a column {clashing[0]!r}, which prepare writes itself "
            f"({', '.join(RESERVED)}); rename that column"
        )
    base = posixpath.dirname(root) if storage.is_remote(root) else os.path.dirname(root)
    items = []
    for number, row in enumerate(rows, start=2 if not root.endswith(".jsonl") else 1):
        uri, label = (row.get("uri") or "").strip(), (row.get("label") or "").strip()
        if not uri or not label:
            raise UserError(f"manifest {source!r} row {number} has an empty uri or label")
        if not (storage.is_remote(uri) or os.path.isabs(uri)):
            uri = (
                f"{base}/{uri}"
                if storage.is_remote(root)
                else os.path.normpath(os.path.join(base, uri))
            )
        extra = {k: (v or "") for k, v in row.items() if k not in RESERVED and k}
        items.append(Item(uri, label, (row.get("group") or "").strip(), extra))
    metadata = [c for c in columns if c not in RESERVED]
    return Listing(source=str(source), root=root, items=items, metadata_columns=metadata)
