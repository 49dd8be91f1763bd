"""The validate stage on real digits: night 1 publishes a model trained on 80% of them;
night 2 sees the rest, clean or with one kind of trouble, each of which must be caught
and named, while the clean night must not be flagged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import validate_nights as nights
from benchmarks.validate_nights import flagged, night_one, poison, publish, write_night
from components.infra.errors import UserError
from components.prepare.config import PrepareConfig
from components.validate.config import ValidateConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, digits_dir):
    """Night 1 (80% of the digits): prepared, trained, evaluated and pushed like the
    pipeline does."""
    root = tmp_path_factory.mktemp("night1")
    return publish(root, write_night(root / "data", digits_dir, everything=False), 8, 0)


def validate_night(tmp_path, data: Path, reference: str, **settings):
    """Night 2's data prepared with keep_splits, then validated (warn: the record is read)."""
    return nights.validate_night(tmp_path, data, reference, **settings)


def test_a_clean_night_is_not_flagged(tmp_path, digits_dir, deployed):
    result = validate_night(tmp_path, write_night(tmp_path / "data", digits_dir), deployed)
    assert result["compared"] and result["version"] == "night1"
    assert result["anomalies"] == [] and result["decision"] == "pass", result["anomalies"]
    counts = result["counts"]
    assert counts["new"] > 300 and counts["known"] > 1400 and counts["relabelled"] == 0
    verdicts = {c["check"]: c["verdict"] for c in result["checks"]}
    assert set(verdicts.values()) == {"pass"}, verdicts  # every check ran
    saved = json.loads((tmp_path / "validation" / "anomalies.json").read_text())
    assert saved["decision"] == "pass" and len(saved["checks"]) == 7
    assert "decision: pass" in (tmp_path / "validation" / "report.md").read_text()


def test_new_images_of_two_classes_swapped_are_named(tmp_path, digits_dir, deployed):
    data = write_night(tmp_path / "data", digits_dir)
    poison("swap_3_8", data)
    result = validate_night(tmp_path, data, deployed)
    lines = flagged(result)["label_agreement"]
    assert any("labelled '8'" in line and "as '3'" in line for line in lines), lines
    assert any("labelled '3'" in line and "as '8'" in line for line in lines), lines
    assert len(lines) == 2  # no other class is accused
    assert result["decision"] == "warn"
    report = (tmp_path / "validation" / "report.md").read_text()
    anomalies = report.split("## Anomalies", 1)[1].split("\n## ", 1)[0]
    assert all(line in anomalies for line in lines) and "None." not in anomalies


def test_noise_pictures_are_out_of_distribution(tmp_path, digits_dir, deployed):
    data = write_night(tmp_path / "data", digits_dir)
    poison("noise", data)
    result = validate_night(tmp_path, data, deployed)
    lines = flagged(result)["out_of_distribution"]
    assert len(lines) == 1 and "new images" in lines[0] and "noise-" in lines[0]
    ood = next(c for c in result["checks"] if c["check"] == "out_of_distribution")
    assert sum(Path(f["uri"]).name.startswith("noise-") for f in ood["files"]) >= 120
    digits = sum(Path(f["uri"]).name.startswith("digit_") for f in ood["files"])
    assert digits <= 0.06 * ood["detail"]["new_images"]  # about the reference's own far rate


def test_known_images_moved_to_other_classes_are_listed(tmp_path, digits_dir, deployed):
    data = write_night(tmp_path / "data", digits_dir)
    known = [p for p in sorted((data / "1").glob("*.png")) if night_one(p.name)][:100]
    poison("relabel_known", data)
    result = validate_night(tmp_path, data, deployed)
    lines = flagged(result)["changed_labels"]
    assert "100 images" in lines[0] and "from '1' to '7'" in lines[0]
    changed = next(c for c in result["checks"] if c["check"] == "changed_labels")
    assert {Path(f["uri"]).name for f in changed["files"]} == {p.name for p in known}
    assert result["counts"]["relabelled"] == 100


