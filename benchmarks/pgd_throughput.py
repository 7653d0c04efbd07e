"""PGD throughput: the suite's attack path against a minimal eager PGD loop and foolbox.

Measures, per batch, (a) a minimal eager PGD Linf loop written below (the reference), (b) exactly what the
runner does per batch for ``pgd-linf``: the plugin's ``perturb`` plus the framework's threat check
(``AttackContext.run``), and (c) foolbox's ``LinfPGD`` with the same steps and absolute step size. Repeats are
interleaved (a, b, c, a, b, c, ...) so that drifts in machine load hit every method alike. The target is
(b) within 10% of (a) on CPU and within 5% on GPU.

    python benchmarks/pgd_throughput.py --device cpu --json pgd_cpu.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from bench.context import AttackContext
from bench.registry import Registry


def build(arch: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    try:
        from bench.tracks.image_robustness.models import build_model
    except ImportError:  # bench.tracks.image_robustness.models not there yet: a local conv32-conv64(stride 2)-fc256 CNN
        c, h, w = input_shape
        return nn.Sequential(nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, stride=2, padding=1),
                             nn.ReLU(), nn.Flatten(), nn.Linear(64 * ((h + 1) // 2) * ((w + 1) // 2), 256), nn.ReLU(),
                             nn.Linear(256, num_classes))
    return build_model(arch, input_shape, num_classes)


def eager_pgd(model, x, y, eps, alpha, steps, bounds, generator):
    """The reference: the textbook loop, same random start as bench.tracks.image_robustness.adversarial.pgd."""
    lo, hi = bounds
    delta = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps
    x_adv = (x + delta.to(x.device)).clamp(lo, hi)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(lo, hi)
    return x_adv.detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--model", choices=("cnn", "resnet18"), default="cnn")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--no-foolbox", action="store_true", help="skip (c)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    device = torch.device(args.device)
    shape = (1, 28, 28) if args.model == "cnn" else (3, 32, 32)
    torch.manual_seed(0)
    model = build(args.model, shape, 10).to(device).eval()
    x = torch.rand(args.batch, *shape, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    bounds = (0.0, 1.0)

    registry = Registry(extra={"attack": {"pgd-linf": "bench_attacks.image_robustness.pgd:PGDLinf"}})
    cls = registry.load("attack", "pgd-linf")
    attack = cls(cls.Params(steps=args.steps))  # restarts=1, random start: the default path
    alpha = attack.params.rel_step * args.eps / args.steps

    def ctx(seed):
        return AttackContext(bounds=bounds, generator=torch.Generator().manual_seed(seed), registry=registry,
                             profile="quick")

    methods = {
        "eager": lambda s: eager_pgd(model, x, y, args.eps, alpha, args.steps, bounds,
                                     torch.Generator().manual_seed(s)),
        "suite": lambda s: ctx(s).run(attack, model, x, y, args.eps),
    }
    if not args.no_foolbox:
        import foolbox

        fmodel = foolbox.PyTorchModel(model, bounds=bounds, device=device)
        fb_attack = foolbox.attacks.LinfPGD(steps=args.steps, abs_stepsize=alpha, random_start=True)
        methods["foolbox"] = lambda s: fb_attack(fmodel, x, y, epsilons=[args.eps])[1][0]

    # Same seed -> same random start: (a) and (b) should compute the same thing.
    diff = (methods["eager"](0) - methods["suite"](0)).abs().max().item()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(args.warmup + args.repeats):
        for name, fn in methods.items():
            sync()
            t0 = time.perf_counter()
            fn(r)
            sync()
            if r >= args.warmup:
                times[name].append(time.perf_counter() - t0)

    # Median and best of the repeats: on a shared CPU the minimum is the steadier estimate of the work itself.
    ref, ref_min = statistics.median(times["eager"]), min(times["eager"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append({"method": name, "median_s": med, "images_per_s": args.batch / med, "ratio_vs_eager": med / ref,
                     "min_s": min(ts), "ratio_vs_eager_min": min(ts) / ref_min, "times_s": ts})
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"PGD-{args.steps} Linf, {args.model} {shape}, batch {args.batch}, {label}, torch {torch.__version__}; "
          f"median of {args.repeats}; max |eager - suite| = {diff:.2e}")
    print(f"{'method':<10}{'s/batch':>10}{'images/s':>12}{'vs eager':>10}{'best s':>10}{'best vs eager':>15}")
    for row in rows:
        print(f"{row['method']:<10}{row['median_s']:>10.4f}{row['images_per_s']:>12.1f}{row['ratio_vs_eager']:>10.3f}"
              f"{row['min_s']:>10.4f}{row['ratio_vs_eager_min']:>15.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": {**vars(args), "input_shape": shape, "device_name": label,
                                  "torch": torch.__version__, "max_abs_diff_eager_suite": diff}, "results": rows},
                      f, indent=2)


if __name__ == "__main__":
    main()
