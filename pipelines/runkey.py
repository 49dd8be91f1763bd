"""Nothing new, nothing spent: whether tonight's run differs from the deployed version.

A run's key is the digest of its data fingerprint, the resolved configs of the
stages that make the model (prepare, train, evaluate, export: every default filled
in, so `{}` and the spelled-out defaults are the same key) and the code: the stage
image's digest on a cluster (VISIONPIPE_STAGE_IMAGE pinned `@sha256:`), else a hash of
the installed package's source (components/ and pipelines/ .py files), so a release
retrains. Push publishes it with the version (`provenance.json`). The pipeline's
`changes` task, uncached, compares tonight's key with the deployed version's:
equal, and the run trains nothing and publishes nothing, and says "no change since
version X"; different, and the record says what changed. A night refused by validate
or the gate is recorded with its key in the registry's history.jsonl: the same key
against the same deployed version is not trained again, and the run names the night
that refused it. `validate.skip_unchanged: false` (`--force`) retrains anyway.

The registry is named once, push.registry/push.model_name: prepare.keep_splits,
evaluate.baseline_model and validate.reference derive from it unless set
(`with_registry`; an explicit empty value turns one off). Nothing published behind a
reference is the first night only as validate.first_night allows: refused here,
before anything is prepared or trained, with the nearest published name.

The deployed version is the one the run is gated against: validate.reference,
evaluate.baseline_model, prepare.keep_splits, then push.registry/push.model_name.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import components
import pipelines
from components.infra import registry, storage
from components.infra.errors import UserError
from pipelines.stages import config_class

KEYED = ("prepare", "train", "evaluate", "export")  # what makes the model
IMAGE_ENV = "VISIONPIPE_STAGE_IMAGE"  # set on every compiled task (pipelines/cluster.py)
# the settings that name the deployed version, derived from push.registry/push.model_name
DERIVED = (
    ("validate", "reference"),
    ("evaluate", "baseline_model"),
    ("prepare", "keep_splits"),
)


@functools.cache
def code_digest() -> str:
    """The code that runs tonight: `sha256:...` of the stage image when it is pinned by
    digest, else `source:` + a hash of every .py file of components/ and pipelines/ as
    installed (their paths and bytes; about 200 files, read once per process)."""
    image = os.environ.get(IMAGE_ENV, "")
    if "@sha256:" in image:
        return image.rsplit("@", 1)[1]
    digest = hashlib.sha256()
    for package in (components, pipelines):
        root = Path(package.__file__).resolve().parent
        for path in sorted(root.rglob("*.py")):
            digest.update(f"{package.__name__}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return "source:" + digest.hexdigest()[:16]


def with_registry(configs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`configs` with prepare.keep_splits, evaluate.baseline_model and validate.reference
    set to push.registry/push.model_name where not given (the registry named once)."""
    push = config_class("push").from_dict(configs.get("push") or {})
    if not push.registry:
        return configs
    reference = f"{push.registry.rstrip('/')}/{push.model_name}"
    out = {name: dict(values or {}) for name, values in configs.items()}
    for section, key in DERIVED:
        out.setdefault(section, {}).setdefault(key, reference)
    return out


def check_first_night(configs: dict[str, dict[str, Any]]) -> None:
    """Refuse, with one line, a night whose references have nothing published behind them
    when validate.first_night does not allow a first night (registry.first_night_refusal)."""
    policy = config_class("validate").from_dict(configs.get("validate") or {}).first_night
    seen = set()
    for section, key in DERIVED:
        value = str((configs.get(section) or {}).get(key) or "").rstrip("/")
        if value and value not in seen:
            seen.add(value)
            refused = registry.first_night_refusal(value, policy, f"{section}.{key}")
            if refused:
                raise UserError(refused)
    reference, setting = choose_reference(configs)
    if not reference and policy == "refuse":
        raise UserError(
            "validate.first_night=refuse but no deployed version is named (push.registry, or "
            "validate.reference); name the registry, or run the first night with --first-night"
        )


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
        "code": code_digest(),
        "visionpipe": components.__version__,
    }
    text = json.dumps(found, sort_keys=True, default=str)
    return {**found, "key": hashlib.sha256(text.encode()).hexdigest()[:16]}


