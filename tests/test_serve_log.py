"""The serve prediction log and request decoding, in-process (no server: the writer and
the decoder are plain Python that the server calls)."""

from __future__ import annotations

import io
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.infra import storage
from components.serve.inputs import BadInput, Limits, decode_images, encode_metadata
from components.serve.predlog import LogSettings, PredictionLog, read_records


def png(width: int, height: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def result(label: str = "3") -> dict:
    return {
        "top": [{"label": label, "probability": 0.9}],
        "ood_score": 1.5,
        "out_of_distribution": False,
        "projection": [0.0] * 32,
    }


def wait_for(log: PredictionLog, key: str, count: int) -> None:
    deadline = time.monotonic() + 30
    while log.counts[key] < count and time.monotonic() < deadline:
        time.sleep(0.05)


def test_each_request_image_is_one_record_in_a_daily_shard(tmp_path):
    decoded = decode_images([png(20, 10, n) for n in range(3)], 8, Limits())
    log = PredictionLog(LogSettings(str(tmp_path / "log"), flush_seconds=0.05), "m", "v1")
    log.offer(decoded, [result(), result("5"), result()])
    log.close()
    shards = list((tmp_path / "log").rglob("*.jsonl"))
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    assert {s.parent.name for s in shards} == {f"date={day}"}
    records = [json.loads(line) for s in shards for line in s.read_text().splitlines()]
    assert [r["sha256"] for r in records] == decoded.sha256
    assert records[1]["top"][0]["label"] == "5" and records[0]["width"] == 20


def test_the_daily_cap_and_the_sampling_rate_drop_records_and_count_them(tmp_path):
    decoded = decode_images([png(9, 9)], 8, Limits())
    capped = PredictionLog(LogSettings(str(tmp_path / "a"), daily_cap=4), "m", "v1")
    for _ in range(10):
        capped.offer(decoded, [result()])
    capped.close()
    assert (capped.counts["written"], capped.counts["capped"]) == (4, 6)
    silent = PredictionLog(LogSettings(str(tmp_path / "b"), sample_rate=0.0), "m", "v1")
    for _ in range(5):
        silent.offer(decoded, [result()])
    silent.close()
    assert silent.counts["sampled_out"] == 5 and not (tmp_path / "b").exists()


def test_the_cap_starts_again_on_a_new_day(tmp_path):
    days = iter([datetime(2026, 1, 1, 23, tzinfo=UTC)] * 2 + [datetime(2026, 1, 2, 1, tzinfo=UTC)])
    log = PredictionLog(
        LogSettings(str(tmp_path), daily_cap=1), "m", "v1", clock=lambda: next(days)
    )
    decoded = decode_images([png(9, 9)], 8, Limits())
    for _ in range(3):
        log.offer(decoded, [result()])
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["date=2026-01-01", "date=2026-01-02"]
    assert log.counts["capped"] == 1


def test_a_failing_store_loses_the_shard_never_the_caller(tmp_path, capsys):
    """The log location is a file: every write fails; offer() still returns at once."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    log = PredictionLog(LogSettings(str(blocker), flush_seconds=0.05), "m", "v1")
    decoded = decode_images([png(9, 9)], 8, Limits())
    log.offer(decoded, [result()])
    log.offer(decoded, [result()])
    wait_for(log, "failed_records", 2)
    log.close()
    assert log.counts["failed_records"] == 2 and log.counts["written"] == 0
    assert "prediction log:" in capsys.readouterr().err


def test_records_reach_an_object_store(object_store):
    location = f"{object_store}/predictions-{uuid.uuid4().hex}"  # s3 and minio share a bucket
    log = PredictionLog(LogSettings(location, flush_seconds=0.05), "m", "v1")
    log.offer(decode_images([png(9, 9)], 8, Limits()), [result()])
    log.close()
    shards = list(storage.list_files(location))
    assert len(shards) == 1 and "/date=" in shards[0]
    assert json.loads(storage.read_bytes(shards[0]))["model"] == "m"


def test_parquet_shards_and_images_reach_an_object_store(object_store):
    """The image is created exclusively in the bucket (a second server's copy of the same
    picture is left alone), beside a Parquet shard."""
    location = f"{object_store}/predictions-{uuid.uuid4().hex}"  # s3 and minio share a bucket
    blob = png(9, 9, 4)
    settings = LogSettings(location, flush_seconds=0.05, log_format="parquet", log_images=True)
    for _ in range(2):  # two server processes, one picture
        log = PredictionLog(settings, "m", "v1")
        log.offer(decode_images([blob], 8, Limits()), [result()])
        log.close()
    files = list(storage.list_files(location))
    images = [f for f in files if f.endswith(".png")]
    assert len(images) == 1 and storage.read_bytes(images[0]) == blob
    assert sum(f.endswith(".parquet") for f in files) == 2
    assert [r["image"] for r in read_records(location)] == [images[0].rsplit("/", 1)[1]] * 2


def test_bad_bytes_are_refused_with_a_reason():
    for blob, reason in [
        (png(20, 20)[:100], "corrupt_or_truncated_image"),
        (b"hi", "not_an_image"),
    ]:
        with pytest.raises(BadInput) as refused:
            decode_images([blob], 8, Limits())
        assert refused.value.reason == reason


def test_the_pixel_limit_is_read_from_the_header():
    with pytest.raises(BadInput, match="too large: 200x100 = 20000 pixels > max_pixels 10000"):
        decode_images([png(200, 100)], 8, Limits(max_pixels=10_000))


def test_a_metadata_model_needs_its_fields():
    from components.vision.metadata import MetadataEncoder

    encoder = MetadataEncoder.fit(
        [{"age": "3", "site": "a"}, {"age": "5", "site": "b"}], ["age", "site"]
    )
    with pytest.raises(BadInput, match="missing metadata field"):
        encode_metadata(encoder, [{"age": "4"}], 1)
    with pytest.raises(BadInput, match="also takes metadata fields age, site"):
        encode_metadata(encoder, None, 1)
    rows = encode_metadata(encoder, {"age": "4", "site": "b"}, 2)
    assert rows.shape == (2, encoder.size)


def test_a_decoded_image_matches_what_predict_reads(tmp_path):
    """The server decodes as prepare/predict do (images.load_for_model), bit for bit."""
    from components.vision.images import load_for_model

    blob = png(50, 30, 3)
    (tmp_path / "a.png").write_bytes(blob)
    decoded = decode_images([blob], 16, Limits())
    assert np.array_equal(decoded.images[0], load_for_model(str(tmp_path / "a.png"), 16))
    assert decoded.sizes == [(50, 30)]
    assert Path(tmp_path / "a.png").stat().st_size == len(blob)


def test_with_log_images_n_requests_leave_n_records_and_their_images_once(tmp_path):
    """Six requests, one picture sent twice: six records, five image files in the day's
    folder named by (and hashing to) their sha256, each named by its records; the repeat
    is not written again. Without log_images: records only."""
    import hashlib

    blobs = [png(12 + n, 10, n) for n in range(5)] + [png(12, 10, 0)]
    on = PredictionLog(
        LogSettings(str(tmp_path / "on"), flush_seconds=0.05, log_images=True), "m", "v1"
    )
    off = PredictionLog(LogSettings(str(tmp_path / "off"), flush_seconds=0.05), "m", "v1")
    for blob in blobs:
        for log in (on, off):
            log.offer(decode_images([blob], 8, Limits()), [result()])
    on.close()
    off.close()
    records = read_records(str(tmp_path / "on"))
    assert len(records) == 6 and len(read_records(str(tmp_path / "off"))) == 6
    images = [p for p in (tmp_path / "on").rglob("*.png")]
    assert len(images) == 5 and (on.counts["images_written"], on.counts["images_present"]) == (5, 1)
    for image in images:
        assert image.name == hashlib.sha256(image.read_bytes()).hexdigest() + ".png"
        assert image.parent == next((tmp_path / "on").rglob("*.jsonl")).parent
    assert {r["image"] for r in records} == {p.name for p in images}
    assert all(r["image"] == r["sha256"] + ".png" for r in records)
    assert not [p for p in (tmp_path / "off").rglob("*") if p.suffix != ".jsonl" and p.is_file()]
    assert all(r["image"] is None for r in read_records(str(tmp_path / "off")))


def test_parquet_shards_hold_the_records_jsonl_shards_hold(tmp_path):
    """The same requests into a JSONL log and a Parquet log read back as the same records
    (every field, nulls included: a record without OOD score or projection, as collect
    writes without --model); each Parquet flush is a file of its own."""
    clock = lambda: datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)  # noqa: E731
    logs = {
        fmt: PredictionLog(
            LogSettings(str(tmp_path / fmt), flush_seconds=0.05, log_format=fmt),
            "m",
            "v1",
            clock=clock,
        )
        for fmt in ("jsonl", "parquet")
    }
    unscored = {"top": result()["top"], "ood_score": None, "out_of_distribution": None,
                "projection": None}  # fmt: skip
    for log in logs.values():
        log.offer(decode_images([png(9, 7, 1), png(5, 5, 2)], 8, Limits()), [result(), result("7")])
        wait_for(log, "written", 2)  # the first flush is its own shard
        log.offer(decode_images([png(6, 6, 3)], 8, Limits()), [unscored])
        log.close()
    jsonl, parquet = (read_records(str(tmp_path / fmt)) for fmt in ("jsonl", "parquet"))
    assert len(jsonl) == 3 and parquet == jsonl
    assert list(parquet[0]) == list(jsonl[0])  # the same fields, in the same order
    assert parquet[2]["ood_score"] is None and parquet[1]["top"][0]["label"] == "7"
    shards = sorted((tmp_path / "parquet").rglob("*.parquet"))
    # one file per flush: at least the two waited for (a loaded machine may flush the
    # first request's two records apart)
    assert len(shards) == logs["parquet"].shards >= 2
    assert {s.parent.name for s in shards} == {"date=2026-03-04"}


def test_queued_images_are_bounded_in_bytes_and_their_records_still_logged(tmp_path):
    """image_queue_bytes bounds the image bytes waiting for the writer: over it a record is
    logged without its image (counted), never blocked. A writer that cannot start yet
    (a 60 s flush, one 3-record batch) holds the queue still while the requests come."""
    blobs = [png(30, 30, n) for n in range(3)]
    budget = len(blobs[0]) + len(blobs[1])
    settings = LogSettings(
        str(tmp_path), flush_seconds=60, batch_records=3, log_images=True,
        image_queue_bytes=budget,
    )  # fmt: skip
    log = PredictionLog(settings, "m", "v1")
    for blob in blobs:
        log.offer(decode_images([blob], 8, Limits()), [result()])
    log.close()
    records = read_records(str(tmp_path))
    assert len(records) == 3 and log.counts["images_dropped"] == 1
    assert [r["image"] is None for r in records] == [False, False, True]
    assert len(list(tmp_path.rglob("*.png"))) == 2 and log.image_bytes == 0
