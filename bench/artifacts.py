"""Per-example artifacts (an evaluator's CSV of cases) stored gzip-compressed: records triple with three seeds per
full row, the repository should not. The runner compresses every ``*.csv`` an evaluator leaves in its artifacts
folder; ``open_text`` reads either form. Gzip with ``mtime=0`` and no file name: identical CSVs give identical
bytes, so the committed artifacts stay deterministic.
"""
from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

from bench.records import cell_folder, scan_records, write_json_atomic

SUFFIX = ".gz"


def compress(path: Path) -> Path:
    """``x.csv`` -> ``x.csv.gz`` (deterministic bytes); the plain file is removed."""
    target = path.with_name(path.name + SUFFIX)
    data = path.read_bytes()
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as fh:
        fh.write(data)
    target.write_bytes(buf.getvalue())
    path.unlink()
    return target


def compress_csvs(folder: Path) -> list[Path]:
    """Compress every plain ``*.csv`` under ``folder``; returns the ``.csv.gz`` files written."""
    return [compress(p) for p in sorted(Path(folder).rglob("*.csv")) if p.is_file()]


def open_text(path: Path):
    """A text handle on ``path`` (a ``.csv``), reading ``path.gz`` when only the compressed form exists."""
    path = Path(path)
    if not path.is_file() and path.with_name(path.name + SUFFIX).is_file():
        return gzip.open(path.with_name(path.name + SUFFIX), "rt", encoding="utf-8", newline="")
    if path.suffix == SUFFIX:
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def unreferenced(results: Path) -> list[Path]:
    """The evaluators' artifact folders (``<results>/artifacts/eval/<key>``) that no record names: left by runs
    that newer records replaced; no table or README sample reads them."""
    named = {Path(r["artifacts"]).name for r in scan_records(results / "records")[0] if r.get("artifacts")}
    folder = results / "artifacts" / "eval"
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in named) if folder.is_dir() else []


def relocate_records(results: Path) -> list[Path]:
    """Older records named their artifact folder by the path the run had (``/tmp/x/artifacts/eval/<key>``): set
    it to ``cell_folder`` when that is the folder's name, so the records read as valid again. Only the one field
    changes; returns the records rewritten."""
    rewritten = []
    for path in sorted((results / "records").rglob("*.json")):
        try:
            record = json.loads(path.read_text())
        except ValueError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("artifacts"), str) or "key" not in record:
            continue
        want = cell_folder(record["key"])
        if record["artifacts"] != want and Path(record["artifacts"]).name == Path(want).name:
            write_json_atomic(path, {**record, "artifacts": want})
            rewritten.append(path)
    return rewritten


if __name__ == "__main__":  # one-off for an older results folder: `python -m bench.artifacts leaderboards`
    import shutil
    import sys

    for root in map(Path, sys.argv[1:]):
        for fixed in relocate_records(root):
            print(f"rewrote {fixed}")
        for written in compress_csvs(root / "artifacts"):
            print(f"wrote {written}")
        for stale in unreferenced(root):
            shutil.rmtree(stale)
            print(f"removed {stale} (no record names it)")
