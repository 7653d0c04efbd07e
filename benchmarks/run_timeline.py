"""What a (GPU) run spent its time on, read back from its records and, optionally, the host's load logs.

Per defense: its jobs' training seconds, each evaluator's seconds, and when its first and last cell finished
(seconds after the run's first record minus that record's own cell time, i.e. roughly the run's start); the
whole table's span; and, when given, the GPU utilisation (``nvidia-smi --query-gpu=timestamp,utilization.gpu,
memory.used --format=csv,noheader -l 20``) and the load average (``date +%T`` and /proc/loadavg every 30 s)
while it ran: whether the lanes were bound by the GPU or by the host's cores.

    python benchmarks/run_timeline.py leaderboards/records/concept-erasure/fashion-erase-bag/full --commit 153f688 \\
        --util benchmarks/results/erasure_full_bag_h100/util.csv --load benchmarks/results/erasure_full_bag_h100/load.txt \\
        --log benchmarks/results/erasure_full_bag_h100/detached.log.gz --json benchmarks/results/erasure_full_bag_h100.json
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
from collections import defaultdict
from datetime import datetime
from pathlib import Path


def _record(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == "bench.record/1" else None


def timeline(folder: Path, commit: str = "") -> dict:
    """``commit`` (a prefix) keeps one run's records where a table's folder holds several runs."""
    records = [r for r in map(_record, sorted(folder.rglob("*.json")))
               if r and str(r.get("git_commit") or "").startswith(commit)]
    if not records:
        raise ValueError(f"no bench records under {folder}" + (f" from commit {commit}" if commit else ""))
    done = {id(r): datetime.fromisoformat(r["created"]) for r in records}
    first = min(records, key=lambda r: done[id(r)])
    start = done[id(first)].timestamp() - first["timings"].get("eval_s", 0) - first["timings"].get("train_s", 0)
    by_defense: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_defense[r["defense"]["name"]].append(r)
    out = {"records": len(records), "hardware": {k: first["hardware"].get(k) for k in ("gpu", "cpu_count", "threads")},
           "git_commit": first.get("git_commit"), "defenses": {}}
    for name, rs in sorted(by_defense.items()):
        train = {r["seed"]: r["timings"]["train_s"] for r in rs}
        evals = defaultdict(list)
        for r in rs:
            evals[r["attack"]["name"]].append(r["timings"]["eval_s"])
        ends = [done[id(r)].timestamp() - start for r in rs]
        out["defenses"][name] = {
            "cells": len(rs), "seeds": sorted(train), "train_s_mean": round(statistics.fmean(train.values()), 1),
            "eval_s_mean": {a: round(statistics.fmean(v), 1) for a, v in sorted(evals.items())},
            "first_cell_done_s": round(min(ends)), "last_cell_done_s": round(max(ends))}
    out["span_s"] = round(max(done.values()).timestamp() - start)
    return out


def util_summary(path: Path) -> dict:
    busy = [float(line.split(",")[1].strip(" %")) for line in path.read_text().splitlines() if line.count(",") == 2]
    busy = [b for b in busy if b > 0]  # the idle samples before the first lane started
    return {"samples": len(busy), "gpu_util_mean_pct": round(statistics.fmean(busy), 1) if busy else None,
            "gpu_util_min_pct": min(busy, default=None)}


def load_summary(path: Path, cores: int | None) -> dict:
    one_minute = [float(line.split()[1]) for line in path.read_text().splitlines() if len(line.split()) >= 2]
    return {"samples": len(one_minute), "load_1min_max": max(one_minute, default=None),
            "load_1min_last": one_minute[-1] if one_minute else None, "cores": cores}


BAR = re.compile(r"(?P<desc>[\w-]+ \([^)]*\)):\s+\d+%\|[^|]*\| (?P<done>\d+)/(?P<total>\d+) "
                 r"\[(?P<elapsed>[\d:]+)<[^,]*,\s*(?P<rate>[\d.]+)(?P<unit>s/it|it/s)\]")


def _seconds(clock: str) -> int:
    return sum(int(part) * 60 ** i for i, part in enumerate(reversed(clock.split(":"))))


def unfinished_trainings(path: Path, finished: set[str]) -> list[dict]:
    """The last progress bar of each training whose defense has no record yet (a run cut short), with the
    total it projects at its current rate. Jobs of one defense share a bar name: the last bar stands for them.
    A log that says the run is done has none: each of its trainings ended (a failed one is a failed cell), and a
    bar's name need not be its defense's (advunlearn-fast's bar says "advunlearn")."""
    last: dict[str, dict] = {}
    text = gzip.open(path, "rt", errors="replace").read() if path.suffix == ".gz" else path.read_text(errors="replace")
    if "DETACHED RUN DONE" in text:
        return []
    for m in BAR.finditer(text.replace("\r", "\n")):
        if m["desc"].split(" (")[0] in finished:
            continue
        s_per_it = float(m["rate"]) if m["unit"] == "s/it" else 1 / float(m["rate"])
        done, total, elapsed = int(m["done"]), int(m["total"]), _seconds(m["elapsed"])
        last[m["desc"]] = {"training": m["desc"], "done": done, "of": total, "elapsed_s": elapsed,
                           "s_per_it": s_per_it, "projected_total_s": round(elapsed + (total - done) * s_per_it)}
    return list(last.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", type=Path, help="a folder of records (searched recursively)")
    parser.add_argument("--commit", default="", help="only the records made at this commit (a prefix): one run")
    parser.add_argument("--util", type=Path, help="nvidia-smi utilisation log")
    parser.add_argument("--load", type=Path, help="load-average log")
    parser.add_argument("--log", type=Path, help="the run's log (progress bars: BENCH_PROGRESS=1)")
    parser.add_argument("--json", type=Path, help="write the summary here too")
    args = parser.parse_args()
    for path in (args.records, args.util, args.load, args.log):
        if path is not None and not path.exists():
            parser.error(f"{path}: not found")
    if args.json is not None and not args.json.parent.is_dir():
        parser.error(f"--json {args.json}: its folder does not exist")
    try:
        out = timeline(args.records, args.commit)
    except ValueError as exc:
        parser.error(str(exc))
    if args.util:
        out["gpu"] = util_summary(args.util)
    if args.load:
        out["host_load"] = load_summary(args.load, out["hardware"].get("cpu_count"))
    if args.log:
        out["unfinished_trainings"] = unfinished_trainings(args.log, set(out["defenses"]))
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
