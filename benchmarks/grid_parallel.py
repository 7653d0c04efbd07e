"""Grid wall time, sequential vs ``--jobs N``, and cache effectiveness, measured through the ``bench`` CLI.

Four runs of the same grid, each a fresh ``bench run`` process (so worker start-up is counted):
(1) sequential into an empty results folder, (2) ``--jobs N`` into another empty folder, (3) ``--jobs N``
again on (2)'s folder (every cell finished: nothing to do), (4) sequential on (1)'s folder after deleting its
records but keeping its model cache (every cell re-evaluated, no model trained). Trainings are counted from
the runner's "training ..." lines. Records of (1) and (2) are compared (metrics and config ids).

    OMP_NUM_THREADS=1 python benchmarks/grid_parallel.py --suite smoke --jobs 2 --json grid_parallel.json

Set OMP_NUM_THREADS=1 on a shared or busy machine: otherwise the sequential run uses every core's torch
thread and suffers most from the other load, which flatters the parallel run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def bench_run(results: Path, suite: str, jobs: int) -> dict:
    cmd = [sys.executable, "-m", "bench.cli", "--results", str(results), "run", "--suite", suite, "--device", "cpu"]
    if jobs > 1:
        cmd += ["--jobs", str(jobs)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "BENCH_PROGRESS": "0"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    trainings = sum(1 for line in proc.stdout.splitlines() if "  training " in line)
    return {"command": " ".join(cmd[2:]), "wall_s": round(wall, 2), "trainings": trainings}


def comparable(results: Path) -> dict:
    out = {}
    for path in sorted((results / "records").rglob("*.json")):
        r = json.loads(path.read_text())
        out[str(path.relative_to(results))] = [r["config_id"], r["status"], r["metrics"]]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="smoke")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--json", type=Path, default=Path("grid_parallel.json"))
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="grid-parallel-") as tmp:
        seq_dir, par_dir = Path(tmp) / "seq", Path(tmp) / "par"
        runs = {"sequential": bench_run(seq_dir, args.suite, 1),
                f"jobs {args.jobs}": bench_run(par_dir, args.suite, args.jobs),
                f"jobs {args.jobs}, all finished": bench_run(par_dir, args.suite, args.jobs)}
        shutil.rmtree(seq_dir / "records")
        runs["sequential, models cached"] = bench_run(seq_dir, args.suite, 1)
        seq, par = comparable(seq_dir), comparable(par_dir)
        differing = sorted(k for k in seq.keys() | par.keys() if seq.get(k) != par.get(k))
        cells = len(seq)

    base = runs["sequential"]["wall_s"]
    print(f"grid: suite {args.suite}, {cells} cells, {os.cpu_count()} CPU cores; records identical: {not differing}")
    for path in differing:
        print(f"  differs: {path}")
    print(f"{'run':<28} {'wall s':>8} {'speed-up':>9} {'trainings':>10}")
    for name, r in runs.items():
        print(f"{name:<28} {r['wall_s']:>8.1f} {base / r['wall_s']:>8.2f}x {r['trainings']:>10}")
    report = {"suite": args.suite, "jobs": args.jobs, "cells": cells, "cpu_count": os.cpu_count(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "records_identical": not differing, "differing_records": differing, "runs": runs,
              "speedup_jobs": round(base / runs[f"jobs {args.jobs}"]["wall_s"], 3)}
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
