"""train.cross_validate: each fold is scored by a model that chose its epoch on an inner
split of the training folds, never on the fold it is scored on; prepare's kfold.csv is
used as written; a killed run resumes with the folds already scored. Real training on a
small folder of three digit classes (24 images each, 24 px, width 4, one epoch): the
claims are about which images each model saw, not how good it is, so the smallest
model that trains is enough."""

import json

import pytest

from components.train.config import TrainConfig

pytestmark = pytest.mark.slow

FAST = {"epochs": 1, "width": 4, "batch_size": 16, "preflight": "off",
        "tensorboard_histograms": False}  # fmt: skip


@pytest.fixture(scope="module")
def kfold_digits(tmp_path_factory):
    """Three digit classes prepared with prepare.kfold=3 (splits/kfold.csv)."""
    from components.prepare.config import PrepareConfig
    from components.prepare.core import run as prepare
    from tests.conftest import write_digit_images

    root = tmp_path_factory.mktemp("kfold_digits")
    source = write_digit_images(root / "digits", per_class=24, size=24, formats=("png",))
    prepare(PrepareConfig(image_size=24, kfold=3), str(source), root / "dataset")
    return root / "dataset"


def kfold_rows(dataset):
    import csv

    with open(dataset / "splits" / "kfold.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_each_fold_is_scored_on_images_that_did_not_choose_its_epoch(tmp_path, kfold_digits):
    from components.train.core import run

    out = tmp_path / "model"
    metrics = run(TrainConfig(cross_validate=3, **FAST), kfold_digits, out)
    report = json.loads((out / "cross_validation.json").read_text())
    rows = kfold_rows(kfold_digits)
    assert "kfold.csv (prepare.kfold=3)" in report["source"]  # prepare's folds, as written
    pool = {r["uri"] for r in rows}
    for index, fold in enumerate(report["per_fold"]):
        split = json.loads((out / "folds" / f"fold_{index}" / "split.json").read_text())
        train, selection, scored = (set(split[k]) for k in ("train", "selection", "scored"))
        # the held-out fold is exactly kfold.csv's fold, and no image of it trained the
        # model or chose its epoch
        assert scored == {r["uri"] for r in rows if r["fold"] == str(index)}
        assert not (train | selection) & scored and not train & selection
        assert train | selection | scored == pool
        assert fold["val_images"] == len(scored) and fold["selection_images"] == len(selection)
        # the fold model's own val numbers (metrics.json: the kept epoch, on the inner
        # split) are reported as the selection score, apart from the held-out score
        chosen = json.loads((out / "folds" / f"fold_{index}" / "metrics.json").read_text())
        assert fold["selection_val_accuracy"] == chosen["val_accuracy"]
        assert 0.0 <= fold["val_accuracy"] <= 1.0 and fold["val_loss"] > 0
        assert not (out / "folds" / f"fold_{index}" / "model.keras").exists()
    scored_sets = [json.loads((out / "folds" / f"fold_{i}" / "split.json").read_text())["scored"]
                   for i in range(3)]  # fmt: skip
    assert sorted(u for s in scored_sets for u in s) == sorted(pool)  # each scored once
    assert metrics["cross_validation"]["mean"] == report["mean"]
    assert set(report["mean"]) == {"val_accuracy", "val_loss", "selection_val_accuracy"}
    assert (out / "model.keras").is_file()  # the model itself, after the folds


def test_a_killed_cross_validation_resumes_with_the_folds_already_scored(tmp_path, kfold_digits):
    """Killed as fold 1 starts (a KeyboardInterrupt from the train stage's own run, the
    only thing not real here), the same command scores only fold 1, then fits the model.
    Two folds (kfold.csv has three, so the folds are made here: the other source path)."""
    from components.train.core import dataset_identity
    from components.train.core import run as train_one
    from components.train.crossval import run_cross_validation

    calls = []

    def dies_at(name):
        def fit_one(config, dataset, folder, **kwargs):
            if folder.name == name:
                raise KeyboardInterrupt("killed")
            calls.append(folder.name)
            return train_one(config, dataset, folder, **kwargs)

        return fit_one

    config = TrainConfig(cross_validate=2, **FAST)
    out, identity = tmp_path / "model", dataset_identity(kfold_digits)
    with pytest.raises(KeyboardInterrupt):
        run_cross_validation(config, kfold_digits, out, None, False, dies_at("fold_1"), identity)
    assert calls == ["fold_0"] and not out.exists()
    calls.clear()
    metrics = run_cross_validation(config, kfold_digits, out, None, False, dies_at("none"),
                                   identity)  # fmt: skip
    assert calls == ["fold_1", "final"]  # fold 0 was scored before the kill
    assert len(metrics["cross_validation"]["per_fold"]) == 2
    assert "StratifiedGroupKFold(k=2" in metrics["cross_validation"]["source"]
    assert (out / "folds" / "fold_0" / "score.json").is_file()
