"""Certified-training throughput: the suite's ``lirpa`` defense against a minimal hand-written auto_LiRPA loop.

Measures one epoch-slice of N batches of certified training at a fixed eps, end to end (BoundedModule
construction included, as every ``fit`` pays it once), for
(a) ``hand``: a minimal loop written below: BoundedModule, then per batch a clean forward, the margin bound
    (IBP, or CROWN-IBP mixed with the IBP bound of the same pass), the worst-case-logit CE, Adam, clip;
(b) ``suite``: the ``lirpa`` plugin's ``fit`` on the same model, data and batches (eps schedule pinned so that
    the slice runs at eps after its first, natural-CE batch -- the hand loop does the same);
and, with loss fusion (the CE bounded as one output), (c) ``hand-fused`` and (d) ``suite-fused``.
Repeats are interleaved (a, b, c, d, a, b, ...) so that drifts in machine load hit every variant alike.
Inputs are random images of Fashion-MNIST's shape (1, 28, 28): the cost does not depend on the pixels much.

    python benchmarks/lirpa_epoch.py --device cpu --bound ibp --batches 10 --json lirpa_cpu.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from bench.context import TrainContext
from bench.plugins import DataSpec, Splits
from bench.tracks.image_robustness import lirpa_compat as lc
from bench.tracks.image_robustness.models import build_model
from bench_defenses.image_robustness.lirpa import LiRPA, LiRPAParams


def hand_loop(model, x_all, y_all, order, batch, eps, beta, bound, fused, lr, device):
    """The reference: the textbook auto_LiRPA training loop (no schedule, no logging, no progress bar)."""
    lirpa = lc.import_auto_lirpa()
    model.to(device)
    if fused:
        class CE(nn.Module):  # sum_j exp(z_j - z_y): log of it is the CE
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x, y):
                z = self.m(x)
                return torch.exp(z - z.gather(1, y.unsqueeze(1))).sum(1, keepdim=True)

        model.eval()
        bounded = lirpa.BoundedModule(CE(model).eval(), (torch.zeros(1, *x_all.shape[1:], device=device),
                                                          torch.zeros(1, dtype=torch.long, device=device)),
                                      device=device)
    else:
        model.eval()
        bounded = lirpa.BoundedModule(model, torch.zeros(1, *x_all.shape[1:], device=device), device=device)
    bounded.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    eye = torch.eye(10, device=device)
    for i in range(0, len(order), batch):
        idx = order[i:i + batch]
        x, y = x_all[idx].to(device), y_all[idx].to(device)
        out = bounded(x, y) if fused else bounded(x)
        if i == 0:  # the slice's first batch is natural CE, as in the suite's pinned schedule
            loss = torch.log(out).mean() if fused else F.cross_entropy(out, y)
        else:
            ptb = lirpa.PerturbationLpNorm(norm=float("inf"), eps=eps, x_L=(x - eps).clamp(min=0),
                                           x_U=(x + eps).clamp(max=1))
            bx = lirpa.BoundedTensor(x, ptb)
            method = "IBP" if bound == "ibp" else "CROWN-IBP"
            if fused:
                _, ub = bounded.compute_bounds(x=(bx, y), method=method, bound_lower=False, bound_upper=True)
                if bound != "ibp":
                    ub = beta * ub + (1 - beta) * bounded.ibp_upper
                loss = torch.log(ub).mean()
            else:
                c = eye[y].unsqueeze(1) - eye.unsqueeze(0)
                c = c[torch.arange(10, device=device).unsqueeze(0) != y.unsqueeze(1)].view(len(y), 9, 10)
                lb, _ = bounded.compute_bounds(x=(bx,), C=c, method=method, bound_upper=False)
                if bound != "ibp":
                    lb = beta * lb + (1 - beta) * bounded.ibp_lower
                loss = F.cross_entropy(torch.cat([lb.new_zeros(len(y), 1), -lb], 1), y.new_zeros(len(y)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--bound", choices=("ibp", "crown-ibp"), default="ibp")
    ap.add_argument("--arch", default="cnn-small")
    ap.add_argument("--batches", type=int, default=10, help="batches per epoch-slice")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--beta", type=float, default=0.5, help="CROWN-IBP weight (crown-ibp only)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--no-fusion", action="store_true", help="skip the loss-fusion variants")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    device = torch.device(args.device)
    lc.import_auto_lirpa()
    shape = (1, 28, 28)
    n = args.batches * args.batch
    gen = torch.Generator().manual_seed(0)
    x_all, y_all = torch.rand(n, *shape, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    spec = DataSpec("random", shape, 10)
    data = Splits(spec, x_all, y_all, x_all[:1], y_all[:1])
    torch.manual_seed(0)
    init = build_model(args.arch, shape, 10).state_dict()

    def fresh():
        model = build_model(args.arch, shape, 10)
        model.load_state_dict(init)
        return model

    def suite(fused):
        def run():
            # one epoch of N batches; schedule pinned: batch 0 at eps 0, every later batch at eps (ramp of 1 step)
            params = LiRPAParams(arch=args.arch, epochs=1, batch_size=args.batch, lr=5e-4, schedule="constant",
                                 eps=args.eps, bound=args.bound, beta_schedule=(args.beta, args.beta),
                                 sched_start=0.0, sched_length=1e-9, loss_fusion=fused, max_train_batches=None)
            ctx = TrainContext(device=device, seed=0, generator=torch.Generator().manual_seed(1), artifacts=None,
                               model_of=None, epsilons={"linf": (args.eps,)})
            LiRPA(params).fit(fresh(), data, ctx)
        return run

    def hand(fused):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(1))  # the suite's batches, same seed
        return lambda: hand_loop(fresh(), x_all, y_all, order, args.batch, args.eps, args.beta, args.bound, fused,
                                 5e-4, device)

    variants = {"hand": hand(False), "suite": suite(False)}
    if not args.no_fusion:
        variants.update({"hand-fused": hand(True), "suite-fused": suite(True)})

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.warmup + args.repeats):
        for name, fn in variants.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if r >= args.warmup:
                times[name].append(time.perf_counter() - t0)

    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    rows = []
    for name, ts in times.items():
        ref = times["hand-fused" if name.endswith("fused") else "hand"]
        med = statistics.median(ts)
        rows.append({"variant": name, "median_s": med, "s_per_batch": med / args.batches, "min_s": min(ts),
                     "ratio_vs_hand": med / statistics.median(ref), "ratio_vs_hand_min": min(ts) / min(ref),
                     "times_s": ts})
    fusion = (statistics.median(times["hand-fused"]) / statistics.median(times["hand"])
              if "hand-fused" in times else None)
    print(f"lirpa epoch-slice: {args.batches} batches of {args.batch}, {args.arch} {shape}, {args.bound}"
          f"{f' (beta {args.beta})' if args.bound == 'crown-ibp' else ''}, eps {args.eps}, {label}, "
          f"torch {torch.__version__}, auto_LiRPA patches {lc.APPLIED}; median of {args.repeats}")
    print(f"{'variant':<13}{'s/slice':>10}{'s/batch':>10}{'vs hand':>10}{'best s':>10}{'best vs hand':>14}")
    for row in rows:
        print(f"{row['variant']:<13}{row['median_s']:>10.3f}{row['s_per_batch']:>10.4f}{row['ratio_vs_hand']:>10.3f}"
              f"{row['min_s']:>10.3f}{row['ratio_vs_hand_min']:>14.3f}")
    if fusion is not None:
        print(f"loss fusion (hand-fused / hand): {fusion:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": {**vars(args), "input_shape": shape, "device_name": label,
                                  "torch": torch.__version__, "patches": lc.APPLIED,
                                  "fusion_over_margins": fusion}, "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
