"""The run key and the night's first decisions (pipelines/runkey.py), without a pipeline:
the code in the key, remembered refusals and --force, the registry named once, and the
first night told apart from a misspelled model name. Registries are real folders that
push wrote (a tiny export: the decisions read the registry's files, not the model)."""

from __future__ import annotations

import json
import re

import pytest

from components.infra import registry
from components.infra.errors import UserError
from pipelines import runkey
from pipelines.cli import build_parser, forced
from pipelines.stages import STAGES


def configs(**sections) -> dict[str, dict]:
    return {stage: dict(sections.get(stage, {})) for stage in STAGES}


def publish(root, model_name="visionpipe-classifier", provenance=None) -> str:
    """A version pushed to `root` the way push publishes one (tiny export files)."""
    from components.push.config import PushConfig
    from components.push.core import run as push

    export, evaluation = root / "export", root / "evaluation"
    export.mkdir(parents=True, exist_ok=True)
    evaluation.mkdir(exist_ok=True)
    (export / "model.onnx").write_bytes(b"onnx")
    (export / "parity.json").write_text(json.dumps({"onnx": {"passed": True}}))
    (evaluation / "blessing.json").write_text(json.dumps({"blessed": True, "reasons": []}))
    config = PushConfig(serving="none", registry=str(root / "registry"), model_name=model_name)
    return push(config, export, evaluation, provenance=provenance)["version"]


def test_the_key_holds_the_code(monkeypatch):
    """A release (other code, same data and settings) is another key, and the record
    says the code changed; on a cluster the image digest is the code."""
    runkey.code_digest.cache_clear()
    mine = runkey.provenance("fp", configs())
    assert mine["code"].startswith("source:") and len(mine["code"]) == len("source:") + 16
    assert runkey.provenance("fp", configs())["key"] == mine["key"]  # stable
    monkeypatch.setattr(runkey, "code_digest", lambda: "source:0123456789abcdef")
    released = runkey.provenance("fp", configs())
    assert released["key"] != mine["key"]
    assert "the code (source:" in runkey.differences(released, mine)
    monkeypatch.undo()
    pinned = "europe-docker.pkg.dev/p/r/visionpipe-cpu@sha256:" + "ab" * 32
    monkeypatch.setenv(runkey.IMAGE_ENV, pinned)
    runkey.code_digest.cache_clear()
    assert runkey.code_digest() == "sha256:" + "ab" * 32
    monkeypatch.setenv(runkey.IMAGE_ENV, "visionpipe/visionpipe-cpu:1.0")  # a tag moves
    runkey.code_digest.cache_clear()
    assert runkey.code_digest() == mine["code"]
    runkey.code_digest.cache_clear()


def test_the_registry_is_named_once():
    found = runkey.with_registry(
        configs(push={"registry": "gs://b/models/", "model_name": "m"}, evaluate={"alpha": 0.1})
    )
    assert found["prepare"]["keep_splits"] == "gs://b/models/m"
    assert found["evaluate"] == {"alpha": 0.1, "baseline_model": "gs://b/models/m"}
    assert found["validate"]["reference"] == "gs://b/models/m"
    explicit = runkey.with_registry(
        configs(push={"registry": "r"}, prepare={"keep_splits": ""}, validate={"reference": "d"})
    )
    assert explicit["prepare"]["keep_splits"] == ""  # explicitly off stays off
    assert explicit["validate"]["reference"] == "d"
    assert runkey.with_registry(configs()) == configs()  # no registry: nothing derived


def test_a_misspelled_model_name_is_refused_with_the_nearest_name(tmp_path):
    publish(tmp_path)
    publish(tmp_path, model_name="flowers")
    base = str(tmp_path / "registry")
    for policy in ("refuse", "auto"):  # auto: the registry holds other models
        wrong = configs(
            push={"registry": base, "model_name": "visionpipe-clasifier"},
            validate={"first_night": policy},
        )
        with pytest.raises(UserError) as caught:
            runkey.decide("fp", runkey.with_registry(wrong))
        line = str(caught.value)
        assert "\n" not in line and "nothing is published at" in line
        assert "'visionpipe-classifier'" in line and "--first-night" in line
    allowed = configs(
        push={"registry": base, "model_name": "visionpipe-clasifier"},
        validate={"first_night": "allow"},
    )
    assert runkey.decide("fp", runkey.with_registry(allowed))["changed"] is True


