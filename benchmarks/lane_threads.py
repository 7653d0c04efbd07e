"""Lanes and native thread pools: N processes side by side, each doing the text attacks' GloVe neighbour
look-up (numpy, a 50,000 x 50 matrix times a vector, then a partial sort) as ``resources.Glove`` does, started
once with the environment as it is and once inside ``bench.executors.capped_threads`` (what ``bench run --jobs``
gives its workers). Wall time of the whole group, and its ratio.

    python benchmarks/lane_threads.py --lanes 1 2 4 --json benchmarks/results/lane_threads_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.executors import THREAD_VARS, capped_threads

LANE = r'''
import numpy as np
rng = np.random.default_rng(0)
unit = rng.standard_normal((50_000, 50)).astype(np.float32)
for i in rng.integers(0, 50_000, {lookups}):
    cos = unit @ unit[i]
    top = np.argpartition(-cos, 70)[:70]
'''


def group_wall(lanes: int, lookups: int) -> float:
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", LANE.format(lookups=lookups)]) for _ in range(lanes)]
    if any(p.wait() for p in procs):
        raise SystemExit("a lane failed")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lanes", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--lookups", type=int, default=3000, help="neighbour look-ups per lane")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if min(args.lanes) < 1 or args.lookups < 1:
        ap.error("--lanes and --lookups must be positive")
    cores = os.cpu_count() or 1
    rows = []
    for lanes in args.lanes:
        as_is = group_wall(lanes, args.lookups)
        threads = max(1, cores // lanes)
        with capped_threads(threads):
            capped = group_wall(lanes, args.lookups)
        rows.append({"lanes": lanes, "threads_per_lane_capped": threads, "wall_s_environment_as_is": round(as_is, 2),
                     "wall_s_capped": round(capped, 2), "speedup": round(as_is / capped, 2)})
        print(f"{lanes} lane(s) on {cores} cores: {as_is:.1f} s as is, {capped:.1f} s capped at {threads} "
              f"thread(s) each ({as_is / capped:.2f}x)")
    if args.json:
        env = {name: os.environ.get(name) for name in THREAD_VARS}
        args.json.write_text(json.dumps({"cores": cores, "environment": env, "lookups": args.lookups,
                                         "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
