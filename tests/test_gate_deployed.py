"""The gate against the deployed model: a registry reference as evaluate.baseline_model."""

import json

import pytest

from components.evaluate.config import EvaluateConfig
from components.prepare.config import PrepareConfig
from components.push.config import PushConfig
from components.train.config import TrainConfig

pytestmark = pytest.mark.slow


def publish(registry, model, dataset, version, tmp_path, evaluation):
    """Push `model` (with its dataset's split manifests) the way the pipeline does.

    `evaluation` is an evaluate folder of `model` made once and shared (the session's
    `evaluation` for `trained_model`, `weak_evaluation` for `weak_model`): push copies only
    its metrics.json, blessing.json and calibration.json, and the gate under test never
    reads them back (it re-measures the deployed model on today's test split), so a fresh
    evaluate per publish would cost seconds and prove nothing more."""
    from components.push.core import run as push

    export = tmp_path / f"export-{version}"
    export.mkdir()
    (export / "model.onnx").write_bytes(version.encode())
    (export / "parity.json").write_text(json.dumps({"onnx": {"passed": True}}))
    push(
        PushConfig(serving="none", registry=str(registry), version=version),
        export,
        evaluation,
        model,
        dataset,
    )


@pytest.fixture(scope="module")
def weak_model(tmp_path_factory, digits_dataset):
    """One epoch at width 4: far below `trained_model` (8 epochs, width 16) on the same
    split, which is all the gate needs. preflight off: its overfit-one-batch check is
    tested in test_preflight.py and would only add 100 steps here."""
    from components.train.core import run as fit

    out = tmp_path_factory.mktemp("weak") / "model"
    fit(TrainConfig(epochs=1, width=4, preflight="off"), digits_dataset, out)
    return out


@pytest.fixture(scope="module")
def weak_evaluation(tmp_path_factory, digits_dataset, weak_model):
    """`weak_model` evaluated once with max_listed=3: what test_max_listed_governs_both_
    report_formats reads, and the evaluation published beside it as version 1.11."""
    from components.evaluate.core import run

    out = tmp_path_factory.mktemp("weak-evaluation") / "e"
    run(EvaluateConfig(min_accuracy=0.0, max_listed=3), digits_dataset, weak_model, out)
    return out


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_a_candidate_worse_than_the_deployed_version_is_not_blessed(
    tmp_path, digits_dataset, trained_model, evaluation, weak_model, weak_evaluation, where,
    request,
):  # fmt: skip
    from components.evaluate.core import run

    registry = (
        str(tmp_path / "registry")
        if where == "folder"
        else request.getfixturevalue("s3_server") + f"/gate-{tmp_path.name}"
    )
    publish(registry, trained_model, digits_dataset, "1.10", tmp_path, evaluation)
    reference = f"{registry}/visionpipe-classifier"
    config = EvaluateConfig(min_accuracy=0.0, baseline_model=reference)
    result = run(config, digits_dataset, weak_model, tmp_path / "evaluation")
    blessing = result["blessing"]
    assert blessing["blessed"] is False
    deployed = blessing["baseline"]
    assert (
        deployed["model"] == "deployed visionpipe-classifier 1.10" and deployed["version"] == "1.10"
    )
    # the same split: no test image was in the deployed model's train or val split
    assert deployed["images"] == result["metrics"]["count"]
    assert deployed["excluded_seen_by_baseline"] == 0
    reason = next(r for r in blessing["reasons"] if "deployed" in r)
    assert "worse than deployed visionpipe-classifier 1.10's" in reason
    assert f"{deployed['baseline']['accuracy']:.4f}" in reason
    assert f"{deployed['candidate']['accuracy']:.4f}" in reason
    report = (tmp_path / "evaluation" / "report.md").read_text()
    assert "## Against the baseline" in report and "deployed visionpipe-classifier 1.10" in report
    assert "Against the baseline" in (tmp_path / "evaluation" / "report.html").read_text()

    # the deployed model against itself passes; latest moved to a newer version is used
    same = run(config, digits_dataset, trained_model, tmp_path / "evaluation-same")
    assert same["blessing"]["blessed"] is True
    publish(registry, weak_model, digits_dataset, "1.11", tmp_path, weak_evaluation)
    against_weak = run(config, digits_dataset, weak_model, tmp_path / "evaluation-weak")
    assert against_weak["blessing"]["baseline"]["version"] == "1.11"
    assert against_weak["blessing"]["blessed"] is True
    # a specific version can be named
    pinned = EvaluateConfig(min_accuracy=0.0, baseline_model=f"{reference}/1.10")
    assert run(pinned, digits_dataset, weak_model, tmp_path / "e3")["blessing"]["blessed"] is False


def test_test_images_the_deployed_model_trained_on_are_left_out(
    tmp_path, tmp_path_factory, digits_dataset, trained_model, evaluation
):
    """The deployed version was prepared with another split: the test images it trained or
    validated on are not used to compare the two models. (The published evaluation files
    are the session's; the gate reads only the version's model and split manifests.)"""
    from components.evaluate.core import run
    from components.prepare.core import run as prepare

    other = tmp_path_factory.mktemp("other-split") / "dataset"
    prepare(PrepareConfig(seed=1), "builtin:digits", other)
    registry = tmp_path / "registry"
    publish(registry, trained_model, other, "v1", tmp_path, evaluation)
    config = EvaluateConfig(
        min_accuracy=0.0, baseline_model=str(registry / "visionpipe-classifier")
    )
    result = run(config, digits_dataset, trained_model, tmp_path / "evaluation")
    deployed = result["blessing"]["baseline"]
    excluded, kept = deployed["excluded_seen_by_baseline"], deployed["images"]
    assert excluded + kept == result["metrics"]["count"]
    assert excluded > 100 and kept > 20  # ~85% of a fresh test split was its train/val


def test_nothing_deployed_yet_gates_on_thresholds_and_records_it(
    tmp_path, digits_dataset, trained_model
):
    from components.evaluate.core import run

    config = EvaluateConfig(
        min_accuracy=0.0, baseline_model=str(tmp_path / "registry" / "visionpipe-classifier")
    )
    result = run(config, digits_dataset, trained_model, tmp_path / "evaluation")
    assert result["blessing"]["blessed"] is True
    assert result["blessing"]["baseline"]["found"] is False
    assert "No model is published at" in (tmp_path / "evaluation" / "report.md").read_text()


def test_max_listed_governs_both_report_formats(weak_evaluation):
    import csv

    e = weak_evaluation  # evaluate with max_listed=3 on the one-epoch model
    with open(e / "errors.csv") as handle:
        wrong = len(list(csv.DictReader(handle)))
    assert wrong > 3  # a one-epoch model: many mistakes, every one in the CSV
    markdown = (e / "report.md").read_text()
    html = (e / "report.html").read_text()
    section = markdown.split("## Misclassified test images", 1)[1].split("\n## ", 1)[0]
    assert section.count("\n| ") == 1 + 3  # the header and three rows
    assert f"The first 3 of {wrong} rows" in section and f"The first 3 of {wrong} rows" in html