def test_a_new_class_and_a_vanished_class_are_schema_anomalies(tmp_path, digits_dir, deployed):
    data = write_night(tmp_path / "data", digits_dir)
    poison("vanished_class", data)
    poison("new_class", data)
    result = validate_night(tmp_path, data, deployed)
    found = flagged(result)
    assert any("added" in line and "x" in line for line in found["schema"])
    assert any("removed" in line and "9" in line for line in found["schema"])
    assert any("'9' has 0 images" in line for line in found["class_counts"])
    # accepted as a deliberate change: recorded, not an anomaly that stops the run
    accepted = validate_night(
        tmp_path / "accepted", data, deployed, accept=["schema", "class_counts"]
    )
    assert accepted["anomalies"] == [] and accepted["decision"] == "pass"
    assert any(line.startswith("schema") for line in accepted["accepted"])
    assert accepted["accept"] == ["schema", "class_counts"]


def test_a_brightness_shift_is_named(tmp_path, digits_dir, deployed):
    data = write_night(tmp_path / "data", digits_dir)
    poison("brighter", data)
    result = validate_night(tmp_path, data, deployed)
    lines = flagged(result)["image_stats"]
    assert any("brightness" in line for line in lines), lines


def test_stop_refuses_with_one_line_naming_each_anomaly(tmp_path, digits_dir, deployed):
    from components.prepare.core import run as prepare
    from components.validate.core import run

    data = write_night(tmp_path / "data", digits_dir)
    shutil.rmtree(data / "5")
    prepare(PrepareConfig(keep_splits=deployed), str(data), tmp_path / "dataset")
    with pytest.raises(UserError) as caught:
        run(ValidateConfig(), tmp_path / "dataset", tmp_path / "validation", deployed)
    message = str(caught.value)
    assert "classes removed" in message and "'5'" in message and "nothing was trained" in message
    assert "\n" not in message
    # the record is written before the refusal
    saved = json.loads((tmp_path / "validation" / "anomalies.json").read_text())
    assert saved["decision"] == "stop" and saved["anomalies"]


def test_the_first_night_has_nothing_to_compare_with(tmp_path, digits_dataset):
    from components.validate.core import run

    reference = str(tmp_path / "registry" / "visionpipe-classifier")
    result = run(ValidateConfig(), digits_dataset, tmp_path / "validation", reference)
    assert result["compared"] is False and result["decision"] == "first_night"
    assert "first night" in result["note"]


def test_config_refuses_unknown_checks_to_accept():
    with pytest.raises(UserError, match="accept"):
        ValidateConfig.from_dict({"accept": ["schmea"]})


def test_an_accepted_new_class_is_gated_on_the_thresholds(tmp_path, digits_dir, deployed):
    """A deliberate new class passes validate with validate.accept; evaluate then cannot
    pair the two models (the deployed one knows one class fewer) and says so, instead of
    refusing the run."""
    from components.evaluate.config import EvaluateConfig
    from components.evaluate.core import run as evaluate
    from components.train.config import TrainConfig
    from components.train.core import run as train

    data = write_night(tmp_path / "data", digits_dir)
    poison("new_class", data)
    found = validate_night(tmp_path, data, deployed, accept=["schema"])
    assert found["decision"] == "pass" and any("added" in a for a in found["accepted"])
    # one epoch at width 8, no preflight: what is tested is that evaluate cannot pair a
    # model of 11 classes with the deployed one of 10 and says so, whatever its accuracy
    # (min_accuracy=0); the checklist is test_preflight.py's
    train(TrainConfig(epochs=1, width=8, preflight="off"), tmp_path / "dataset", tmp_path / "m")
    config = EvaluateConfig(min_accuracy=0.0, baseline_model=deployed)
    result = evaluate(config, tmp_path / "dataset", tmp_path / "m", tmp_path / "evaluation")
    baseline = result["blessing"]["baseline"]
    assert baseline["classes_changed"] == "added x" and baseline["comparable"] is False
    assert result["blessing"]["blessed"] is True
    report = (tmp_path / "evaluation" / "report.md").read_text()
    assert "the classes changed since (added x)" in report


def test_the_same_data_again_has_nothing_new_and_passes(tmp_path, digits_dir, deployed):
    """A night with no new image (the same data, another seed): the checks of the new
    images have nothing that could be wrong and pass, saying so (not skipped: nothing was
    left unchecked); nothing crashes on the empty group."""
    data = write_night(tmp_path / "data", digits_dir, everything=False)
    result = validate_night(tmp_path, data, deployed, on_skipped="stop")
    assert result["counts"]["new"] == 0 and result["decision"] == "pass"
    assert result["skipped"] == []
    checks = {c["check"]: c for c in result["checks"]}
    for name in ("class_drift", "image_stats", "out_of_distribution", "label_agreement"):
        assert checks[name]["verdict"] == "pass", checks[name]
        assert checks[name]["detail"]["note"] == "no new images: nothing to check"
    assert checks["changed_labels"]["verdict"] == "pass" and checks["schema"]["verdict"] == "pass"


