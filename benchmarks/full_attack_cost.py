"""The full image grid's costliest attacks on a GPU, each form side by side in one run: C&W-L2 (the suite's, graphed
and eager, and foolbox's), Square L-inf and L2 (one host sync per block of 50 queries, and per query), FAB-T L-inf
(one sync per 10 steps, and per step).

The model is ``gpu_speed``'s: the suite's ``cnn`` trained on a synthetic task, attacked on examples it classifies
correctly, eps calibrated so that about half the batch stays robust under PGD. Budgets are cut from the full
profile's (C&W 9 x 1000, Square 5,000 queries, FAB-T 9 x 100) to keep the run short; the ratios are per step.
Per form: seconds (median of the repeats, CUDA synchronised), speed-up over the reference form, and the share
of examples whose outcome equals the reference's (Square's per-query form draws its random numbers in another
order, so its outcomes agree only in distribution).

    python benchmarks/full_attack_cost.py --json benchmarks/results/full_attack_cost_h200.json   # GPU host
    python benchmarks/full_attack_cost.py --device cpu --tiny                                     # CPU smoke
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("BENCH_PROGRESS", "0")

import gpu_speed  # noqa: E402  (the trained model and the calibrated eps)

BOUNDS = (0.0, 1.0)


def _forms(model, x, y, eps_linf, eps_l2, tiny: bool) -> dict[str, dict[str, callable]]:
    import foolbox

    import bench_attacks.image_robustness.fab as fab
    import bench_attacks.image_robustness.square as square
    from bench_attacks.image_robustness.cw import CWParams, cw_l2

    cw = CWParams(binary_search_steps=2 if tiny else 3, steps=4 if tiny else 200, initial_const=1e-3)
    queries, fab_steps = (20, 3) if tiny else (1000, 20)

    def suite_cw(graphs: str):
        def run():
            os.environ["BENCH_CUDA_GRAPHS"] = graphs
            try:
                return cw_l2(model, x, y, eps_l2, cw, BOUNDS)
            finally:
                os.environ.pop("BENCH_CUDA_GRAPHS")
        return run

    def foolbox_cw():
        attack = foolbox.attacks.L2CarliniWagnerAttack(binary_search_steps=cw.binary_search_steps, steps=cw.steps,
                                                       stepsize=cw.stepsize, initial_const=cw.initial_const)
        return attack(foolbox.PyTorchModel(model, bounds=BOUNDS, device=x.device), x, y, epsilons=[eps_l2])[1][0]

    def square_with(block: int, norm: str):
        def run():
            square.BLOCK, saved = block, square.BLOCK
            try:
                eps = eps_linf if norm == "linf" else eps_l2
                return square.square_attack(model, x, y, eps, norm, queries, 0.8, torch.Generator().manual_seed(0),
                                            BOUNDS)[0]
            finally:
                square.BLOCK = saved
        return run

    def fab_with(every: int):
        target = model(x).argsort(1, descending=True)[:, 1]

        def run():
            fab.COMPACT_EVERY, saved = every, fab.COMPACT_EVERY
            try:
                return fab.fab_run(model, x, y, target, eps_linf, "linf", fab_steps, x, BOUNDS)[0]
            finally:
                fab.COMPACT_EVERY = saved
        return run

    return {
        f"C&W-L2 {cw.binary_search_steps}x{cw.steps}": {"suite, eager": suite_cw("0"), "suite, graphed": suite_cw("1"),
                                                        "foolbox": foolbox_cw},
        f"Square L-inf {queries} queries": {"sync per query": square_with(1, "linf"),
                                            "sync per 50 queries": square_with(50, "linf")},
        f"Square L2 {queries} queries": {"sync per query": square_with(1, "l2"),
                                         "sync per 50 queries": square_with(50, "l2")},
        f"FAB-T L-inf 1 target x {fab_steps} steps": {"sync per step": fab_with(1), "sync per 10 steps": fab_with(10)},
    }


def _time(fn, device) -> tuple[float, torch.Tensor]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--tiny", action="store_true", help="seconds on a CPU: the code path, not a measurement")
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    batch = 16 if args.tiny else args.batch
    model, sample = gpu_speed.trained_model("cnn", 20 if args.tiny else 300, device, gpu_speed.SHAPES["cnn"],
                                            batch=8 if args.tiny else 128)
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = gpu_speed.correct_batch(model, sample, batch, device)
    x, y = x.to(device), y.to(device)
    eps_linf = gpu_speed.calibrated_eps(model, x, y, device, steps=2 if args.tiny else 10)
    eps_l2 = eps_linf * 28 / 2  # about as strong (sqrt(784) / 2)
    rows = []
    for attack, forms in _forms(model, x, y, eps_linf, eps_l2, args.tiny).items():
        names = list(forms)
        times = {name: [] for name in names}
        outs = {}
        for r in range(1 + args.repeats):  # the first round is warm-up (graph capture)
            for name in names:
                seconds, outs[name] = _time(forms[name], device)
                if r:
                    times[name].append(seconds)
        with torch.no_grad():
            robust = {name: (model(out).argmax(1) == y).cpu() for name, out in outs.items()}
        reference = names[-1] if attack.startswith("C&W") else names[0]
        ref_s = statistics.median(times[reference])
        for name in names:
            median = statistics.median(times[name])
            row = {"attack": attack, "form": name, "reference": reference, "batch": batch,
                   "median_s": round(median, 4), "speedup_vs_reference": round(ref_s / median, 2),
                   "robust_share": round(float(robust[name].float().mean()), 4),
                   "same_outcome_share": round(float((robust[name] == robust[reference]).float().mean()), 4)}
            rows.append(row)
            print(f"{attack:34s} {name:22s} {median:8.3f} s  x{row['speedup_vs_reference']:<6} "
                  f"robust {row['robust_share']:.3f}  same as {reference}: {row['same_outcome_share']:.3f}")
    if args.json:
        info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "torch": torch.__version__, "eps_linf": eps_linf, "eps_l2": eps_l2}
        Path(args.json).write_text(json.dumps({"info": info, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