def test_the_first_night_of_a_fresh_registry(tmp_path):
    """`make run` on a fresh clone: no registry configured by the user (the CLI's default
    under the output), nothing there; auto runs it, a scheduled config refuses it."""
    base = str(tmp_path / "registry")
    fresh = configs(push={"registry": base})
    assert runkey.decide("fp", runkey.with_registry(fresh))["changed"] is True
    scheduled = configs(push={"registry": base}, validate={"first_night": "refuse"})
    with pytest.raises(UserError, match=re.escape(f"{base} holds no published model")):
        runkey.decide("fp", runkey.with_registry(scheduled))


def test_a_refused_first_night_is_nothing_deployed_yet(tmp_path):
    """A model folder holding only history.jsonl (and a claimed, unfinished version) has
    nothing published: auto still runs the first night, validate and keep_splits read
    it as nothing there, and refuse says how many nights it records."""
    from components.prepare.keep import splits_folder

    model = tmp_path / "registry" / "visionpipe-classifier"
    registry.append_history(str(model), {"decided_by": "evaluate", "blessed": False})
    (model / "20260101-000000-abc").mkdir()
    (model / "20260101-000000-abc" / registry.CLAIM).write_text("{}")
    (model / "20260101-000000-abc" / "model.onnx").write_bytes(b"half copied")
    assert registry.nothing_published(str(model))
    assert splits_folder(str(model))[0] is None
    night = configs(push={"registry": str(tmp_path / "registry")})
    assert runkey.decide("fp", runkey.with_registry(night))["changed"] is True
    night["validate"]["first_night"] = "refuse"
    with pytest.raises(UserError, match="records 1 nights, none published"):
        runkey.decide("fp", runkey.with_registry(night))
    (model / "notes.txt").write_text("someone else's file")
    assert not registry.nothing_published(str(model))


def test_a_refused_night_is_not_trained_again_unless_forced(tmp_path):
    """The same key refused by the gate against the same deployed version: nothing is
    trained, and the run names the night that refused it. Another deployed version, other
    code, or --force: trained again."""
    base = tmp_path / "registry"
    night = runkey.with_registry(configs(push={"registry": str(base)}))
    mine = runkey.provenance("fp", night)
    version = publish(tmp_path, provenance=runkey.provenance("older", night))
    reference = f"{base}/visionpipe-classifier"
    refusal = {
        "date": "2026-12-01T03:00:00Z",
        "decided_by": "evaluate",
        "run_id": "20261201-030000-abcdef",
        "key": mine["key"],
        "against": version,
        "blessed": False,
        "reasons": ["accuracy 0.81 below evaluate.min_accuracy 0.9"],
    }
    registry.append_history(reference, refusal)
    found = runkey.decide("fp", night)
    assert found["changed"] is False and found["refused_by"]["run_id"] == refusal["run_id"]
    assert "20261201-030000-abcdef" in found["message"] and "evaluate" in found["message"]
    assert "accuracy 0.81" in found["message"] and "--force" in found["message"]
    assert runkey.decide("other data", night)["changed"] is True
    registry.append_history(reference, {**refusal, "against": "an older version"})
    assert runkey.decide("fp", night)["changed"] is False  # the latest matching one counts
    args = build_parser().parse_args(["run", "--force"])
    forced_night = runkey.with_registry(
        configs(push={"registry": str(base)}, validate={"skip_unchanged": False})
    )
    assert "validate.skip_unchanged=false" in forced(args)
    assert runkey.decide("fp", forced_night)["changed"] is True


def test_the_first_night_flag_is_a_setting():
    args = build_parser().parse_args(["run", "--first-night"])
    assert forced(args) == ["validate.first_night=allow"]
    args = build_parser().parse_args(["submit", "--host", "h", "--first-night"])
    assert forced(args) == ["validate.first_night=allow"]
