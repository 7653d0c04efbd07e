"""Kill a grid at random moments, resume it, and check that nothing is lost, duplicated or different.

    python benchmarks/fault_injection.py --kills 20 [--out benchmarks/results/fault_injection]

A reference run of the grid finishes undisturbed. Then, for each of ``--kills`` trials, the same grid starts in a
fresh results folder, is killed with SIGKILL at a random moment of its run time (training, evaluation or a
record write: whatever it is doing), and is rerun to completion. Each trial checks: every reference cell has
exactly one record (0 lost, 0 duplicated), and each record's outcome (key, status, metrics, per-example
results, threat-model counts) equals the reference's. Writes ``<out>.json`` and ``<out>.png`` (when matplotlib is
there): per trial, when it was killed, how many cells were finished at that moment, and whether the resumed
records were identical.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = ["--defense", "standard", "pgd-at", "--attack", "fgsm", "pgd-linf", "deepfool", "worst-case",
        "certified-ibp", "--dataset", "uci-digits", "--profile", "smoke"]


def bench(results: Path, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "BENCH_PROGRESS": "0", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.Popen([sys.executable, "-m", "bench.cli", "--results", str(results), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def outcomes(results: Path) -> dict[str, list[dict]]:
    """Cell (record path) -> the outcomes of its record files (more than one would be a duplicate)."""
    cells: dict[str, list[dict]] = {}
    for path in sorted((results / "records").rglob("*.json")):
        r = json.loads(path.read_text())
        cell = path.relative_to(results / "records").as_posix()
        cells.setdefault(cell, []).append({k: r.get(k) for k in ("key", "status", "metrics", "per_example",
                                                                  "threat_model")})
    return cells


def stage(output: str) -> str:
    """What the run was doing when it was killed, from its last progress line."""
    for line in reversed(output.splitlines()):
        if "training" in line:
            return "training"
        if "cells to run" in line or "FAILED" in line or "WARNING" in line:
            return "evaluation"
    return "start-up"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fault_injection"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench-faults-"))

    start = time.perf_counter()
    reference_run = bench(work / "reference", "run", *GRID)
    reference_run.communicate()
    total_s = time.perf_counter() - start
    if reference_run.returncode != 0:
        print("the reference run failed", file=sys.stderr)
        return 1
    reference = outcomes(work / "reference")
    print(f"reference: {len(reference)} cells in {total_s:.1f} s")

    trials = []
    for k in range(args.kills):
        results = work / f"trial{k}"
        at = rng.uniform(0.02, 0.98) * total_s
        run = bench(results, "run", *GRID)
        try:
            out, _ = run.communicate(timeout=at)
            killed = False  # finished before the moment came
        except subprocess.TimeoutExpired:
            run.send_signal(signal.SIGKILL)
            out, _ = run.communicate()
            killed = True
        finished_at_kill = len(outcomes(results)) if (results / "records").is_dir() else 0
        resumed = bench(results, "run", *GRID)
        resumed.communicate()
        after = outcomes(results)
        lost = sorted(set(reference) - set(after))
        duplicated = sorted(c for c, recs in after.items() if len(recs) > 1)
        extra = sorted(set(after) - set(reference))
        different = sorted(c for c in set(reference) & set(after) if after[c][0] != reference[c][0])
        temp_left = len(list(results.rglob("*.tmp")))
        trial = {"trial": k, "kill_at_s": round(at, 2), "killed": killed, "stage": stage(out or ""),
                 "finished_at_kill": finished_at_kill, "cells": len(reference), "lost": len(lost),
                 "duplicated": len(duplicated), "extra": len(extra), "different": len(different),
                 "temp_files_left": temp_left, "resume_exit": resumed.returncode}
        trials.append(trial)
        print(json.dumps(trial))
    ok = all(t["lost"] == t["duplicated"] == t["extra"] == t["different"] == 0 and t["resume_exit"] == 0
             for t in trials)
    summary = {"grid": GRID, "reference_s": round(total_s, 2), "cells": len(reference), "trials": trials,
               "all_identical": ok}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    _plot(summary, args.out.with_suffix(".png"))
    print(f"{len(trials)} kills: " + ("every resumed grid identical to the reference, nothing lost or duplicated"
                                      if ok else "DIFFERENCES (see the JSON)"))
    return 0 if ok else 1


def _plot(summary: dict, path: Path) -> None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return
    fig = Figure(figsize=(7, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    colours = {"start-up": "C7", "training": "C0", "evaluation": "C1"}
    for t in summary["trials"]:
        same = t["lost"] == t["duplicated"] == t["extra"] == t["different"] == 0
        ax.scatter(t["kill_at_s"], t["finished_at_kill"], color=colours[t["stage"]], marker="o" if same else "x",
                   s=40, label=t["stage"])
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), [f"killed during {k}" for k in unique], fontsize=8, loc="upper left")
    ax.axhline(summary["cells"], color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"kill -9 at (s; the undisturbed grid takes {summary['reference_s']:.0f} s)")
    ax.set_ylabel("cells finished when killed")
    ax.set_title(f"{len(summary['trials'])} kills, then resume: o = records identical to an undisturbed run, "
                 "x = not", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})


if __name__ == "__main__":
    sys.exit(main())
