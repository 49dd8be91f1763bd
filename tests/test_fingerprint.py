"""The data fingerprint prepare is cached on: unchanged data, the same key; any change, a new one."""

import os
import time

from components.infra import storage
from components.vision.fingerprint import fingerprint
from tests.conftest import write_digit_images


def touch_later(path):
    """Rewrite a file with the same bytes but a new modification time."""
    data = path.read_bytes()
    path.write_bytes(data)
    later = time.time_ns() + 5_000_000_000
    os.utime(path, ns=(later, later))


def test_folder(tmp_path):
    data = write_digit_images(tmp_path / "photos", classes=(1, 2), per_class=4)
    first = fingerprint(str(data))
    assert first.startswith("folder-") and fingerprint(str(data)) == first
    seen = {first}

    (data / "digit_1" / "new.png").write_bytes((data / "digit_1" / "000.png").read_bytes())
    seen.add(fingerprint(str(data)))  # added
    (data / "digit_2" / "001.jpg").unlink()
    seen.add(fingerprint(str(data)))  # removed
    touch_later(data / "digit_1" / "002.png")
    seen.add(fingerprint(str(data)))  # rewritten
    (data / "digit_2" / "003.jpg").write_bytes(b"other bytes")
    seen.add(fingerprint(str(data)))  # changed size
    (data / "digit_1" / "000.png").rename(data / "digit_2" / "000.png")
    seen.add(fingerprint(str(data)))  # moved to another class
    assert len(seen) == 6


def test_manifest(tmp_path):
    images = write_digit_images(tmp_path / "images", classes=(1, 2), per_class=4)
    files = sorted(images.rglob("*.*"))
    manifest = tmp_path / "labels.csv"
    manifest.write_text(
        "uri,label\n" + "".join(f"images/{p.relative_to(images)},{p.parent.name}\n" for p in files)
    )
    first = fingerprint(str(manifest))
    assert first.startswith("manifest-") and fingerprint(str(manifest)) == first
    seen = {first}

    touch_later(files[0])  # a row's file rewritten, the manifest itself unchanged
    seen.add(fingerprint(str(manifest)))
    files[1].unlink()  # a row's file gone
    seen.add(fingerprint(str(manifest)))
    with open(manifest, "a") as handle:  # a row added
        handle.write(f"images/{files[2].relative_to(images)},digit_2\n")
    seen.add(fingerprint(str(manifest)))
    # a file that no row names does not change what the manifest holds
    (images / "digit_1" / "unlisted.png").write_bytes(files[3].read_bytes())
    assert fingerprint(str(manifest)) in seen
    assert len(seen) == 4


def test_bucket_prefix_and_manifest(tmp_path, gcs_emulator):
    local = write_digit_images(tmp_path / "photos", classes=(1, 2), per_class=4)
    prefix = f"{gcs_emulator}/fp/photos"
    storage.upload_tree(local, prefix)
    first = fingerprint(prefix)
    assert first.startswith("folder-") and fingerprint(prefix + "/") == first
    seen = {first}

    storage.copy_file(local / "digit_1" / "000.png", f"{prefix}/digit_2/extra.png")
    seen.add(fingerprint(prefix))  # added
    storage.delete(f"{prefix}/digit_1/001.jpg")
    seen.add(fingerprint(prefix))  # removed
    # the same bytes written again: a new generation
    storage.copy_file(local / "digit_1" / "002.png", f"{prefix}/digit_1/002.png")
    seen.add(fingerprint(prefix))
    assert len(seen) == 4
    # a neighbouring prefix with a common start is not part of it
    storage.copy_file(local / "digit_1" / "000.png", f"{gcs_emulator}/fp/photos2/digit_1/x.png")
    assert fingerprint(prefix) in seen

    manifest = f"{gcs_emulator}/fp/labels.csv"
    storage.write_bytes(manifest, b"uri,label\nphotos/digit_1/000.png,digit_1\n")
    with_one = fingerprint(manifest)
    assert with_one.startswith("manifest-") and fingerprint(manifest) == with_one
    storage.copy_file(local / "digit_1" / "003.jpg", f"{prefix}/digit_1/000.png")
    assert fingerprint(manifest) != with_one  # the row's object was rewritten


def test_builtin_is_a_constant():
    assert fingerprint("builtin:digits") == fingerprint("builtin:digits")
    assert fingerprint("builtin:digits").startswith("builtin-")


def test_a_symlink_loop_is_walked_once(tmp_path):
    from components.vision.sources import list_source

    data = write_digit_images(tmp_path / "photos", classes=(1, 2), per_class=6)
    (data / "digit_1" / "loop").symlink_to("..")
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "a.png").write_bytes((data / "digit_2" / "000.png").read_bytes())
    (data / "digit_2" / "linked").symlink_to(tmp_path / "more")  # a real folder, followed
    listing = list_source(str(data))
    assert len(listing.items) == 13
    assert listing.classes == ["digit_1", "digit_2"]
    assert fingerprint(str(data)) == fingerprint(str(data))
