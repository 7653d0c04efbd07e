"""Trained models on disk: safetensors weights plus JSON metadata, keyed by the hash of the config.

The JSON is written last and stores the weights' sha256, so a half-written or corrupted artifact is detected
(and rebuilt by the runner). Nothing is ever unpickled.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bench.records import write_json_atomic


class CorruptArtifact(Exception):
    pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# The two locks of ``ModelCache.alone``: steps pass the gate (shared, at once released) and hold busy (shared)
# while they run; a process alone holds both exclusively, so no step starts and every running one has ended.
GATE, BUSY = "device-gate", "device-busy"


class ModelCache:
    def __init__(self, root: Path):
        self.root = root
        self._alone = False  # inside ``alone()``: this process has the device to itself

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.safetensors", self.root / f"{key}.json"

    def has(self, key: str) -> bool:
        return self.paths(key)[1].exists()

    @contextlib.contextmanager
    def lock(self, key: str, shared: bool = False):
        """Held while one model is looked up and trained: parallel workers that need the same model (a shared
        teacher) train it once; the others wait, then load it. The OS drops the lock if its holder dies.
        ``shared``: any number of shared holders at once, none beside an exclusive one."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock; the atomic writes still keep every file whole
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{key}.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def alone(self):
        """This process's work inside runs with the device to itself: every run on this results folder (the
        lanes of this one, another grid's beside it) finishes the step it is in -- a model's training, a cell --
        and starts no other until this ends. For a job that ran out of memory beside other lanes."""
        with self.lock(GATE), self.lock(BUSY):
            self._alone = True
            try:
                yield
            finally:
                self._alone = False

    @contextlib.contextmanager
    def turn(self):
        """One step (a model's training and clean pass, or a cell): it waits while another process is ``alone()``
        and keeps that one waiting until it ends. Taken only at the top of a step, holding no other lock, so that
        the waits cannot form a cycle (the lock order is gate, busy, then model and cell locks)."""
        if self._alone:  # this process's own steps
            yield
            return
        with self.lock(GATE, shared=True):
            pass  # closed while someone is or waits to be alone: no new step starts
        with self.lock(BUSY, shared=True):
            yield

    def busy(self, key: str) -> bool:
        """Whether another holder of ``key``'s lock (a parallel worker training that model) has it now."""
        try:
            import fcntl
        except ImportError:
            return False
        path = self.root / f"{key}.lock"
        if not path.exists():
            return False
        with open(path, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
        return False

    def save(self, key: str, model, meta: dict[str, Any]) -> str:
        """Write the weights, then the metadata; returns the weights' sha256."""
        from safetensors.torch import save_file

        weights, meta_path = self.paths(key)
        self.root.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{key}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(state, tmp)
            os.replace(tmp, weights)
        finally:
            Path(tmp).unlink(missing_ok=True)
        digest = _sha256(weights)
        write_json_atomic(meta_path, {**meta, "key": key, "sha256": digest})
        return digest

    def load(self, key: str, model) -> dict[str, Any]:
        """Load weights into ``model``; return the metadata. Raise CorruptArtifact on any inconsistency."""
        from safetensors.torch import load_file

        weights, meta_path = self.paths(key)
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("key") != key or not weights.exists() or _sha256(weights) != meta.get("sha256"):
                raise CorruptArtifact(f"checksum mismatch for {weights.name}")
            model.load_state_dict(load_file(str(weights)), strict=True)
        except CorruptArtifact:
            raise
        except Exception as exc:  # unreadable JSON, bad header, wrong shapes...
            raise CorruptArtifact(f"{weights.name}: {type(exc).__name__}: {exc}") from exc
        return meta

    def stored_meta(self, key: str) -> dict[str, Any]:
        """The cached model's metadata ({}: no readable entry), without reading the weights (``load`` verifies
        them): which weights a run would evaluate, and which run trained them."""
        try:
            meta = json.loads(self.paths(key)[1].read_text())
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) and meta.get("key") == key else {}

    def discard(self, key: str) -> None:
        for path in self.paths(key):
            path.unlink(missing_ok=True)
