"""components/vision/tfrecord.py against TensorFlow itself: TensorFlow reads what it writes,
it reads what TensorFlow writes, and prepare and push no longer import TensorFlow."""

import subprocess
import sys

import pytest

from components.vision.tfrecord import RecordWriter, decode_example, encode_example, read_records
from tests.conftest import write_digit_images

FEATURES = {
    "image": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3,  # a payload over 127 bytes
    "label": 7,
    "sha256": "ab" * 32,
    "uri": "gs://bucket/Ünïcode name.png",
    "many": [0, 1, -1, 2**40, -(2**63), 2**63 - 1],
    "empty": [],
}


def tf_example(tf):
    def feature(value):
        values = value if isinstance(value, list) else [value]
        if all(isinstance(v, int) for v in values):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        encoded = [v.encode() if isinstance(v, str) else v for v in values]
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=encoded))

    feature_map = {name: feature(value) for name, value in FEATURES.items()}
    return tf.train.Example(features=tf.train.Features(feature=feature_map))


def test_tensorflow_parses_our_example_and_we_decode_its_own():
    import tensorflow as tf

    ours = encode_example(FEATURES)
    assert tf.train.Example.FromString(ours) == tf_example(tf)
    decoded = decode_example(tf_example(tf).SerializeToString())
    assert decoded["label"] == [7] and decoded["many"] == FEATURES["many"]
    assert decoded["uri"] == [FEATURES["uri"].encode()] and decoded["image"] == [FEATURES["image"]]
    assert decoded["empty"] == []
    floats = tf.train.Example(
        features=tf.train.Features(
            feature={"f": tf.train.Feature(float_list=tf.train.FloatList(value=[0.5, -2.0]))}
        )
    )
    assert decode_example(floats.SerializeToString()) == {"f": [0.5, -2.0]}
    with pytest.raises(TypeError, match="bytes, str or int"):
        encode_example({"x": 0.5})


def test_tensorflow_reads_our_records_and_we_read_its_own(tmp_path):
    import tensorflow as tf

    records = [b"", b"one", bytes(range(256)) * 40, encode_example(FEATURES)]
    with RecordWriter(tmp_path / "ours.tfrecord") as writer:
        for record in records:
            writer.write(record)
    read = [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "ours.tfrecord"))]
    assert read == records
    with tf.io.TFRecordWriter(str(tmp_path / "theirs.tfrecord")) as writer:
        for record in records:
            writer.write(record)
    assert (tmp_path / "theirs.tfrecord").read_bytes() == (tmp_path / "ours.tfrecord").read_bytes()
    assert list(read_records(tmp_path / "theirs.tfrecord")) == records


@pytest.mark.parametrize("damage", ["flip a data byte", "truncate"])
def test_a_damaged_file_is_an_error_naming_it_not_a_short_read(tmp_path, damage):
    path = tmp_path / "d.tfrecord"
    with RecordWriter(path) as writer:
        writer.write(b"first record")
        writer.write(b"second record")
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        del data[-3:]
    else:
        data[-8] ^= 0xFF  # inside the second record's bytes
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"d\.tfrecord: damaged TFRecord data at byte 28"):
        list(read_records(path))


def test_prepare_and_the_reference_sample_do_not_import_tensorflow(tmp_path):
    """The reason this module exists: prepare's shards and push's reference sample (both
    records only) in a process that never imports TensorFlow (seconds per task)."""
    photos = write_digit_images(tmp_path / "photos", per_class=20)
    program = f"""
import sys
from components.prepare.config import PrepareConfig
from components.prepare.core import run
from components.vision.records import write_sample
run(PrepareConfig(image_size=16), {str(photos)!r}, {str(tmp_path / "d")!r})
write_sample({str(tmp_path / "d")!r}, {str(tmp_path / "s")!r}, limit=4)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")))
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
    import tensorflow as tf

    from components.vision.records import parse_raw, shard_files

    for folder in (tmp_path / "d", tmp_path / "s"):
        for split in ("train", "val", "test"):
            listed = (folder / "splits" / f"{split}.csv").read_text().splitlines()[1:]
            shards = shard_files(folder, split)
            uris = [parse_raw(r)["uri"].numpy().decode() for r in tf.data.TFRecordDataset(shards)]
            assert uris == [row.split(",")[0] for row in listed] and uris
    assert len(uris) <= 4  # the sample's test split: at most `limit`
