"""Nothing new, nothing spent: whether tonight's run differs from the deployed version.

A run's key is the digest of its data fingerprint, the resolved configs of the
stages that make the model (prepare, train, evaluate, export: every default filled
in, so `{}` and the spelled-out defaults are the same key) and the visionpipe
version. Push publishes it with the version (`provenance.json`). The pipeline's
`changes` task, uncached, compares tonight's key with the deployed version's:
equal, and the run trains nothing and publishes nothing, and says "no change since
version X"; different, and the record says what changed. `validate.skip_unchanged:
false` (`--force`) retrains anyway.

The deployed version is the one the run is gated against: validate.reference,
evaluate.baseline_model, prepare.keep_splits, then push.registry/push.model_name.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import components
from components.infra import registry, storage
from pipelines.stages import config_class

KEYED = ("prepare", "train", "evaluate", "export")  # what makes the model


def choose_reference(configs: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """(the deployed version's reference, the setting that names it); ("", "") for none."""
    for setting, value in (
        ("validate.reference", (configs.get("validate") or {}).get("reference")),
        ("evaluate.baseline_model", (configs.get("evaluate") or {}).get("baseline_model")),
        ("prepare.keep_splits", (configs.get("prepare") or {}).get("keep_splits")),
    ):
        if value:
            return str(value), setting
    push = config_class("push").from_dict(configs.get("push") or {})
    if push.registry:
        return f"{push.registry.rstrip('/')}/{push.model_name}", "push.registry"
    return "", ""


def resolved(configs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each keyed stage's config with every default filled in (validated on the way)."""
    return {
        stage: config_class(stage).from_dict(configs.get(stage) or {}).to_dict() for stage in KEYED
    }


def provenance(fingerprint: str, configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What push publishes as provenance.json: the inputs of the key, and the key."""
    found = {
        "fingerprint": fingerprint,
        "configs": resolved(configs),
        "visionpipe": components.__version__,
    }
    text = json.dumps(found, sort_keys=True, default=str)
    return {**found, "key": hashlib.sha256(text.encode()).hexdigest()[:16]}


def decide(fingerprint: str, configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{"changed", "message", "reference", "version", "provenance", "registry"}: whether to
    run at all. `registry` is `<push.registry>/<model_name>` (where the night's outcome is
    recorded, history.jsonl) or None."""
    mine = provenance(fingerprint, configs)
    reference, setting = choose_reference(configs)
    push = config_class("push").from_dict(configs.get("push") or {})
    out = {
        "changed": True,
        "reference": reference or None,
        "version": None,
        "provenance": mine,
        "registry": f"{push.registry.rstrip('/')}/{push.model_name}" if push.registry else None,
    }
    if not config_class("validate").from_dict(configs.get("validate") or {}).skip_unchanged:
        return {**out, "message": "validate.skip_unchanged is off (--force): running anyway"}
    if not reference:
        return {**out, "message": "no deployed version to compare with: running"}
    version = registry.resolve(reference)
    if version is None:
        return {**out, "message": f"nothing published at {reference} ({setting}) yet: running"}
    out["version"] = version.version
    uri = f"{version.uri}/{registry.PROVENANCE}"
    if not storage.exists(uri):
        return {**out, "message": f"{version.label} records no provenance: running"}
    theirs = json.loads(storage.read_bytes(uri))
    if theirs.get("key") == mine["key"]:
        return {
            **out,
            "changed": False,
            "message": f"no change since version {version.version} ({version.label}: the same "
            f"data, fingerprint {fingerprint}, and the same resolved configs): nothing trained "
            "or published; --force or validate.skip_unchanged=false retrains anyway",
        }
    return {
        **out,
        "message": f"changed since version {version.version}: {differences(mine, theirs)}",
    }


def differences(mine: dict[str, Any], theirs: dict[str, Any]) -> str:
    found = []
    if mine["fingerprint"] != theirs.get("fingerprint"):
        found.append(f"the data (fingerprint {theirs.get('fingerprint')} -> {mine['fingerprint']})")
    for stage in KEYED:
        old = (theirs.get("configs") or {}).get(stage, {})
        keys = sorted(k for k, v in mine["configs"][stage].items() if old.get(k) != v)
        if keys:
            found.append(f"{stage} config ({', '.join(keys[:5])})")
    if mine["visionpipe"] != theirs.get("visionpipe"):
        found.append(f"visionpipe {theirs.get('visionpipe')} -> {mine['visionpipe']}")
    return ", ".join(found) or "the key"
