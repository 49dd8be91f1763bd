"""TFRecord files of `tf.train.Example`s, written and read without importing TensorFlow.

prepare and push write records and nothing else with TensorFlow, and importing it costs
seconds per process (every pipeline task that writes shards or a reference sample).
The format is small and fixed: each record is its length (uint64, little-endian), the
masked CRC-32C of the length, the bytes, and their masked CRC-32C
(tensorflow/core/lib/io/record_writer.cc); an Example is three nested protobuf messages
(tensorflow/core/example/example.proto, feature.proto), encoded here for the two
feature kinds visionpipe writes: bytes and int64. TensorFlow reads what this writes and
this reads what TensorFlow writes (tests/test_tfrecord.py).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import google_crc32c

_MASK_DELTA = 0xA282EAD8


def masked_crc(data: bytes) -> bytes:
    """The record format's checksum: CRC-32C, rotated right by 15 bits, plus a constant."""
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF)


class RecordWriter:
    """`tf.io.TFRecordWriter` for an uncompressed local file: `with RecordWriter(path) as w:
    w.write(record)`."""

    def __init__(self, path: str | Path):
        self._file = open(path, "wb")  # noqa: SIM115 (closed by close() / __exit__)

    def write(self, record: bytes) -> None:
        length = struct.pack("<Q", len(record))
        self._file.write(length + masked_crc(length) + record + masked_crc(record))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_records(path: str | Path) -> Iterator[bytes]:
    """Every record of an uncompressed TFRecord file, checksums verified (a damaged file is
    a ValueError naming it and the record's offset, never silently short)."""
    with open(path, "rb") as handle:
        while True:
            offset = handle.tell()
            header = handle.read(12)
            if not header:
                return
            if len(header) < 12 or masked_crc(header[:8]) != header[8:]:
                raise ValueError(f"{path}: damaged TFRecord length at byte {offset}")
            (length,) = struct.unpack("<Q", header[:8])
            record, crc = handle.read(length), handle.read(4)
            if len(record) < length or masked_crc(record) != crc:
                raise ValueError(f"{path}: damaged TFRecord data at byte {offset}")
            yield record


def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # int64 as protobuf writes it: negatives take 10 bytes
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _feature(value: bytes | str | int | list) -> bytes:
    values = value if isinstance(value, list) else [value]
    if all(isinstance(v, bool | int) for v in values):  # Feature.int64_list (3), packed
        return _field(3, _field(1, b"".join(_varint(int(v)) for v in values)))
    if all(isinstance(v, bytes | str) for v in values):  # Feature.bytes_list (1)
        encoded = [v.encode() if isinstance(v, str) else v for v in values]
        return _field(1, b"".join(_field(1, v) for v in encoded))
    raise TypeError(f"Example features are bytes, str or int (or lists of one), got {value!r}")


def encode_example(features: dict[str, bytes | str | int | list]) -> bytes:
    """A serialized `tf.train.Example` whose features are bytes (str is UTF-8 encoded) or
    int64 values, or lists of one kind."""
    entries = b"".join(
        _field(1, _field(1, name.encode()) + _field(2, _feature(value)))
        for name, value in features.items()
    )
    return _field(1, entries)  # Example.features (1) = Features{feature (1): map entries}


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _fields(data: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """(field number, wire type, value) of one protobuf message, in order."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = data[pos : pos + size], pos + size
        else:
            raise ValueError(f"not a tf.train.Example: protobuf wire type {wire}")
        yield number, wire, value


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _values(feature: bytes) -> list:
    """A Feature's values: bytes (bytes_list, 1), floats (float_list, 2) or ints (int64_list, 3)."""
    out: list = []
    for kind, _, listed in _fields(feature):
        for _, wire, value in _fields(listed):
            if kind == 1:
                out.append(value)
            elif kind == 2:
                out.extend(struct.unpack(f"<{len(value) // 4}f", value) if wire == 2 else
                           struct.unpack("<f", value))  # fmt: skip
            elif wire == 2:  # packed int64s
                pos = 0
                while pos < len(value):
                    number, pos = _read_varint(value, pos)
                    out.append(_int64(number))
            else:
                out.append(_int64(value))
    return out


def decode_example(serialized: bytes) -> dict[str, list]:
    """A serialized `tf.train.Example`'s features: name -> list of bytes, floats or ints."""
    features: dict[str, list] = {}
    for number, _, message in _fields(serialized):
        if number != 1:
            continue
        for _, _, entry in _fields(message):
            parts = {n: v for n, _, v in _fields(entry)}
            features[parts.get(1, b"").decode()] = _values(parts.get(2, b""))
    return features
