"""The GPU fast path (CUDA graphs) against the eager loops, side by side in one run, on one CUDA device.

Per (model, batch): PGD-20 L-inf -- a minimal eager loop (``gpu_speed.eager_pgd``), the suite's PGD core
with ``BENCH_CUDA_GRAPHS=0`` and with graphs -- and PGD-20 L2 eager vs graphs; APGD-CE (100 steps) -- the suite's
early-exit form, its fixed-shape form run eagerly, ``apgd`` (the graph or the early exit, whichever it measured
faster) and torchattacks' ``APGD``. Outcomes (misclassified or not) are compared between the eager and the
graphed runs. Models have random weights (seed 0); inputs are uniform noise; median of repeats after warm-up.

    python benchmarks/gpu_fast_path.py --json fast_path.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_attacks.image_robustness._apgd import apgd, apgd_run, apgd_run_fixed
from bench_attacks.image_robustness._common import random_start
from gpu_speed import eager_pgd

from bench.tracks.image_robustness import cuda_graphs
from bench.tracks.image_robustness.adversarial import pgd
from bench.tracks.image_robustness.models import build_model


def timed(fn, repeats: int, warmup: int):
    times = []
    for r in range(warmup + repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        torch.cuda.synchronize()
        if r >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times), result


def graphs(on: bool) -> None:
    os.environ["BENCH_CUDA_GRAPHS"] = "1" if on else "0"


def measure(arch: str, batch: int, repeats: int) -> dict:
    shape = (1, 28, 28) if arch == "cnn" else (3, 32, 32)
    torch.manual_seed(0)
    model = build_model(arch, shape, 10).cuda().eval()
    x, y = torch.rand(batch, *shape, device="cuda"), torch.randint(0, 10, (batch,), device="cuda")
    eps, steps = 0.1, 20
    alpha = 2.5 * eps / steps

    def gen():
        return torch.Generator().manual_seed(0)

    row = {"arch": arch, "batch": batch}
    row["pgd_minimal_eager_s"], _ = timed(lambda: eager_pgd(model, x, y, eps, alpha, steps, (0.0, 1.0), gen()),
                                          repeats, 2)
    for norm, e in (("linf", eps), ("l2", 1.0)):
        def run(norm=norm, e=e):
            return pgd(model, x, y, e, 2.5 * e / steps, steps, norm=norm, generator=gen())

        graphs(False)
        row[f"pgd_{norm}_eager_s"], a = timed(run, repeats, 2)
        graphs(True)
        row[f"pgd_{norm}_graph_s"], b = timed(run, repeats, 2)
        with torch.no_grad():
            row[f"pgd_{norm}_same_outcome"] = float((model(a).argmax(1) == model(b).argmax(1)).float().mean())
        row[f"pgd_{norm}_max_abs_diff"] = float((a - b).abs().max())
    x0 = random_start(x, eps, "linf", gen(), (0.0, 1.0))
    row["apgd_early_exit_s"], (_, fooled_a) = timed(
        lambda: apgd_run(model, x, y, eps, "linf", 100, "ce", x0, (0.0, 1.0)), max(1, repeats // 2), 1)
    row["apgd_fixed_eager_s"], _ = timed(
        lambda: apgd_run_fixed(model, x, y, eps, "linf", 100, "ce", x0, (0.0, 1.0)), max(1, repeats // 2), 1)
    row["apgd_suite_s"], (_, fooled_b) = timed(
        lambda: apgd(model, x, y, eps, "linf", 100, "ce", x0, (0.0, 1.0)), max(1, repeats // 2), 1)
    row["apgd_suite_picked"] = sorted(set(cuda_graphs._FASTER.get(model, {}).values()))
    row["apgd_same_outcome"] = float((fooled_a == fooled_b).float().mean())
    try:
        import torchattacks

        ta = torchattacks.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1, seed=0, loss="ce")
        row["apgd_torchattacks_s"], _ = timed(lambda: ta(x, y), max(1, repeats // 2), 1)
    except ImportError:
        row["apgd_torchattacks_s"] = None
    row["pgd_speedup_vs_minimal_eager"] = row["pgd_minimal_eager_s"] / row["pgd_linf_graph_s"]
    row["apgd_speedup_vs_early_exit_eager"] = row["apgd_early_exit_s"] / row["apgd_suite_s"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    rows = []
    for arch, batch in (("cnn", 256), ("cnn", 1024), ("resnet18", 256)):
        rows.append(measure(arch, batch, args.repeats))
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
