"""The prepare stage on real digits and on messy user folders."""

import csv
import json
import shutil
from collections import Counter

import pytest

from components.infra.errors import UserError
from components.prepare.config import PrepareConfig
from components.prepare.core import run
from tests.conftest import write_digit_images


def read_split(dataset, split):
    with open(dataset / "splits" / f"{split}.csv") as handle:
        return list(csv.DictReader(handle))


def test_digits_dataset_contract(digits_dataset):
    for name in ("classes.json", "stats.json", "report.md", "report.html", "config.json"):
        assert (digits_dataset / name).is_file(), name
    assert json.loads((digits_dataset / "classes.json").read_text()) == [str(d) for d in range(10)]
    stats = json.loads((digits_dataset / "stats.json").read_text())
    assert stats["counts"]["total"] == 1797
    assert stats["counts"]["per_split"] == {"train": 1259, "val": 268, "test": 270}
    assert stats["image_size"] == 32  # 8x8 sources, auto size clamps up to 32
    assert set(stats["class_weights"]) == set(stats["classes"])
    for split in ("train", "val", "test"):
        assert list((digits_dataset / "tfrecords").glob(f"{split}-*.tfrecord"))


def test_digits_split_is_stratified_per_class(digits_dataset):
    stats = json.loads((digits_dataset / "stats.json").read_text())
    per = stats["counts"]["per_class_and_split"]
    for name, total in stats["counts"]["per_class"].items():
        for split, fraction in stats["split_fractions"].items():
            # no duplicates in the digits: every class is within one image of the ratio
            assert abs(per[split][name] - fraction * total) < 1, (name, split)


def test_no_content_hash_in_two_splits(digits_dataset):
    seen = {}
    for split in ("train", "val", "test"):
        for row in read_split(digits_dataset, split):
            assert seen.setdefault(row["sha256"], split) == split


def test_tfrecords_decode_to_the_stored_images(digits_dataset):
    from components.vision.records import load_split_arrays

    images, labels, uris = load_split_arrays(digits_dataset, "test", 32)
    assert images.shape == (270, 32, 32, 3) and images.dtype.name == "uint8"
    rows = read_split(digits_dataset, "test")
    assert [r["uri"] for r in rows] == uris
    assert Counter(labels.tolist()) == Counter(int(r["label"]) for r in rows)


def test_bad_files_are_listed_with_reasons(tmp_path):
    data = write_digit_images(tmp_path / "data", per_class=30)
    (data / "digit_0" / "notes.jpg").write_text("not an image")
    good = (data / "digit_1" / "000.png").read_bytes()
    (data / "digit_1" / "broken.png").write_bytes(good[: len(good) // 2])
    (data / "README.txt").write_text("ignored: not inside a class folder")
    stats = run(PrepareConfig(max_rejected_fraction=0.1), str(data), tmp_path / "out")
    reasons = {r["uri"].rsplit("/", 1)[-1]: r["reason"] for r in stats["rejected"]}
    assert "not an image" in reasons["notes.jpg"]
    assert "truncated" in reasons["broken.png"]
    assert stats["counts"]["total"] == 90
    assert any(i["uri"].endswith("README.txt") for i in stats["ignored"])
    report = (tmp_path / "out" / "report.html").read_text()
    assert "notes.jpg" in report and "broken.png" in report


def test_too_many_rejects_fail_and_leave_no_dataset(tmp_path):
    data = write_digit_images(tmp_path / "data", per_class=10)
    for n in range(5):
        (data / "digit_0" / f"junk{n}.png").write_bytes(b"junk")
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"5 of 35 images .* max_rejected_fraction 0.05"):
        run(PrepareConfig(), str(data), out)
    assert not out.exists()
    assert not list(tmp_path.glob(".out.partial-*"))


def test_duplicates_stay_together_and_conflicts_are_dropped(tmp_path):
    data = write_digit_images(tmp_path / "data", per_class=30)
    shutil.copy(data / "digit_0" / "000.png", data / "digit_0" / "copy_of_000.png")
    shutil.copy(data / "digit_1" / "002.png", data / "digit_7" / "mislabelled.png")
    stats = run(PrepareConfig(), str(data), tmp_path / "out")
    groups = {
        tuple(sorted(u.rsplit("/", 1)[-1] for u in g["uris"])): g for g in stats["duplicate_groups"]
    }
    assert not groups[("000.png", "copy_of_000.png")]["conflicting"]
    assert groups[("002.png", "mislabelled.png")]["conflicting"]
    rejected = {r["uri"].rsplit("/", 1)[-1] for r in stats["rejected"]}
    assert {"002.png", "mislabelled.png"} <= rejected
    splits_of = {}
    for split in ("train", "val", "test"):
        for row in read_split(tmp_path / "out", split):
            splits_of.setdefault(row["sha256"], set()).add(split)
    assert all(len(s) == 1 for s in splits_of.values())


def test_small_classes_error_names_each_class_or_are_dropped(tmp_path):
    data = write_digit_images(tmp_path / "data", classes=(0, 1, 2), per_class=30)
    for extra in list((data / "digit_2").iterdir())[3:]:
        extra.unlink()
    with pytest.raises(UserError, match=r"min_images_per_class=5: 'digit_2' \(3\)"):
        run(PrepareConfig(), str(data), tmp_path / "out")
    stats = run(PrepareConfig(small_classes="drop"), str(data), tmp_path / "out")
    assert stats["classes"] == ["digit_0", "digit_1"]


@pytest.mark.parametrize(
    "layout, pattern",
    [
        ("missing", "does not exist"),
        ("empty", "no images found"),
        ("one_class", "found only 1 class"),
    ],
)
def test_unusable_sources_are_refused(tmp_path, layout, pattern):
    data = tmp_path / "data"
    if layout != "missing":
        data.mkdir()
    if layout == "one_class":
        write_digit_images(data, classes=(3,), per_class=5)
    with pytest.raises(UserError, match=pattern):
        run(PrepareConfig(), str(data), tmp_path / "out")
