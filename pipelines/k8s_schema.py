"""Kubernetes objects against the API schema, as the `kubernetes` Python client's models
define it: unknown fields, wrong types and missing required fields, at every depth.

Used by `make k8s-check` (pipelines/k8s_check.py) and by the Katib Experiment writer
(pipelines/katib.py) for its trial Job.
"""

from __future__ import annotations

import re
from typing import Any

PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float)}


def model_for(obj: dict) -> str:
    """apiVersion + kind -> the client's model class name (batch/v1 CronJob -> V1CronJob)."""
    version = obj.get("apiVersion", "").rsplit("/", 1)[-1]
    return version[:1].upper() + version[1:] + obj.get("kind", "")


def validate(value: Any, type_name: str, where: str) -> list[str]:
    """Problems of `value` against the client's type string (`V1PodSpec`, `list[V1Container]`,
    `dict(str, str)`, `str`, ...)."""
    from kubernetes import client

    if value is None:
        return []
    if type_name == "object":
        return []
    if type_name == "datetime":
        return [] if isinstance(value, str) else [f"{where}: expected a timestamp string"]
    match = re.fullmatch(r"list\[(.+)\]", type_name)
    if match:
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        return [p for i, v in enumerate(value) for p in validate(v, match[1], f"{where}[{i}]")]
    match = re.fullmatch(r"dict\(str, (.+)\)", type_name)
    if match:
        if not isinstance(value, dict):
            return [f"{where}: expected a mapping, got {type(value).__name__}"]
        return [p for k, v in value.items() for p in validate(v, match[1], f"{where}.{k}")]
    if type_name in PRIMITIVES:
        expected = PRIMITIVES[type_name]
        if isinstance(value, bool) and type_name != "bool":
            return [f"{where}: expected {type_name}, got a boolean"]
        if not isinstance(value, expected):
            return [f"{where}: expected {type_name}, got {type(value).__name__} {value!r}"]
        return []
    model = getattr(client.models, type_name, None)
    if model is None:
        return [f"{where}: unknown schema type {type_name}"]
    if not isinstance(value, dict):
        return [f"{where}: expected a {type_name} mapping, got {type(value).__name__}"]
    by_json = {json_name: py for py, json_name in model.attribute_map.items()}
    problems = [
        f"{where}.{key}: unknown field for {type_name}" for key in value if key not in by_json
    ]
    try:  # the model's constructor refuses missing required fields and bad enum values
        model(**{by_json[k]: v for k, v in value.items() if k in by_json})
    except ValueError as error:
        problems.append(f"{where}: {error}")
    for key, item in value.items():
        if key in by_json:
            problems += validate(item, model.openapi_types[by_json[key]], f"{where}.{key}")
    return problems
