"""Validation's cost is flat in the data: samples keep their limit, only sampled records
are decoded, and the sample push publishes is a small prepared dataset of its own."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from components.vision.records import (
    load_split_arrays,
    make_example,
    stratified_indices,
    write_sample,
)


@pytest.mark.parametrize(
    "counts, limit",
    [
        ([3] * 100, 50),  # more classes than the limit: was 100
        ([900, 90, 10], 50),
        ([9, 1, 1], 3),  # one seat each beats the proportion
        ([5, 5], 7),
        ([1] * 7 + [200], 10),
    ],
)
def test_stratified_indices_never_exceed_the_limit(counts, limit):
    labels = np.repeat(np.arange(len(counts)), counts)
    chosen = stratified_indices(labels, limit, seed=3)
    assert len(chosen) == limit and len(set(chosen.tolist())) == limit
    got = np.bincount(labels[chosen], minlength=len(counts))
    if len(counts) <= limit:
        assert (got >= 1).all(), got  # every class present
    big = int(np.argmax(counts))
    assert abs(got[big] - limit * counts[big] / sum(counts)) <= len(counts)


def test_stratified_indices_keep_proportions_and_small_sets_whole():
    labels = np.array(["a"] * 600 + ["b"] * 300 + ["c"] * 100)
    got = np.unique(labels[stratified_indices(labels, 100)], return_counts=True)[1]
    assert got.tolist() == [60, 30, 10]
    assert stratified_indices(labels[:40], 100).tolist() == list(range(40))


def test_only_the_sampled_records_are_decoded(tmp_path):
    """A record that is not in the sample is never decoded: its bytes are no PNG, and
    reading the sample still works (decoding the whole split fails on it)."""
    import tensorflow as tf
    from PIL import Image

    (tmp_path / "tfrecords").mkdir()
    png = tmp_path / "good.png"
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(png)
    with tf.io.TFRecordWriter(str(tmp_path / "tfrecords" / "test-00000-of-00001.tfrecord")) as w:
        w.write(make_example(png.read_bytes(), 1, "s1", "good"))
        w.write(make_example(b"not a png at all", 0, "s2", "junk"))
    images, labels, uris = load_split_arrays(tmp_path, "test", 8, keep={"good"})
    assert uris == ["good"] and labels.tolist() == [1] and images.shape == (1, 8, 8, 3)
    assert int(images[0, 0, 0, 0]) == 200
    empty = load_split_arrays(tmp_path, "test", 8, keep=set())
    assert empty[0].shape == (0, 8, 8, 3) and empty[2] == []
    with pytest.raises(tf.errors.InvalidArgumentError):
        load_split_arrays(tmp_path, "test", 8)


def test_the_published_sample_is_a_small_dataset(tmp_path, digits_dataset):
    sample = write_sample(digits_dataset, tmp_path / "sample", 50)
    stats = json.loads((sample / "stats.json").read_text())
    assert stats["image_size"] == 32
    classes = json.loads((sample / "classes.json").read_text())
    for split in ("train", "val", "test"):
        with open(sample / "splits" / f"{split}.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        with open(digits_dataset / "splits" / f"{split}.csv", newline="") as handle:
            every = {row["uri"]: row for row in csv.DictReader(handle)}
        assert len(rows) == 50 == stats["sample"]["splits"][split]["sampled"]
        assert {row["label"] for row in rows} == set(classes)  # stratified: all 10 digits
        assert all(every[row["uri"]] == row for row in rows)  # every column, unchanged
        images, labels, uris = load_split_arrays(sample, split, 32)
        assert uris == [row["uri"] for row in rows]  # the manifest is in the records' order
        assert [classes[k] for k in labels] == [row["label"] for row in rows]
        assert images.shape == (50, 32, 32, 3) and images.std() > 0
