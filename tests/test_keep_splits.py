"""prepare.keep_splits: grown data keeps every known image's split; only new ones are allocated."""

import csv
import json

import pytest

from components.infra.errors import UserError
from components.prepare.config import PrepareConfig
from components.prepare.core import run
from tests.conftest import write_digit_images


def split_of(dataset):
    found = {}
    for split in ("train", "val", "test"):
        with open(dataset / "splits" / f"{split}.csv") as handle:
            for row in csv.DictReader(handle):
                found[row["sha256"]] = split
    return found


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """Yesterday's data (40 images per class) prepared; today's (60 per class) on disk."""
    root = tmp_path_factory.mktemp("keep")
    before = write_digit_images(root / "before", classes=(0, 1, 7), per_class=40)
    after = write_digit_images(root / "after", classes=(0, 1, 7), per_class=60)
    run(PrepareConfig(), str(before), root / "dataset-before")
    return root, after


def test_known_images_keep_their_split_and_new_ones_go_to_all_three(grown):
    root, after = grown
    earlier = split_of(root / "dataset-before")
    # a different seed would reshuffle everything without keep_splits
    config = PrepareConfig(seed=7, keep_splits=str(root / "dataset-before"))
    stats = run(config, str(after), root / "dataset-after")
    now = split_of(root / "dataset-after")
    assert {sha: now[sha] for sha in earlier} == earlier  # nothing known moved
    new = {sha: split for sha, split in now.items() if sha not in earlier}
    assert len(new) == 60 and set(new.values()) == {"train", "val", "test"}
    summary = stats["keep_splits"]
    assert summary["found"] and sum(summary["kept"].values()) == len(earlier)
    assert summary["new"] == {
        s: sum(v == s for v in new.values()) for s in ("train", "val", "test")
    }
    # the class ratios hold for old and new together: within one image per class and split
    per = stats["counts"]["per_class_and_split"]
    for name in ("digit_0", "digit_1", "digit_7"):
        assert abs(per["test"][name] - 0.15 * 60) <= 1 and abs(per["val"][name] - 0.15 * 60) <= 1


def test_without_keep_splits_a_reshuffle_moves_known_images(grown):
    """The control: the same grown data split afresh puts known images elsewhere."""
    root, after = grown
    earlier = split_of(root / "dataset-before")
    run(PrepareConfig(seed=7), str(after), root / "dataset-fresh")
    now = split_of(root / "dataset-fresh")
    assert sum(now[sha] != split for sha, split in earlier.items()) > 10


def test_a_group_joining_two_kept_splits_is_refused(grown, tmp_path):
    root, after = grown
    earlier = split_of(root / "dataset-before")
    rows = list(csv.DictReader(open(root / "dataset-before" / "splits" / "train.csv")))
    rows_test = list(csv.DictReader(open(root / "dataset-before" / "splits" / "test.csv")))
    manifest = tmp_path / "labels.csv"
    lines = ["uri,label,group"]
    for row in rows + rows_test:
        lines.append(f"{row['uri']},{row['label']},")
    lines[1] = f"{rows[0]['uri']},{rows[0]['label']},patient-1"
    lines[len(rows) + 1] = f"{rows_test[0]['uri']},{rows_test[0]['label']},patient-1"
    manifest.write_text("\n".join(lines) + "\n")
    assert earlier[rows[0]["sha256"]] == "train" and earlier[rows_test[0]["sha256"]] == "test"
    config = PrepareConfig(keep_splits=str(root / "dataset-before"), min_images_per_class=3)
    with pytest.raises(UserError, match="are now one group") as caught:
        run(config, str(manifest), tmp_path / "out")
    assert rows[0]["uri"] in str(caught.value) and rows_test[0]["uri"] in str(caught.value)


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_a_registry_reference_keeps_the_published_splits(grown, tmp_path, where, request):
    from components.push.config import PushConfig
    from components.push.core import run as push

    root, after = grown
    export, evaluation = tmp_path / "export", tmp_path / "evaluation"
    export.mkdir()
    evaluation.mkdir()
    (export / "model.onnx").write_bytes(b"onnx")
    (export / "parity.json").write_text(json.dumps({"onnx": {"passed": True}}))
    (evaluation / "blessing.json").write_text(json.dumps({"blessed": True, "reasons": []}))
    registry = (
        str(tmp_path / "registry")
        if where == "folder"
        else request.getfixturevalue("s3_server") + f"/keep-{tmp_path.name}"
    )
    push(
        PushConfig(serving="none", registry=registry),
        export,
        evaluation,
        dataset=root / "dataset-before",
    )
    config = PrepareConfig(seed=3, keep_splits=f"{registry}/visionpipe-classifier")
    stats = run(config, str(after), tmp_path / "dataset")
    earlier = split_of(root / "dataset-before")
    now = split_of(tmp_path / "dataset")
    assert {sha: now[sha] for sha in earlier} == earlier
    assert stats["keep_splits"]["from"].startswith("visionpipe-classifier ")


def test_nothing_published_yet_keeps_nothing_and_says_so(grown, tmp_path):
    root, after = grown
    config = PrepareConfig(keep_splits=str(tmp_path / "registry" / "visionpipe-classifier"))
    stats = run(config, str(after), tmp_path / "dataset")
    assert stats["keep_splits"]["found"] is False and stats["counts"]["total"] == 180


def test_a_folder_that_is_no_dataset_is_refused(grown, tmp_path):
    root, after = grown
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="neither a prepared dataset"):
        run(PrepareConfig(keep_splits=str(tmp_path / "junk")), str(after), tmp_path / "out")
