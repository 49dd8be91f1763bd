"""prepare on manifests, groups, near duplicates, k-fold, and every kind of awkward file."""

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from components.infra.errors import UserError
from components.prepare.config import PrepareConfig
from components.prepare.core import run
from tests.conftest import write_digit_images


def read_split(dataset, split):
    with open(dataset / "splits" / f"{split}.csv") as handle:
        return list(csv.DictReader(handle))


def all_rows(dataset):
    return {s: read_split(dataset, s) for s in ("train", "val", "test")}


def test_csv_manifest_with_groups_metadata_and_a_missing_file(tmp_path):
    data = write_digit_images(tmp_path / "imgs", classes=(0, 1, 7), per_class=24)
    with open(tmp_path / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uri", "label", "group", "camera"])
        for n, path in enumerate(sorted(data.rglob("*.*"))):
            label = path.parent.name.replace("digit_", "d")
            # relative to the manifest; 4 pictures per "object" share a group
            writer.writerow(
                [
                    path.relative_to(tmp_path).as_posix(),
                    label,
                    f"{label}-obj{n // 4}",
                    "phone" if n % 2 else "scanner",
                ]
            )
        writer.writerow(["imgs/gone.png", "d0", "", "phone"])
    stats = run(
        PrepareConfig(max_rejected_fraction=0.05), str(tmp_path / "manifest.csv"), tmp_path / "out"
    )
    assert stats["classes"] == ["d0", "d1", "d7"] and stats["counts"]["total"] == 72
    assert stats["rejected"] == [
        {"uri": str(tmp_path / "imgs" / "gone.png"), "label": "d0", "reason": "file not found"}
    ]
    rows = all_rows(tmp_path / "out")
    split_of_group = {}
    for split, split_rows in rows.items():
        for row in split_rows:
            assert split_of_group.setdefault(row["group"], split) == split  # groups stay whole
            assert row["camera"] in {"phone", "scanner"}  # metadata travels to the manifests
    assert len(split_of_group) == 18


def test_jsonl_manifest(tmp_path):
    data = write_digit_images(tmp_path / "imgs", classes=(3, 4), per_class=10)
    lines = [
        json.dumps({"uri": str(p), "label": p.parent.name, "site": "a"})
        for p in sorted(data.rglob("*.*"))
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    stats = run(PrepareConfig(), str(tmp_path / "m.jsonl"), tmp_path / "out")
    assert stats["counts"]["total"] == 20 and stats["classes"] == ["digit_3", "digit_4"]


@pytest.mark.parametrize(
    "content, pattern",
    [
        ("path,class\na.png,x\n", "no uri or label column"),
        ("uri,label\na.png,\n", "row 2 has an empty uri or label"),
    ],
)
def test_bad_manifests_are_refused(tmp_path, content, pattern):
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(UserError, match=pattern):
        run(PrepareConfig(), str(tmp_path / "m.csv"), tmp_path / "out")


def test_near_duplicates_across_classes(tmp_path):
    data = write_digit_images(tmp_path / "data", classes=(0, 1, 7), per_class=30, size=32)
    original = Image.open(data / "digit_1" / "004.png").convert("RGB")
    # the same picture, resized and re-encoded as JPEG, filed under another class
    buffer = io.BytesIO()
    original.resize((40, 40)).save(buffer, "JPEG", quality=70)
    (data / "digit_7" / "resaved.jpg").write_bytes(buffer.getvalue())
    exact = run(PrepareConfig(), str(data), tmp_path / "exact")
    assert not any("resaved.jpg" in u for g in exact["duplicate_groups"] for u in g["uris"])
    near = run(PrepareConfig(dedupe="near"), str(data), tmp_path / "near")
    group = next(
        g for g in near["duplicate_groups"] if any(u.endswith("resaved.jpg") for u in g["uris"])
    )
    assert group["kind"] == "near" and group["conflicting"]
    assert any(u.endswith("digit_1/004.png") for u in group["uris"])
    assert {"004.png", "resaved.jpg"} <= {
        r["uri"].rsplit("/", 1)[-1] for r in near["rejected"] if "conflicting" in r["reason"]
    }


def test_near_duplicates_never_cross_splits(tmp_path):
    data = write_digit_images(tmp_path / "data", classes=(0, 1), per_class=30, size=32)
    for n in range(0, 30, 3):  # ten pictures saved again, slightly brighter, same class
        image = np.asarray(
            Image.open(data / "digit_0" / f"{n:03d}.{'png' if n % 2 == 0 else 'jpg'}")
        )
        Image.fromarray(np.clip(image.astype(int) + 6, 0, 255).astype(np.uint8)).save(
            data / "digit_0" / f"again_{n:03d}.png"
        )
    stats = run(PrepareConfig(dedupe="near"), str(data), tmp_path / "out")
    # exactly the ten re-saved pairs: different handwritten zeros are not chained together
    assert sorted(len(g["uris"]) for g in stats["duplicate_groups"]) == [2] * 10
    split_of = {}
    for split, rows in all_rows(tmp_path / "out").items():
        for row in rows:
            split_of[row["uri"]] = split
    for group in stats["duplicate_groups"]:
        assert len({split_of[u] for u in group["uris"]}) == 1, group


def test_kfold_manifest_is_stratified_and_group_aware(tmp_path, digits_dir):
    stats = run(PrepareConfig(kfold=5), str(digits_dir), tmp_path / "out")
    with open(tmp_path / "out" / "splits" / "kfold.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == stats["counts"]["per_split"]["train"] + stats["counts"]["per_split"]["val"]
    folds = {}
    for row in rows:
        folds.setdefault(row["fold"], []).append(row["label"])
    assert sorted(folds) == ["0", "1", "2", "3", "4"]
    for labels in folds.values():  # each fold holds about a fifth of every class
        counts = {c: labels.count(c) for c in set(labels)}
        assert max(counts.values()) - min(counts.values()) <= 5


def test_awkward_but_valid_files_are_kept_and_bad_ones_listed(tmp_path):
    data = write_digit_images(tmp_path / "data", classes=(0, 1), per_class=20, size=24)
    odd = data / "digit_0"
    Image.new("CMYK", (24, 24), (0, 200, 200, 0)).save(odd / "cmyk.jpg")
    Image.fromarray(np.full((24, 24), 40000, np.uint16)).save(odd / "sixteen.png")
    Image.new("RGB", (24, 24), (9, 9, 9)).convert("P").save(odd / "palette.gif")
    Image.new("RGBA", (24, 24), (0, 0, 0, 128)).save(odd / "alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (30, 24), (50, 50, 50)).save(odd / "rotated.JPG", exif=exif.tobytes())
    Image.new("RGB", (4, 4)).save(data / "digit_1" / "tiny.png")
    Image.new("L", (400, 400)).save(data / "digit_1" / "bomb.png")
    stats = run(
        PrepareConfig(max_pixels=100_000, max_rejected_fraction=0.1), str(data), tmp_path / "out"
    )
    reasons = {r["uri"].rsplit("/", 1)[-1]: r["reason"] for r in stats["rejected"]}
    assert set(reasons) == {"tiny.png", "bomb.png"}
    assert "too small" in reasons["tiny.png"] and "too large" in reasons["bomb.png"]
    kept = {
        row["uri"].rsplit("/", 1)[-1]: row
        for rows in all_rows(tmp_path / "out").values()
        for row in rows
    }
    assert {"cmyk.jpg", "sixteen.png", "palette.gif", "alpha.png", "rotated.JPG"} <= set(kept)
    assert (kept["rotated.JPG"]["width"], kept["rotated.JPG"]["height"]) == ("24", "30")
