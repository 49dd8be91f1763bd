"""Validating Kubernetes custom resources offline against their published OpenAPI schemas.

A CRD's structural schema (KServe's InferenceService) or an API's swagger definitions
(Katib's Experiment) say which fields exist; the API server prunes or refuses the others.
`closed` turns such a schema into a JSON Schema that refuses unknown fields, as
`kubectl apply --validate=strict` would, and `problems` lists what is wrong, one line each.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any


def load(path: Path) -> Any:
    """A schema stored as gzipped JSON."""
    return json.loads(gzip.decompress(path.read_bytes()))


def closed(schema: Any) -> Any:
    """Every object that lists its properties and does not preserve unknown fields gets
    additionalProperties: false; an int-or-string field takes either; the x-kubernetes-*
    annotations go (JSON Schema does not know them)."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) for k, v in schema.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return {k: v for k, v in out.items() if not k.startswith("x-kubernetes-")}


def problems(schema: dict[str, Any], value: Any, where: str) -> list[str]:
    """What `value` breaks in `schema` (a closed JSON Schema), one line per error."""
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{where}: {'.'.join(str(p) for p in error.path) or '(root)'}: {error.message[:200]}"
        for error in sorted(validator.iter_errors(value), key=lambda e: list(e.path))
    ]