def test_a_rolling_bucket_is_still_checked_against_the_published_sample(
    tmp_path, digits_dir, deployed
):
    """Tonight's bucket holds the new images and only 1 in 20 of night 1's: too few of the
    deployed version's own images for the model checks before (test images < 20). They
    run on the sample the version published. The classes all shrank by design (a rolling
    bucket), which class_counts names: accepted here, it is not what is tested."""
    data = write_night(tmp_path / "data", digits_dir)
    old = [p for p in sorted(data.rglob("*.png")) if night_one(p.name)]
    for n, path in enumerate(old):
        if n % 20:
            path.unlink()
    result = validate_night(tmp_path, data, deployed, accept=["class_counts"], on_skipped="stop")
    assert result["counts"]["known"] < 100 and result["counts"]["new"] > 300
    assert result["reference_sample"] == "published"
    assert result["sample"]["test"]["images"] >= 200  # the sample, not today's few
    verdicts = {c["check"]: c["verdict"] for c in result["checks"]}
    assert verdicts["out_of_distribution"] == verdicts["label_agreement"] == "pass", verdicts
    assert verdicts["image_stats"] == "pass" and result["skipped"] == []
    assert result["decision"] == "pass"


def test_a_skipped_check_is_named_and_never_passes(tmp_path, digits_dir, deployed):
    """Ten new images are too few to test class shares or image statistics: those checks
    are skipped with their reason, named in the record, the console and the report, and
    the night is not "pass"; with on_skipped=stop it is refused like an anomaly."""
    from components.validate.core import run

    data = write_night(tmp_path / "data", digits_dir)
    new = [p for p in sorted(data.rglob("*.png")) if not night_one(p.name)]
    for path in new[10:]:
        path.unlink()
    result = validate_night(tmp_path, data, deployed)
    assert result["counts"]["new"] == 10
    assert result["decision"] == "warn" and result["anomalies"] == []
    names = [line.split(":", 1)[0] for line in result["skipped"]]
    assert names == ["class_drift", "image_stats"]
    assert "fewer than validate.min_new_images=30" in result["skipped"][0]
    saved = json.loads((tmp_path / "validation" / "anomalies.json").read_text())
    assert saved["skipped"] == result["skipped"] and saved["on_skipped"] == "warn"
    report = (tmp_path / "validation" / "report.md").read_text()
    assert "## Skipped checks" in report and "2 checks skipped" in report
    assert "skipped (validate.on_skipped=warn): class_drift" in report
    with pytest.raises(UserError) as caught:
        run(
            ValidateConfig(on_skipped="stop"),
            tmp_path / "dataset",
            tmp_path / "stopped",
            deployed,
        )
    line = str(caught.value)
    assert "2 checks skipped (validate.on_skipped=stop)" in line and "\n" not in line
    assert "skipped class_drift:" in line and "validate.on_skipped=warn" in line
    assert json.loads((tmp_path / "stopped" / "anomalies.json").read_text())["decision"] == "stop"


def test_nothing_published_is_the_first_night_only_as_configured(tmp_path, digits_dataset):
    """A registry whose only model is another name: auto and refuse stop with the nearest
    name; allow is the first night; a model folder with only history.jsonl (a refused
    first night) is nothing deployed yet, not an unreadable reference."""
    from components.infra import registry
    from components.validate.core import run

    base = tmp_path / "registry"
    (base / "visionpipe-classifier").mkdir(parents=True)
    (base / "visionpipe-classifier" / "latest.json").write_text("{}")
    wrong = str(base / "visionpipe-classifer")
    for policy in ("auto", "refuse"):
        with pytest.raises(UserError, match="nearest name .* is 'visionpipe-classifier'"):
            run(ValidateConfig(first_night=policy), digits_dataset, tmp_path / "v", wrong)
    allowed = run(ValidateConfig(first_night="allow"), digits_dataset, tmp_path / "v", wrong)
    assert allowed["decision"] == "first_night"
    refused_first = tmp_path / "fresh" / "visionpipe-classifier"
    registry.append_history(str(refused_first), {"blessed": False})
    found = run(ValidateConfig(), digits_dataset, tmp_path / "v2", str(refused_first))
    assert found["decision"] == "first_night" and "first night" in found["note"]
