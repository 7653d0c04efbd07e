"""Result records: one JSON file per cell, schema-versioned, written atomically, checked on write and read.

A record (schema ``bench.record/1``)::

    {"schema": "bench.record/1", "key": <sha256 of the cell config and code version>,
     "config_id": <sha256 of the cell config alone>, "status": "ok" | "failed",
     "track": "image-robustness", "profile": "quick", "seed": 0,
     "dataset": {"name", "params", "origin"},
     "defense": {"name", "params", "origin", "model_key", "weights_sha256"},  # the evaluated weights file
     "attack":  {"name", "params", "origin", "norm", "definition"},
     "metrics": [{"name": "clean_acc", "value": 0.91, "n": 1000},
                 {"name": "robust_acc", "norm": "linf", "eps": 0.1, "value": 0.72, "n": 1000,
                  "definition": "pgd-linf(steps=20, ...)"}, ...],
     "threat_model": {"norm": "linf", "epsilons": [...], "checked": <examples checked>, "violations": <n>},
     "timings": {"train_s": float, "train_cached": bool, "eval_s": float,
                 "gpu_peak_mib": int},  # CUDA only: the cell's peak of memory reserved by PyTorch
     "hardware": {...}, "packages": {...}, "git_commit": str | null, "bench_version": str, "created": iso-8601,
     "code": {<module>: <normalised-source hash>},  # the code the result depends on (bench.hashing.code_hashes)
     "error": {"type", "message", "log"},  # failed records only
     "artifacts": "artifacts/eval/<key[:16]>",  # relative to the results root; only where the cell wrote some
     "per_example": [{"definition", "eps", "n", "robust": <base64 of the packed bits>, "sha256", "violations"}]
    }

``per_example`` (attacks and certifiers) holds each evaluated (definition, eps)'s per-example outcome, so that a
composite result (a worst case, a certifier's companion) is the per-example AND of its components' stored
outcomes, whichever process computed them.

Metrics are floats with their sample count ``n``, never rounded strings.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from bench.errors import InvariantViolation

SCHEMA = "bench.record/1"
EPS_TOL = 1e-12


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a reader (or a crash) never sees a
    partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def metric(records_metrics: list[dict], name: str, eps: float | None = None) -> dict | None:
    for m in records_metrics:
        if m["name"] == name and (eps is None or abs(m.get("eps", -1) - eps) <= EPS_TOL):
            return m
    return None


def pack_mask(mask, definition: str, eps: float, violations: int = 0) -> dict:
    """A per-example bool mask as a compact, checksummed record entry."""
    import numpy as np

    bits = np.packbits(np.asarray(mask, dtype=bool)).tobytes()
    return {"definition": definition, "eps": float(eps), "n": int(len(mask)),
            "robust": base64.b64encode(bits).decode("ascii"), "sha256": hashlib.sha256(bits).hexdigest()[:16],
            "violations": int(violations)}


def unpack_bits(entry: dict):
    """The bool numpy array of a ``pack_mask`` entry (tables use it: no torch); ``InvariantViolation`` when it
    does not match its checksum."""
    import numpy as np

    bits = base64.b64decode(entry["robust"])
    if hashlib.sha256(bits).hexdigest()[:16] != entry["sha256"]:
        raise InvariantViolation(f"per-example outcome of {entry['definition']} at eps {entry['eps']} does not "
                                 "match its checksum")
    return np.unpackbits(np.frombuffer(bits, dtype=np.uint8))[:entry["n"]].astype(bool)


def unpack_mask(entry: dict):
    """The bool tensor of a ``pack_mask`` entry; ``InvariantViolation`` when it does not match its checksum."""
    import torch

    return torch.from_numpy(unpack_bits(entry).copy())


REQUIRED = {"key": str, "config_id": str, "status": str, "track": str, "profile": str, "seed": int,
            "dataset": dict, "defense": dict, "attack": dict, "metrics": list}


def cell_folder(key: str) -> str:
    """Where a cell's artifacts live, relative to the results root; a record names its folder so, which keeps the
    name true wherever the results folder is moved or copied (a GPU host's results imported into leaderboards/)."""
    return f"artifacts/eval/{key[:16]}"


def problem(record: Any) -> str | None:
    """Why a record cannot be trusted (schema, types, invariants), or None. The same check on write and read."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("schema") != SCHEMA:
        return f"schema is {record.get('schema')!r}, not {SCHEMA!r}"
    for key, kind in REQUIRED.items():
        if not isinstance(record.get(key), kind) or (kind is int and isinstance(record.get(key), bool)):
            return f"field {key!r} is missing or not a {kind.__name__}"
    for part in ("dataset", "defense", "attack"):
        if not isinstance(record[part].get("name"), str):
            return f"{part}.name is missing"
    if record["status"] not in ("ok", "failed", "not_certifiable"):
        return f"unknown status {record['status']!r}"
    if "artifacts" in record and record["artifacts"] != cell_folder(record["key"]):
        return (f"artifacts {record['artifacts']!r} is not the cell's own folder {cell_folder(record['key'])!r} "
                "(an older record: `python -m bench.artifacts <results>` rewrites it)")
    for m in record["metrics"]:
        if not isinstance(m, dict) or not isinstance(m.get("name"), str):
            return "a metric without a name"
        value, n = m.get("value"), m.get("n")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return f"metric {m['name']} has a non-finite or missing value ({value!r})"
        if not isinstance(n, int) or isinstance(n, bool):
            return f"metric {m['name']} has no sample count n"
    if record["status"] == "ok":
        if not record["metrics"]:
            return "an ok record without metrics"
        try:
            check_invariants(record)
        except InvariantViolation as exc:
            return str(exc)
    for entry in record.get("per_example") or []:
        try:
            unpack_mask(entry)
        except (KeyError, TypeError, ValueError, InvariantViolation) as exc:
            return f"per-example outcome damaged: {exc}"
    return None


def check_invariants(record: dict) -> None:
    """robust <= clean and verified <= empirical robust, at every eps; all values in [0, 1]."""
    metrics = record["metrics"]
    for m in metrics:
        if not (0.0 <= m["value"] <= 1.0) or m["n"] <= 0:
            raise InvariantViolation(f"metric {m['name']} has value {m['value']} over n={m['n']}")
    clean = metric(metrics, "clean_acc")
    for m in metrics:
        if m["name"] in ("robust_acc", "verified_acc") and clean and m["value"] > clean["value"] + 1e-12:
            raise InvariantViolation(
                f"{m['name']} {m['value']:.4f} > clean_acc {clean['value']:.4f} at eps {m.get('eps')}")
        if m["name"] == "verified_acc":
            empirical = metric(metrics, "robust_acc", m.get("eps"))
            if empirical and m["value"] > empirical["value"] + 1e-12:
                raise InvariantViolation(
                    f"verified_acc {m['value']:.4f} > robust_acc {empirical['value']:.4f} at eps {m['eps']}")


def record_path(records_dir: Path, record: dict) -> Path:
    """records/<track>/<dataset>/<profile>/<defense>/<attack>-s<seed>-<config_id[:10]>.json

    The name leaves out the code version, so a rerun after a code change replaces the old record."""
    return (records_dir / record["track"] / record["dataset"]["name"] / record["profile"]
            / record["defense"]["name"]
            / f"{record['attack']['name']}-s{record['seed']}-{record['config_id'][:10]}.json")


def write_record(records_dir: Path, record: dict) -> Path:
    record = {"schema": SCHEMA, **record}
    if why := problem(record):
        raise InvariantViolation(f"refusing to write a record: {why}")
    path = record_path(records_dir, record)
    write_json_atomic(path, record)
    return path


def load_record(path: Path) -> tuple[dict | None, str | None]:
    """(record, None) for a valid record; (None, reason) for a damaged or tampered one; (None, None) when absent."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"unreadable: {exc}"
    try:
        record = json.loads(text)
    except ValueError as exc:
        return None, f"not JSON ({exc})"
    if why := problem(record):
        return None, why
    return record, None


def read_record(path: Path) -> dict | None:
    """A valid record, or None (absent, damaged or tampered: its cell is re-run)."""
    return load_record(path)[0]


def scan_records(records_dir: Path) -> tuple[list[dict], list[tuple[Path, str]]]:
    """(valid records, [(path, reason)] of the damaged ones), in path order."""
    valid, damaged = [], []
    for path in sorted(records_dir.rglob("*.json")):
        record, why = load_record(path)
        if record is not None:
            valid.append(record)
        elif why is not None:
            damaged.append((path, why))
    return valid, damaged


def iter_records(records_dir: Path) -> Iterator[dict]:
    yield from scan_records(records_dir)[0]
