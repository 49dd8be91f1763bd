"""The TFRecord schema shared by prepare (writer) and train/evaluate/export (readers).

One `tf.train.Example` per image:
  image   bytes  PNG, image_size x image_size, 8-bit RGB
  label   int64  index into classes.json
  sha256  bytes  hex digest of the source file
  uri     bytes  where the source file was read from
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_example(png: bytes, label: int, sha256: str, uri: str) -> bytes:
    from components.vision.tfrecord import encode_example

    return encode_example({"image": png, "label": int(label), "sha256": sha256, "uri": uri})


def shard_files(dataset_dir: str | Path, split: str) -> list[str]:
    files = sorted(str(p) for p in (Path(dataset_dir) / "tfrecords").glob(f"{split}-*.tfrecord"))
    if not files:
        raise FileNotFoundError(
            f"no {split} TFRecord shards in {dataset_dir}/tfrecords; "
            "is this the output folder of `visionpipe prepare`?"
        )
    return files


def parse_fn(image_size: int, with_uri: bool = False):
    """A tf.data map function: serialized Example -> (uint8 image (H, W, 3), int32 label),
    and the uri (a string scalar) third when `with_uri`."""
    import tensorflow as tf

    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }
    if with_uri:
        spec["uri"] = tf.io.FixedLenFeature([], tf.string)

    def parse(serialized):
        parsed = tf.io.parse_single_example(serialized, spec)
        image = tf.io.decode_png(parsed["image"], channels=3)  # (H, W, 3) uint8
        image = tf.ensure_shape(image, [image_size, image_size, 3])
        label = tf.cast(parsed["label"], tf.int32)
        return (image, label, parsed["uri"]) if with_uri else (image, label)

    return parse


def load_split_arrays(
    dataset_dir: str | Path, split: str, image_size: int, keep: set[str] | None = None
):
    """A split in memory: uint8 images (N, H, W, 3), int labels (N,), uris (N,); only the
    records whose uri is in `keep` when given (a sample: memory bounded by its size).

    With `keep`, records are filtered on their uri before any PNG is decoded: the cost of
    a sample is its size plus reading the shards' bytes, not decoding the whole split.
    For evaluation and export checks on the test split (small by design), and samples.
    """
    import tensorflow as tf

    shape = (0, image_size, image_size, 3)
    if keep is not None and not keep:
        return np.zeros(shape, np.uint8), np.zeros(0, np.int64), []
    ds = tf.data.TFRecordDataset(shard_files(dataset_dir, split)).map(
        parse_raw, num_parallel_calls=tf.data.AUTOTUNE
    )
    if keep is not None:
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(sorted(keep)), tf.ones(len(keep), tf.int32)
            ),
            default_value=0,
        )
        ds = ds.filter(lambda parsed: table.lookup(parsed["uri"]) > 0)

    def decode(parsed):
        image = tf.ensure_shape(
            tf.io.decode_png(parsed["image"], channels=3), [image_size, image_size, 3]
        )
        return image, parsed["label"], parsed["uri"]

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(1024)
    images, labels, uris = [], [], []
    for image_batch, label_batch, uri_batch in ds.as_numpy_iterator():
        images.append(image_batch)
        labels.extend(int(v) for v in label_batch)
        uris.extend(v.decode() for v in uri_batch)
    array = np.concatenate(images) if images else np.zeros(shape, np.uint8)
    return array, np.asarray(labels, dtype=np.int64), uris


def parse_raw(serialized):
    """A serialized Example -> {"image": PNG bytes (not decoded), "label", "uri"}."""
    import tensorflow as tf

    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "uri": tf.io.FixedLenFeature([], tf.string),
    }
    return tf.io.parse_single_example(serialized, spec)


def split_labels(dataset_dir: str | Path, split: str) -> list[tuple[str, str]]:
    """(uri, label) of every image of a split, from its manifest splits/<split>.csv."""
    import csv

    with open(Path(dataset_dir) / "splits" / f"{split}.csv", newline="") as handle:
        return [(row["uri"], row["label"]) for row in csv.DictReader(handle)]


def stratified_sample(
    dataset_dir: str | Path, split: str, limit: int, seed: int = 0
) -> tuple[set[str] | None, int]:
    """At most `limit` uris of a split, each class in proportion (stratified_indices);
    (None, total) when the split is not larger than `limit`."""
    rows = split_labels(dataset_dir, split)
    if len(rows) <= limit:
        return None, len(rows)
    labels = np.array([label for _, label in rows])
    return {rows[i][0] for i in stratified_indices(labels, limit, seed)}, len(rows)


def stratified_indices(labels: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """At most `limit` indices (all of them when fewer), sorted, each class in proportion.

    Each class gets the floor of its share, and at least one image while there are no
    more classes than `limit`; the seats left over (or taken back) go by the largest
    remainder, ties broken by `seed`. Never more than `limit`.
    """
    labels = np.asarray(labels)
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    names, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    exact = limit * counts / len(labels)
    quota = np.floor(exact).astype(int)  # < counts, since limit < len(labels)
    if len(names) <= limit:
        quota = np.maximum(quota, 1)
    tie = rng.random(len(names))
    while quota.sum() > limit:  # the ones lifted to 1 are paid for by the largest excess
        quota[np.lexsort((tie, -(quota - exact), quota <= 1))[0]] -= 1
    for k in np.lexsort((tie, -(exact - quota)))[: limit - int(quota.sum())]:
        quota[k] += 1
    chosen = [
        rng.choice(np.flatnonzero(inverse == k), size=quota[k], replace=False)
        for k in range(len(names))
        if quota[k]
    ]
    return np.sort(np.concatenate(chosen))


def write_sample(dataset_dir: str | Path, target: str | Path, limit: int, seed: int = 0) -> Path:
    """A small prepared dataset at `target`: at most `limit` images of each split of
    `dataset_dir` (stratified_indices), as the same layout (classes.json, stats.json with
    image_size, splits/*.csv with the sampled rows and every column, one
    tfrecords/<split>-00000-of-00001.tfrecord of the records as they were, not
    re-encoded). What push publishes beside a version's split manifests, so the next
    night's model checks have the deployed version's own images to compare with."""
    import csv
    import json
    import shutil

    from components.vision.tfrecord import RecordWriter, decode_example, read_records

    source, target = Path(dataset_dir), Path(target)
    (target / "splits").mkdir(parents=True, exist_ok=True)
    (target / "tfrecords").mkdir(exist_ok=True)
    shutil.copyfile(source / "classes.json", target / "classes.json")
    stats = json.loads((source / "stats.json").read_text())
    counts = {}
    for split in ("train", "val", "test"):
        with open(source / "splits" / f"{split}.csv", newline="") as handle:
            reader = csv.DictReader(handle)
            columns, rows = list(reader.fieldnames or []), list(reader)
        picks = stratified_indices(np.array([r["label"] for r in rows]), limit, seed)
        wanted = {rows[i]["uri"]: rows[i] for i in picks}
        by_uri = {}
        name = f"{split}-00000-of-00001.tfrecord"
        with RecordWriter(target / "tfrecords" / name) as writer:
            for shard in shard_files(source, split):
                for serialized in read_records(shard):
                    uri = decode_example(serialized)["uri"][0].decode()
                    if uri in wanted and uri not in by_uri:
                        writer.write(serialized)
                        by_uri[uri] = wanted[uri]
        with open(target / "splits" / f"{split}.csv", "w", newline="") as handle:
            out = csv.DictWriter(handle, fieldnames=columns)
            out.writeheader()
            out.writerows(by_uri.values())  # the records' order
        counts[split] = {"sampled": len(by_uri), "of": len(rows)}
    sample = {"image_size": stats["image_size"], "sample": {"limit": limit, "splits": counts}}
    (target / "stats.json").write_text(json.dumps(sample, indent=2))
    return target


class SplitImages:
    """A split's images without holding them: streamed in record order (the manifest's
    order) for predictions, and by index for the few a report shows.

    `len()`, iteration by `batches()`, and indexing with an int, a slice or an index
    array; indexed images are read in one pass over the shards and kept (call
    `prefetch` with every index a report will show before showing them).
    """

    def __init__(self, dataset_dir: str | Path, split: str, image_size: int, uris: list[str]):
        self.dataset_dir, self.split, self.size = Path(dataset_dir), split, image_size
        self.uris = list(uris)
        self._position = {uri: i for i, uri in enumerate(self.uris)}
        self._kept: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.uris)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.uris), self.size, self.size, 3)

    def batches(self, batch_size: int):
        """uint8 (B, S, S, 3) batches of the whole split, in order; one batch in memory."""
        import tensorflow as tf

        ds = tf.data.TFRecordDataset(shard_files(self.dataset_dir, self.split))
        ds = ds.map(parse_fn(self.size), num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
        for images, _ in ds.as_numpy_iterator():
            yield images

    def prefetch(self, indices) -> None:
        """Read the images at `indices` (one pass over the shards) and keep them."""
        wanted = {int(i) for i in np.asarray(indices, dtype=np.int64).ravel()} - set(self._kept)
        if not wanted:
            return
        images, _, uris = load_split_arrays(
            self.dataset_dir, self.split, self.size, keep={self.uris[i] for i in wanted}
        )
        for image, uri in zip(images, uris, strict=True):
            self._kept[self._position[uri]] = image

    def __getitem__(self, key):
        if isinstance(key, slice):
            key = np.arange(len(self.uris))[key]
        if np.isscalar(key) or isinstance(key, int | np.integer):
            self.prefetch([key])
            return self._kept[int(key)]
        indices = np.asarray(key)
        if indices.dtype == bool:
            indices = np.flatnonzero(indices)
        self.prefetch(indices)
        shape = (0, self.size, self.size, 3)
        return (
            np.stack([self._kept[int(i)] for i in indices])
            if len(indices)
            else np.zeros(shape, np.uint8)
        )


def image_batches(images, batch_size: int):
    """uint8 batches of an in-memory array or a SplitImages, in order."""
    if isinstance(images, SplitImages):
        yield from images.batches(batch_size)
        return
    for start in range(0, len(images), batch_size):
        yield images[start : start + batch_size]


def streamed_split(dataset_dir: str | Path, split: str, image_size: int):
    """(SplitImages, int labels, uris) of a split: labels and uris from its manifest (the
    records' order), images read from the shards only when asked for."""
    import json

    classes = json.loads((Path(dataset_dir) / "classes.json").read_text())
    index = {name: i for i, name in enumerate(classes)}
    listed = split_labels(dataset_dir, split)
    uris = [uri for uri, _ in listed]
    labels = np.array([index[label] for _, label in listed], dtype=np.int64)
    return SplitImages(dataset_dir, split, image_size, uris), labels, uris
