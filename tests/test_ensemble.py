"""train.ensemble: K members averaged in one model that evaluate reports member by member
and export verifies in every format; real training on the digits."""

import json

import numpy as np
import pytest

from components.infra.errors import UserError
from components.train.config import TrainConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def few_digits(tmp_path_factory):
    """Three digits, 24 images each, at 24 px (prepared in-process: no decode pool)."""
    from components.prepare.config import PrepareConfig
    from components.prepare.core import run as prepare
    from tests.conftest import write_digit_images

    root = tmp_path_factory.mktemp("few_digits")
    source = write_digit_images(root / "digits", per_class=24, size=24, formats=("png",))
    prepare(PrepareConfig(image_size=24, workers=1), str(source), root / "dataset")
    return root / "dataset"


FAST = {"epochs": 1, "batch_size": 16, "preflight": "off", "tensorboard_histograms": False}


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory, few_digits):
    """Two members of two epochs on the few digits: what is checked is how members are
    averaged, reported and exported, which holds for any two trained members."""
    from components.train.core import run

    out = tmp_path_factory.mktemp("ensemble") / "model"
    config = TrainConfig(width=8, ensemble=2, **{**FAST, "epochs": 2})
    return out, run(config, few_digits, out)


def test_the_model_is_the_average_of_its_members(ensemble, few_digits):
    from components.vision.models import ensemble_members, load_model
    from components.vision.records import load_split_arrays

    folder, metrics = ensemble
    model = load_model(folder)
    members = ensemble_members(model)
    assert [m.name for m in members] == ["member_0", "member_1"]
    images = load_split_arrays(few_digits, "test", 24)[0].astype(np.float32)
    expected = np.mean([m.predict(images, verbose=0) for m in members], axis=0)
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-6)
    # members differ (their own seeds), each is a complete model folder
    assert not np.allclose(members[0].get_weights()[0], members[1].get_weights()[0])
    for i in range(2):
        assert (folder / "members" / f"member_{i}" / "model.keras").exists()
    assert [m["member"] for m in metrics["ensemble"]["members"]] == [0, 1]
    assert (
        json.loads((folder / "metrics.json").read_text())["val_accuracy"] == metrics["val_accuracy"]
    )


def test_evaluate_reports_each_member_and_export_verifies_the_average(
    tmp_path, ensemble, few_digits
):
    from components.evaluate.config import EvaluateConfig
    from components.evaluate.core import run as evaluate
    from components.export.config import ExportConfig
    from components.export.core import run as export

    folder, _ = ensemble
    result = evaluate(EvaluateConfig(min_accuracy=0.0), few_digits, folder, tmp_path / "e")
    report = result["metrics"]["ensemble"]
    assert [m["member"] for m in report["members"]] == ["member_0", "member_1"]
    assert report["average"]["accuracy"] == result["metrics"]["accuracy"]
    assert report["beats_best_member"] == (
        report["average"]["accuracy"] > report["best_member_accuracy"]
    )
    assert "## Ensemble members" in (tmp_path / "e" / "report.md").read_text()
    exported = export(
        ExportConfig(formats=["tflite", "onnx"], benchmark_runs=2),
        few_digits,
        folder,
        tmp_path / "x",
        tmp_path / "e",
    )
    assert exported["parity"]["onnx"]["passed"] and exported["parity"]["tflite"]["passed"]


def test_kfold_members_leave_out_their_fold(tmp_path):
    from components.prepare.config import PrepareConfig
    from components.prepare.core import run as prepare
    from components.train.ensemble import kfold_members
    from tests.conftest import write_digit_images

    source = write_digit_images(tmp_path / "digits", per_class=30, size=16, formats=("png",))
    dataset = tmp_path / "dataset"
    prepare(PrepareConfig(kfold=2, workers=1), str(source), dataset)
    folds = kfold_members(dataset, 2)
    for train, val in folds:
        assert not set(train) & set(val)
    assert set(folds[0][1]) == set(folds[1][0]) and set(folds[1][1]) == set(folds[0][0])
    with pytest.raises(UserError, match="has 2 folds but train.ensemble=3"):
        kfold_members(dataset, 3)
    from components.train.core import run

    metrics = run(
        TrainConfig(width=8, ensemble=2, ensemble_from="kfold", **FAST),
        dataset,
        tmp_path / "model",
    )
    assert metrics["ensemble"]["from"] == "kfold" and len(metrics["ensemble"]["members"]) == 2


def dies_at_member(index, calls):
    """The train stage's one-model run that is killed as member `index` starts."""
    from components.train.core import run

    def fit_one(config, dataset, folder, **kwargs):
        if folder.name == f"member_{index}":
            raise KeyboardInterrupt("killed")
        calls.append(folder.name)
        return run(config, dataset, folder, **kwargs)

    return fit_one


def test_a_rerun_with_another_config_does_not_reuse_stale_members(tmp_path, few_digits):
    """A run killed after member 0, then a run with another width into the same output:
    member 0 is trained again at the new width (the resume key was 'ensemble-2-seeds',
    the same for any config or data, and the width-4 member was averaged in)."""
    from components.train.core import dataset_identity, run
    from components.train.ensemble import run_ensemble
    from components.vision.models import ensemble_members, load_model

    out = tmp_path / "model"
    first = TrainConfig(width=4, ensemble=2, **FAST)
    with pytest.raises(KeyboardInterrupt):
        run_ensemble(first, few_digits, out, None, False, dies_at_member(1, []),
                     dataset_identity(few_digits))  # fmt: skip
    second = TrainConfig(width=8, ensemble=2, **FAST)
    run(second, few_digits, out)
    members = ensemble_members(load_model(out))
    assert [m.get_layer("block0_conv0").filters for m in members] == [8, 8]


def test_finished_members_outlive_the_pod(tmp_path, few_digits, gcs_emulator):
    """A member finished before the kill is kept in the bucket (`<output>.finished/`); the
    retried task on a fresh disk (another local folder, same gs:// output) fetches it and
    trains only the rest; the copies are removed once the ensemble is whole. In-process:
    two calls with nothing local in common stand for two pods."""
    from components.infra import storage
    from components.train.core import dataset_identity
    from components.train.ensemble import run_ensemble

    config = TrainConfig(width=4, ensemble=3, **FAST)
    state_uri = f"{gcs_emulator}/ensemble/model"
    identity = dataset_identity(few_digits)
    calls = []
    with pytest.raises(KeyboardInterrupt):
        run_ensemble(config, few_digits, tmp_path / "pod1" / "model", state_uri, False,
                     dies_at_member(2, calls), identity)  # fmt: skip
    assert calls == ["member_0", "member_1"]
    assert storage.exists(f"{state_uri}.finished/member_1.json")
    calls.clear()
    metrics = run_ensemble(config, few_digits, tmp_path / "pod2" / "model", state_uri, False,
                           dies_at_member(99, calls), identity)  # fmt: skip
    assert calls == ["member_2"]  # members 0 and 1 came from the bucket
    assert len(metrics["ensemble"]["members"]) == 3
    assert (tmp_path / "pod2" / "model" / "members" / "member_0" / "model.keras").is_file()
    assert list(storage.list_files(f"{state_uri}.finished")) == []
