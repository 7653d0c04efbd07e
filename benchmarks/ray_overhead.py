"""Grid wall time with the Ray executor vs the sequential local run, measured through the ``bench`` CLI.

Four measurements, side by side in one run: (1) ``bench run`` sequential into an empty results folder,
(2) ``bench run --executor ray`` into another empty folder (a fresh process that starts a local Ray instance
with one CPU per core and stops it: the wall time includes Ray's start-up and shutdown), (3) the same into a
third folder on an already running cluster (``ray start --head --block`` on a free port, then
``--address``; its workers still start fresh for each run), (4) Ray's start-up and shutdown alone (``import
ray; ray.init(); ray.shutdown()`` in a fresh process), to tell how much of the overhead is fixed cost. The
records of (1), (2) and (3) are compared (metrics, config ids, definitions). The benchmark's own head node
runs with RAY_AUTH_MODE=disabled (driver too), so no token is needed; it is stopped at the end.

    OMP_NUM_THREADS=1 python benchmarks/ray_overhead.py --suite smoke --json ray_overhead.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grid_parallel import comparable  # a sibling script: benchmarks/ is on sys.path when run as a script

STARTUP = ("import logging, ray; ray.init(address='local', include_dashboard=False, logging_level=logging.WARNING); "
           "ray.shutdown()")


NO_AUTH = {"RAY_AUTH_MODE": "disabled"}  # the benchmark's own short-lived head node


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "BENCH_PROGRESS": "0", **(env or {})})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall, proc.stdout + proc.stderr


def bench_run(results: Path, suite: str, *extra: str, env: dict | None = None) -> dict:
    cmd = [sys.executable, "-m", "bench.cli", "--results", str(results), "run", "--suite", suite, "--device", "cpu",
           *extra]
    wall, out = timed(cmd, env)
    trainings = sum(1 for line in out.splitlines() if "  training " in line)
    return {"command": " ".join(cmd[2:]), "wall_s": round(wall, 2), "trainings": trainings}


@contextlib.contextmanager
def running_head(port: int):
    """A Ray head node for the duration (``ray start --block``: stopping that process stops its daemons)."""
    ray_cli = Path(sys.executable).with_name("ray")
    head = subprocess.Popen([str(ray_cli), "start", "--head", "--block", "--port", str(port), "--include-dashboard",
                             "false", "--disable-usage-stats"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            env={**os.environ, **NO_AUTH})
    try:
        for _ in range(60):  # until it answers
            if subprocess.run([str(ray_cli), "status", "--address", f"127.0.0.1:{port}"], capture_output=True,
                              env={**os.environ, **NO_AUTH}).returncode == 0:
                break
            time.sleep(1)
        yield
    finally:
        head.terminate()
        head.wait(timeout=60)
        # Ray leaves the head's address here, and a later plain ray.init() would try to join the stopped head.
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.exists() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="smoke")
    p.add_argument("--json", type=Path, default=Path("ray_overhead.json"))
    p.add_argument("--port", type=int, default=6390, help="for the benchmark's own Ray head node")
    args = p.parse_args()

    import ray

    with tempfile.TemporaryDirectory(prefix="ray-overhead-") as tmp:
        seq_dir, ray_dir = Path(tmp) / "seq", Path(tmp) / "ray"
        runs = {"sequential": bench_run(seq_dir, args.suite),
                "ray (local instance)": bench_run(ray_dir, args.suite, "--executor", "ray")}
        with running_head(args.port):
            runs["ray (running cluster)"] = bench_run(Path(tmp) / "cluster", args.suite, "--executor", "ray",
                                                      "--address", f"127.0.0.1:{args.port}", env=NO_AUTH)
        startup_s, _ = timed([sys.executable, "-c", STARTUP])
        seq = comparable(seq_dir)
        others = {name: comparable(Path(tmp) / name) for name in ("ray", "cluster")}
        differing = sorted(f"{name}: {k}" for name, recs in others.items() for k in seq.keys() | recs.keys()
                           if seq.get(k) != recs.get(k))
    base, ray_wall = runs["sequential"]["wall_s"], runs["ray (local instance)"]["wall_s"]
    runs["ray start-up + shutdown only"] = {"command": "python -c " + json.dumps(STARTUP),
                                            "wall_s": round(startup_s, 2), "trainings": 0}

    print(f"grid: suite {args.suite}, {len(seq)} cells, {os.cpu_count()} CPU cores, ray {ray.__version__}; "
          f"records identical: {not differing}")
    for path in differing:
        print(f"  differs: {path}")
    print(f"{'run':<30} {'wall s':>8} {'vs sequential':>14} {'trainings':>10}")
    for name, r in runs.items():
        print(f"{name:<30} {r['wall_s']:>8.1f} {r['wall_s'] / base:>13.2f}x {r['trainings']:>10}")
    report = {"suite": args.suite, "cells": len(seq), "cpu_count": os.cpu_count(), "ray_version": ray.__version__,
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "records_identical": not differing,
              "differing_records": differing, "runs": runs,
              "ray_overhead_s": round(ray_wall - base, 2), "ray_wall_ratio": round(ray_wall / base, 3),
              "ray_running_cluster_overhead_s": round(runs["ray (running cluster)"]["wall_s"] - base, 2),
              "ray_startup_share_of_overhead": round(startup_s / (ray_wall - base), 3) if ray_wall > base else None}
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"ray overhead: {ray_wall - base:+.1f} s ({ray_wall / base:.2f}x), on a running cluster "
          f"{report['ray_running_cluster_overhead_s']:+.1f} s; start-up + shutdown alone: {startup_s:.1f} s")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
