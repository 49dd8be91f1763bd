"""Tabular metadata columns as a model's second input.

A manifest may carry columns beside `uri,label` (camera, site, exposure...);
prepare keeps them in `splits/{split}.csv`. The train config names the ones
to use (`metadata_columns`), and this module turns them into one float32
vector per image, the model's `metadata` input:

  numeric      (every non-empty train value is a number, or `name:numeric`):
               standardized with the train split's mean and standard deviation;
               a missing value becomes the mean (0), and, when the train split
               has missing values, a `name=missing` 0/1 column says so
  categorical  (otherwise, or `name:categorical`): one-hot over the train
               split's most frequent values (at most MAX_CATEGORIES), plus a
               `name=other` column for values training never saw and empty ones

The encoder is fitted on the train split only, saved as `metadata.json`
beside the model and in the export folder, and applied unchanged by
evaluate, export and predict: every stage feeds the same vector.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from components.infra.errors import UserError

FILE = "metadata.json"
MAX_CATEGORIES = 64
KINDS = ("numeric", "categorical")
# the columns prepare reads (uri, label, group) and writes for its own use: never metadata,
# never model inputs, never report slices
RESERVED = ("uri", "label", "label_index", "sha256", "width", "height", "group", "fold")
INPUT_COLUMNS = ("uri", "label", "group")  # what a manifest may give besides metadata


@dataclass
class Column:
    name: str
    kind: str  # numeric | categorical
    mean: float = 0.0
    std: float = 1.0
    missing_indicator: bool = False
    categories: list[str] = field(default_factory=list)

    @property
    def features(self) -> list[str]:
        if self.kind == "numeric":
            return [self.name] + ([f"{self.name}=missing"] if self.missing_indicator else [])
        return [f"{self.name}={value}" for value in self.categories] + [f"{self.name}=other"]


def parse_spec(entry: str) -> tuple[str, str | None]:
    """`name` or `name:numeric` / `name:categorical` -> (name, kind or None)."""
    name, _, kind = str(entry).partition(":")
    name, kind = name.strip(), kind.strip().lower()
    if not name:
        raise ValueError(f"{entry!r} has no column name")
    if name in RESERVED:
        raise ValueError(f"{name!r} is one of prepare's own columns ({', '.join(RESERVED)})")
    if kind and kind not in KINDS:
        raise ValueError(f"{entry!r}: the kind after ':' must be numeric or categorical")
    return name, kind or None


def as_number(value: str) -> float | None:
    """A finite float, or None for an empty or non-numeric value."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass
class MetadataEncoder:
    columns: list[Column]

    @property
    def features(self) -> list[str]:
        return [name for column in self.columns for name in column.features]

    @property
    def size(self) -> int:
        return len(self.features)

    @classmethod
    def fit(cls, rows: list[Mapping[str, str]], specs: Iterable[str], where: str = "train.csv"):
        """Learn each column's kind, statistics and vocabulary from the train rows."""
        available = list(rows[0]) if rows else []
        columns = []
        for entry in specs:
            name, kind = parse_spec(entry)
            if name not in available:
                offered = [c for c in available if c not in RESERVED]
                raise UserError(
                    f"train config metadata_columns names {name!r}, which {where} does not have "
                    f"(its metadata columns: {', '.join(offered) or 'none'}); add the column to "
                    "the manifest given to prepare, or remove it from metadata_columns"
                )
            values = [(row.get(name) or "").strip() for row in rows]
            present = [v for v in values if v]
            numbers = [as_number(v) for v in present]
            if kind is None:
                kind = (
                    "numeric" if present and all(n is not None for n in numbers) else "categorical"
                )
            if kind == "numeric":
                bad = [v for v, n in zip(present, numbers, strict=True) if n is None]
                if bad:
                    raise UserError(
                        f"metadata column {name!r} is declared numeric but {where} holds "
                        f"{len(bad)} non-numeric value(s), e.g. {bad[0]!r}; fix the manifest or "
                        f"use {name}:categorical"
                    )
                array = np.asarray([n for n in numbers if n is not None], dtype=np.float64)
                mean = float(array.mean()) if len(array) else 0.0
                std = float(array.std()) if len(array) else 0.0
                columns.append(
                    Column(
                        name,
                        "numeric",
                        mean=mean,
                        std=std if std > 1e-12 else 1.0,
                        missing_indicator=len(present) < len(values),
                    )
                )
            else:
                counts = Counter(present)
                top = sorted(counts, key=lambda v: (-counts[v], v))[:MAX_CATEGORIES]
                columns.append(Column(name, "categorical", categories=sorted(top)))
        return cls(columns)

    def encode(self, rows: list[Mapping[str, str]]) -> np.ndarray:
        """float32 (N, size): one row per input row, in order."""
        out = np.zeros((len(rows), self.size), dtype=np.float32)
        start = 0
        for column in self.columns:
            width = len(column.features)
            block = out[:, start : start + width]
            if column.kind == "numeric":
                for i, row in enumerate(rows):
                    raw = str(row.get(column.name) or "").strip()
                    number = as_number(raw)
                    if number is None and raw:
                        raise UserError(
                            f"metadata column {column.name!r} is numeric but got {raw!r}; "
                            "give a number, or leave it empty for 'missing'"
                        )
                    if number is None:
                        if column.missing_indicator:
                            block[i, 1] = 1.0
                    else:
                        block[i, 0] = (number - column.mean) / column.std
            else:
                index = {value: k for k, value in enumerate(column.categories)}
                for i, row in enumerate(rows):
                    value = str(row.get(column.name) or "").strip()
                    block[i, index.get(value, width - 1)] = 1.0
            start += width
        return out

    def to_dict(self) -> dict:
        return {"columns": [asdict(c) for c in self.columns], "features": self.features}

    @classmethod
    def from_dict(cls, data: Mapping) -> MetadataEncoder:
        return cls([Column(**column) for column in data["columns"]])

    def save(self, folder: Path) -> None:
        from components.infra.artifacts import write_json

        write_json(Path(folder) / FILE, self.to_dict())


def load(folder: str | Path) -> MetadataEncoder | None:
    """The encoder saved beside a model (None: the model takes images only)."""
    from components.infra import storage
    from components.infra.artifacts import read_json

    uri = str(folder)
    if uri.endswith((".keras", ".tflite", ".onnx")):
        uri = str(Path(uri).parent)
    path = uri.rstrip("/") + "/" + FILE
    if storage.is_remote(path):
        if not storage.exists(path):
            return None
        return MetadataEncoder.from_dict(json.loads(storage.read_bytes(path)))
    return MetadataEncoder.from_dict(read_json(path)) if Path(path).exists() else None


def parse_rows(text: str, jsonl: bool, what: str) -> list[dict[str, str]]:
    """Rows of a CSV (header row) or JSONL table as string dicts (JSON null -> "").

    `what` names the file in the one-line error, e.g. "manifest 'labels.jsonl'"."""
    if not jsonl:
        return list(csv.DictReader(io.StringIO(text)))
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{what} line {number} is not JSON: {error}") from None
        if not isinstance(row, dict):
            raise UserError(f"{what} line {number} is not a JSON object")
        rows.append({k: "" if v is None else str(v) for k, v in row.items()})
    return rows


def read_rows(dataset: str | Path, split: str) -> list[dict[str, str]]:
    with open(Path(dataset) / "splits" / f"{split}.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def split_matrix(
    encoder: MetadataEncoder, dataset: str | Path, split: str, uris: list[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """(uris, float32 (N, size)) for a split, in the manifest's order or in `uris`' order."""
    rows = read_rows(dataset, split)
    if uris is not None:
        by_uri = {row["uri"]: row for row in rows}
        missing = [u for u in uris if u not in by_uri]
        if missing:
            raise UserError(
                f"{len(missing)} {split} image(s) have no row in {dataset}/splits/{split}.csv, "
                f"e.g. {missing[0]!r}; re-run prepare so shards and manifests agree"
            )
        rows = [by_uri[u] for u in uris]
    return [row["uri"] for row in rows], encoder.encode(rows)


def model_inputs(images: np.ndarray, metadata: np.ndarray | None):
    """What a Keras model takes: the images, or {"image", "metadata"} for a two-input model."""
    if metadata is None:
        return images
    return {"image": images, "metadata": metadata}


def takes_metadata(model) -> bool:
    return len(model.inputs) > 1
