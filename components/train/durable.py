"""Training state that outlives the pod: the work folder mirrored to durable storage.

BackupAndRestore writes its state (weights, optimizer, epoch) to a local
folder. On a cluster a retried task, or a preempted spot node, starts in a
fresh pod on a fresh disk, and that folder is gone. KFP hands every attempt of
a task the same output URI (the driver provisions it once, before the first
attempt), so the state is kept beside it: `<output uri>.state/`.

After every epoch the work folder's files (backups, history, best checkpoint,
stage-1 result, TensorBoard events) are copied into a new snapshot there, and
`state.json`, which names each file's object, is replaced last. A process
killed half-way through a copy leaves the previous snapshot whole. A fresh
process with the same resume key downloads the snapshot into its new work
folder, and BackupAndRestore resumes from the epoch it recorded. Files that did
not change since the last snapshot are not copied again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from components.infra import progress, storage

POINTER = "state.json"
SKIPPED_SUFFIXES = (".bkp", ".partial", ".tmp")  # local-only safety copies and temp files


def state_uri_for(output: str | None) -> str | None:
    """Where the state of a run writing `output` lives; None when it cannot outlive the disk
    (a local output: the local work folder already survives a restart on that machine)."""
    if output and storage.is_remote(str(output)):
        return str(output).rstrip("/") + ".state"
    return None


@dataclass
class DurableState:
    uri: str
    key: str  # the resume key: a snapshot made for another config or dataset is not used
    snapshot: int = 0
    files: dict[str, dict] = field(default_factory=dict)  # relative path -> object, size, mtime

    @property
    def pointer(self) -> str:
        return f"{self.uri}/{POINTER}"

    def restore(self, work: Path) -> int:
        """Download the latest snapshot into `work`; the number of files (0: none to use)."""
        if not storage.exists(self.pointer):
            return 0
        state = json.loads(storage.read_bytes(self.pointer))
        if state.get("key") != self.key:
            progress.log("train", f"{self.uri} holds another run's state; starting afresh")
            self.clear()
            return 0
        for relative, entry in state["files"].items():
            local = work / relative
            storage.download_file(entry["object"], local)
            info = local.stat()
            self.files[relative] = {
                "object": entry["object"],
                "size": info.st_size,
                "mtime_ns": info.st_mtime_ns,
            }
        self.snapshot = int(state["snapshot"])
        return len(self.files)

    def save(self, work: Path) -> None:
        """Copy what changed in `work` into a new snapshot, then move the pointer to it."""
        self.snapshot += 1
        files: dict[str, dict] = {}
        for path in sorted(p for p in work.rglob("*") if p.is_file()):
            relative = path.relative_to(work).as_posix()
            if relative.endswith(SKIPPED_SUFFIXES):
                continue
            info = path.stat()
            known = self.files.get(relative)
            if known and (known["size"], known["mtime_ns"]) == (info.st_size, info.st_mtime_ns):
                files[relative] = known
                continue
            target = f"{self.uri}/s{self.snapshot}/{relative}"
            storage.copy_file(path, target)
            files[relative] = {
                "object": target,
                "size": info.st_size,
                "mtime_ns": info.st_mtime_ns,
            }
        state = {"key": self.key, "snapshot": self.snapshot, "files": files}
        storage.write_bytes(self.pointer, json.dumps(state, indent=1).encode())
        kept = {entry["object"] for entry in files.values()}
        for entry in self.files.values():  # the previous snapshot's objects no longer named
            if entry["object"] not in kept:
                storage.delete(entry["object"])
        self.files = files

    def clear(self) -> None:
        storage.delete_tree(self.uri)
        self.files, self.snapshot = {}, 0


def sync_callback(state: DurableState, work: Path):
    """A Keras callback that snapshots `work` after every epoch; put it after the callbacks
    that write there (CSVLogger, BackupAndRestore, ModelCheckpoint, TensorBoard)."""
    import keras

    class DurableSync(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            state.save(work)

    return DurableSync()


@dataclass
class FinishedParts:
    """The finished parts of a run of several models (ensemble members, cross-validation
    folds), kept beside its durable state: a retried task in a fresh pod fetches them
    instead of training them again. Each part is its folder's files, then a pointer
    (`<name>.json`, written last, naming the run's key): a part whose copy was cut off
    has no pointer and is trained again; one made for another key is not used."""

    uri: str
    key: str

    def fetch(self, name: str, folder: Path) -> bool:
        pointer = f"{self.uri}/{name}.json"
        if not storage.exists(pointer):
            return False
        found = json.loads(storage.read_bytes(pointer))
        if found.get("key") != self.key:
            return False
        for relative in found["files"]:
            storage.download_file(f"{self.uri}/{name}/{relative}", folder / relative)
        progress.log("train", f"{name}: finished in an earlier attempt, fetched from {self.uri}")
        return True

    def keep(self, name: str, folder: Path) -> None:
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        for relative in files:
            storage.copy_file(folder / relative, f"{self.uri}/{name}/{relative}")
        body = json.dumps({"key": self.key, "files": files}).encode()
        storage.write_bytes(f"{self.uri}/{name}.json", body)

    def clear(self) -> None:
        storage.delete_tree(self.uri)


def run_key(kind: str, config, identity: str) -> str:
    """The resume key of a run of several models: its kind, whole config and dataset."""
    import hashlib

    text = json.dumps([kind, config.to_dict(), identity], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def finished_parts(state_uri: str | None, key: str) -> FinishedParts | None:
    """Where a run writing `state_uri` keeps its finished parts (`<output>.finished/`, apart
    from the `.state/` a model's own fit clears); None for a local output."""
    if state_uri_for(state_uri) is None:
        return None
    return FinishedParts(str(state_uri).rstrip("/") + ".finished", key)
