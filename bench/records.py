"""Result records: one JSON file per cell, schema-versioned, written atomically, checked on write and read.

A record (schema ``bench.record/1``)::

    {"schema": "bench.record/1", "key": <sha256 of the cell config and code version>,
     "config_id": <sha256 of the cell config alone>, "status": "ok" | "failed",
     "track": "image-robustness", "profile": "quick", "seed": 0,
     "dataset": {"name", "params", "origin"},
     "defense": {"name", "params", "origin", "model_key"},
     "attack":  {"name", "params", "origin", "norm", "definition"},
     "metrics": [{"name": "clean_acc", "value": 0.91, "n": 1000},
                 {"name": "robust_acc", "norm": "linf", "eps": 0.1, "value": 0.72, "n": 1000,
                  "definition": "pgd-linf(steps=20, ...)"}, ...],
     "threat_model": {"norm": "linf", "epsilons": [...], "checked": <examples checked>, "violations": <n>},
     "timings": {"train_s": float, "train_cached": bool, "eval_s": float},
     "hardware": {...}, "packages": {...}, "git_commit": str | null, "bench_version": str, "created": iso-8601,
     "error": {"type", "message", "log"}   # failed records only
    }

Metrics are floats with their sample count ``n``, never rounded strings.
"""
from __future__ import annotations

import json
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
    if record["status"] == "ok":
        check_invariants(record)
    path = record_path(records_dir, record)
    write_json_atomic(path, record)
    return path


def read_record(path: Path) -> dict | None:
    """A valid record, or None for an unreadable/foreign file (it will be recomputed)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        return None
    return record


def iter_records(records_dir: Path) -> Iterator[dict]:
    for path in sorted(records_dir.rglob("*.json")):
        record = read_record(path)
        if record is not None:
            yield record