def decide(fingerprint: str, configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{"changed", "message", "reference", "version", "provenance", "registry"} (and
    "refused_by" for a night refused before): whether to run at all. `registry` is
    `<push.registry>/<model_name>` (where the night's outcome is recorded, history.jsonl)
    or None. A reference with nothing published behind it that validate.first_night does
    not allow is refused here (UserError), before anything is prepared or trained."""
    check_first_night(configs)
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
    version = registry.resolve(reference) if reference else None
    out["version"] = version.version if version else None  # what a refusal is against
    if not config_class("validate").from_dict(configs.get("validate") or {}).skip_unchanged:
        return {**out, "message": "validate.skip_unchanged is off (--force): running anyway"}
    refused = refused_before(out["registry"], mine["key"], out["version"])
    if refused:
        return {**out, "changed": False, "refused_by": refused, "message": refused["message"]}
    if not reference:
        return {**out, "message": "no deployed version to compare with: running"}
    if version is None:
        return {**out, "message": f"nothing published at {reference} ({setting}) yet: running"}
    uri = f"{version.uri}/{registry.PROVENANCE}"
    if not storage.exists(uri):
        return {**out, "message": f"{version.label} records no provenance: running"}
    theirs = json.loads(storage.read_bytes(uri))
    if theirs.get("key") == mine["key"]:
        return {
            **out,
            "changed": False,
            "message": f"no change since version {version.version} ({version.label}: the same "
            f"data, fingerprint {fingerprint}, the same resolved configs and code): nothing "
            "trained or published; --force or validate.skip_unchanged=false retrains anyway",
        }
    return {
        **out,
        "message": f"changed since version {version.version}: {differences(mine, theirs)}",
    }


def refused_before(base: str | None, key: str, deployed: str | None) -> dict[str, Any] | None:
    """The last night in `<base>/history.jsonl` refused (by validate or the gate) with the
    same key against the same deployed version, and the message naming it; else None."""
    if not base:
        return None
    for entry in reversed(registry.read_history(base)):
        if entry.get("key") != key or entry.get("version") or entry.get("against") != deployed:
            continue
        run = entry.get("run_id") or entry.get("kfp_run_id") or entry.get("mlflow_run_id")
        reasons = entry.get("reasons") or ["no reason recorded"]
        why = reasons[0] if len(reasons[0]) <= 300 else reasons[0][:300] + " ..."
        return {
            "date": entry.get("date"),
            "run_id": run,
            "decided_by": entry.get("decided_by"),
            "reasons": reasons,
            "message": f"refused before: the night of {entry.get('date')} (run {run}) was "
            f"refused by {entry.get('decided_by')} for the same data, settings and code "
            f"(key {key}) against the same deployed version ({deployed or 'none'}): "
            f"{why} -- nothing trained or published; --force retrains anyway",
        }
    return None


def differences(mine: dict[str, Any], theirs: dict[str, Any]) -> str:
    found = []
    if mine["fingerprint"] != theirs.get("fingerprint"):
        found.append(f"the data (fingerprint {theirs.get('fingerprint')} -> {mine['fingerprint']})")
    for stage in KEYED:
        old = (theirs.get("configs") or {}).get(stage, {})
        keys = sorted(k for k, v in mine["configs"][stage].items() if old.get(k) != v)
        if keys:
            found.append(f"{stage} config ({', '.join(keys[:5])})")
    if mine["code"] != theirs.get("code"):
        found.append(f"the code ({theirs.get('code')} -> {mine['code']})")
    if mine["visionpipe"] != theirs.get("visionpipe"):
        found.append(f"visionpipe {theirs.get('visionpipe')} -> {mine['visionpipe']}")
    return ", ".join(found) or "the key"
