"""GPU speed in one run: the suite's attacks against a minimal eager loop, foolbox and torchattacks, and the
wall time of full suites.

Attacks: PGD-20 L-inf (``pgd-linf`` at its quick defaults: 20 steps of 2.5 eps / 20, one random start) and
APGD-CE (``apgd-ce`` at its full defaults: 100 steps, one run, rho 0.75 -- AutoAttack's), on the suite's ``cnn``
(1x28x28) at batch 256 and 1024 and ``resnet18`` (3x32x32) at batch 256, four ways side by side:

- ``eager``: the minimal eager loop written below, the reference (same random start as the suite's);
- ``suite``: what ``bench run`` does per batch: ``bench.evaluate.robust_mask`` with the registered plugin --
  ``perturb``, the framework's threat check, the prediction -- and whatever fast path the suite takes on
  this device (CUDA graphs), with the data on the CPU as the runner keeps it;
- ``foolbox`` (``LinfPGD``, PGD only) and ``torchattacks`` (``PGD``, ``APGD``), when importable (skipped with
  a note otherwise); they draw their own random starts.

Each model is first trained for a few hundred steps on a synthetic task (a prototype per class plus noise), so
that margins are a trained model's rather than random weights' (which are fooled at the start), and the batch
is made of examples it classifies correctly, so every method attacks the whole batch. The L-inf budget is
calibrated per model so that about half the batch stays robust (``calibrated_eps``; ``--eps`` fixes it), as for
an adversarially trained model: then APGD's early exit and fixed-length loops compare fairly. Per method: images/s,
the speed-up over eager (eager's time / its time) and the share of examples whose outcome (still classified
correctly or not) equals eager's. Warm-up, then repeats interleaved across methods (drifts in load hit all
alike); CUDA synchronised around each; medians.

``--training``: one epoch of ``train_classifier`` on the synthetic task, eager against the graphed step
(``train_graphs``), for cnn-small at batch 32 (the unlearning track's) and cnn at 128 (the image full profile's).

``--suites S ...``: the wall time of ``python -m bench.cli run --suite S --device DEV --results DIR``
(``--jobs N`` if given), each in a fresh results folder (training included), for the README's cost table.

    python benchmarks/gpu_speed.py --training --json gpu_speed.json                    # on the GPU host
    python benchmarks/gpu_speed.py --suites full mtard-full --attacks none --json suites.json
    python benchmarks/gpu_speed.py --device cpu --tiny --json /tmp/smoke.json           # CPU smoke (tests)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

os.environ.setdefault("BENCH_PROGRESS", "0")  # robust_mask's progress bar would time tqdm too

CASES = (("cnn", 256), ("cnn", 1024), ("resnet18", 256))
SHAPES = {"cnn": (1, 28, 28), "resnet18": (3, 32, 32)}
BOUNDS = (0.0, 1.0)


# ---- the minimal eager references ------------------------------------------------------------------------
def eager_pgd(model, x, y, eps, alpha, steps, bounds, generator):
    """The textbook loop, with the random start of bench.tracks.image_robustness.adversarial.pgd."""
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


def apgd_checkpoints(steps: int) -> set[int]:
    """Croce & Hein's step-size checkpoints: p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return {c for c in (max(1, math.ceil(q * steps - 1e-9)) for q in p[1:]) if c < steps}


def eager_apgd_ce(model, x, y, eps, steps, bounds, generator, rho=0.75, momentum=0.75):
    """APGD-CE L-inf (Croce & Hein 2020, Algorithm 1) as a plain loop at a fixed batch shape: step 2 eps,
    momentum 0.75, halving (and restart from the best point) at the checkpoints; AutoAttack's random start on
    the eps-sphere. Returns the per-example 'fooled at some iterate' mask."""
    lo, hi = bounds
    t = torch.rand(x.shape, generator=generator).mul_(2).sub_(1).to(x.device)
    t = t / t.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
    xk = (x + eps * t).clamp(lo, hi)

    def project(z):
        return (x + (z - x).clamp(-eps, eps)).clamp(lo, hi)

    def value_and_grad(z):
        z = z.detach().requires_grad_(True)
        logits = model(z)
        f = F.cross_entropy(logits, y, reduction="none")
        (g,) = torch.autograd.grad(f.sum(), z)
        return f.detach(), g, logits.detach().argmax(1) != y

    def ex(v):  # (N,) -> broadcastable over an example
        return v.view(-1, *[1] * (x.dim() - 1))

    f, g, fooled = value_and_grad(xk)
    x_prev, x_max, g_max, f_max, f_cur, f_max_last = xk, xk, g, f, f, f.clone()
    eta = torch.full((len(x),), 2.0 * eps, device=x.device)
    increases = torch.zeros(len(x), device=x.device)
    reduced_last = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    marks, last = apgd_checkpoints(steps), 0
    for i in range(steps):
        z = project(xk + ex(eta) * g.sign())
        a = 1.0 if i == 0 else momentum
        x_new = project(xk + a * (z - xk) + (1 - a) * (xk - x_prev))
        f, g, now_fooled = value_and_grad(x_new)
        fooled = fooled | now_fooled
        better = f > f_max
        increases = increases + (f > f_cur).float()
        x_prev, xk, f_cur = xk, x_new, f
        x_max, g_max = torch.where(ex(better), x_new, x_max), torch.where(ex(better), g, g_max)
        f_max = torch.where(better, f, f_max)
        if i + 1 in marks:
            reduce = (increases < rho * (i + 1 - last)) | (~reduced_last & (f_max_last >= f_max))
            eta = torch.where(reduce, eta / 2, eta)
            xk, g = torch.where(ex(reduce), x_max, xk), torch.where(ex(reduce), g_max, g)
            f_cur = torch.where(reduce, f_max, f_cur)
            reduced_last, f_max_last, increases = reduce, f_max.clone(), torch.zeros_like(increases)
            last = i + 1
    return fooled


# ---- models and data ---------------------------------------------------------------------------------------
def trained_model(arch: str, steps: int, device: torch.device, shape: tuple, batch: int = 128, seed: int = 0):
    """The suite's ``arch`` trained for ``steps`` Adam steps on the synthetic task; returns (model in eval mode
    with frozen weights, a sampler of the task's (x, y) on the CPU)."""
    from bench.tracks.image_robustness.models import build_model

    gen = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(10, *shape, generator=gen)

    def sample(n):
        y = torch.randint(0, 10, (n,), generator=gen)
        return (0.6 * prototypes[y] + 0.4 * torch.rand(n, *shape, generator=gen)).clamp(*BOUNDS), y

    torch.manual_seed(seed)
    model = build_model(arch, shape, 10).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        xb, yb = sample(batch)
        opt.zero_grad()
        F.cross_entropy(model(xb.to(device)), yb.to(device)).backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, sample


def correct_batch(model, sample, batch: int, device):
    """``batch`` examples the model classifies correctly (so every method attacks all of them), on the CPU."""
    xs, ys, have = [], [], 0
    for _ in range(100):
        x, y = sample(2 * batch)
        with torch.no_grad():
            ok = model(x.to(device)).argmax(1).cpu() == y
        xs.append(x[ok]), ys.append(y[ok])
        have += int(ok.sum())
        if have >= batch:
            return torch.cat(xs)[:batch], torch.cat(ys)[:batch]
    raise RuntimeError(f"the model classifies too few synthetic examples correctly ({have} of {batch})")


def calibrated_eps(model, x, y, device, steps: int = 10, target: float = 0.5, rounds: int = 8) -> float:
    """The L-inf budget at which eager PGD-``steps`` leaves about ``target`` of the batch robust (bisection on
    [0, 0.5]): at a budget where nearly everything is fooled at once, APGD's early exit and a fixed-length loop
    are not comparable, and per-example agreement says little. A trained defense is in that middle regime."""
    x, y = x.to(device), y.to(device)
    lo, hi = 0.0, 0.5
    for _ in range(rounds):
        eps = (lo + hi) / 2
        x_adv = eager_pgd(model, x, y, eps, 2.5 * eps / steps, steps, BOUNDS, torch.Generator().manual_seed(0))
        with torch.no_grad():
            robust = float((model(x_adv).argmax(1) == y).float().mean())
        lo, hi = (eps, hi) if robust > target else (lo, eps)
    return (lo + hi) / 2


# ---- the methods -------------------------------------------------------------------------------------------
def suite_attack(registry, name: str, profile: str, steps: int | None):
    """The registered plugin with ``profile``'s hyperparameters, as the runner builds it (``steps`` overrides)."""
    from bench import hparams

    cls = registry.load("attack", name)
    params = hparams.resolve({name: cls}, profile, [])[name]
    return cls(dataclasses.replace(params, steps=steps) if steps else params)


def methods_for(attack_name: str, model, x_cpu, y_cpu, device, registry, steps: int, eps: float,
                notes: list[str]):
    """{method: fn(seed) -> per-example robust mask (bool, CPU)}, for PGD-``steps`` or APGD-CE-``steps``."""
    from bench.context import AttackContext
    from bench.evaluate import robust_mask

    x, y = x_cpu.to(device), y_cpu.to(device)
    is_pgd = attack_name == "pgd-linf"
    plugin = suite_attack(registry, attack_name, "quick" if is_pgd else "full", steps)
    alpha = plugin.params.rel_step * eps / steps if is_pgd else None
    everyone = torch.ones(len(x_cpu), dtype=torch.bool)

    def robust(x_adv):
        with torch.no_grad():
            return (model(x_adv).argmax(1) == y).cpu()

    def suite(seed):
        ctx = AttackContext(bounds=BOUNDS, generator=torch.Generator().manual_seed(seed), registry=registry,
                            profile="quick" if is_pgd else "full")
        return robust_mask(model, plugin, x_cpu, y_cpu, everyone, eps, ctx, device, len(x_cpu))

    if is_pgd:
        methods = {"eager": lambda s: robust(eager_pgd(model, x, y, eps, alpha, steps, BOUNDS,
                                                       torch.Generator().manual_seed(s))), "suite": suite}
        if device.type == "cuda":  # is bf16 autocast worth a tolerance? its speed and its outcome agreement
            def eager_bf16(s):
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    x_adv = eager_pgd(model, x, y, eps, alpha, steps, BOUNDS, torch.Generator().manual_seed(s))
                return robust(x_adv.float())
            methods["eager-bf16"] = eager_bf16
    else:
        methods = {"eager": lambda s: ~eager_apgd_ce(model, x, y, eps, steps, BOUNDS,
                                                     torch.Generator().manual_seed(s)).cpu(), "suite": suite}
    if is_pgd:  # foolbox has no APGD
        try:
            import foolbox

            fmodel = foolbox.PyTorchModel(model, bounds=BOUNDS, device=device)
            fb = foolbox.attacks.LinfPGD(steps=steps, abs_stepsize=alpha, random_start=True)
            methods["foolbox"] = lambda s: ~fb(fmodel, x, y, epsilons=[eps])[2][0].cpu()
        except ImportError as exc:
            notes.append(f"foolbox skipped: {exc}")
    try:
        import torchattacks

        if is_pgd:
            ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        else:
            ta = torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=0, loss="ce",
                                   rho=plugin.params.rho)
        methods["torchattacks"] = lambda s: robust(ta(x, y))
    except ImportError as exc:
        notes.append(f"torchattacks skipped: {exc}")
    return methods


def measure(methods: dict, batch: int, device, repeats: int, warmup: int) -> list[dict]:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = {name: [] for name in methods}
    outcomes = {}
    for r in range(warmup + repeats):
        for name, fn in methods.items():
            sync()
            start = time.perf_counter()
            out = fn(0)  # seed 0 every time: eager and suite share the random start
            sync()
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
            outcomes[name] = out
    eager_s = statistics.median(times["eager"])
    rows = []
    for name, ts in times.items():
        median = statistics.median(ts)
        same = outcomes[name] == outcomes["eager"]
        rows.append({"method": name, "median_s": median, "images_per_s": batch / median,
                     "speedup_vs_eager": eager_s / median, "robust_share": float(outcomes[name].float().mean()),
                     "same_outcome_as_eager_share": float(same.float().mean()),
                     "same_outcome_as_eager": bool(same.all()), "times_s": ts})
    return rows


def run_attacks(args, device) -> list[dict]:
    from bench.registry import Registry

    registry = Registry()
    cases = [(arch, 4 if args.tiny else batch) for arch, batch in args.cases]
    if args.tiny:
        cases = list(dict.fromkeys(cases))  # cnn at 256 and 1024 are the same case at tiny size
    attacks = [("PGD-20", "pgd-linf", 2 if args.tiny else 20), ("APGD-CE", "apgd-ce", 3 if args.tiny else 100)]
    rows, models = [], {}
    for arch, batch in cases:
        if arch not in models:
            # --tiny: resnet18 on 8x8 inputs and small training batches, so the CPU smoke stays seconds
            shape = (3, 8, 8) if args.tiny and arch == "resnet18" else SHAPES[arch]
            models[arch] = trained_model(arch, args.train_steps, device, shape, batch=8 if args.tiny else 128)
        model, sample = models[arch]
        x, y = correct_batch(model, sample, batch, device)
        eps = args.eps if args.eps is not None else calibrated_eps(model, x, y, device, steps=2 if args.tiny else 10)
        for label, name, steps in attacks:
            if args.attacks != "all" and name not in args.attacks.split(","):
                continue
            notes: list[str] = []
            methods = methods_for(name, model, x, y, device, registry, steps, eps, notes)
            for row in measure(methods, batch, device, args.repeats, args.warmup):
                rows.append({"attack": f"{label} ({name}, {steps} steps)", "model": arch, "batch": batch, "eps": eps,
                             **row,
                             **({"notes": notes} if notes else {})})
            for note in notes:
                print(f"  note ({label}, {arch}): {note}")
    return rows


def run_training(args, device) -> list[dict]:
    """``train_classifier`` for one epoch, eager (``BENCH_CUDA_GRAPHS=0``) against graphed (``train_graphs``),
    from the same weights on the same batches: steps/s, the speed-up, and how far apart the two trainings end
    (largest weight difference, share of equal test predictions). The data starts on the host, as in a run; the
    graphed step is timed twice: with the epoch gathered on the device once (what runs) and with each batch
    gathered and copied from the host (``graphed-host``, the earlier path)."""
    from bench import context
    from bench.context import TrainContext
    from bench.plugins import DataSpec, Splits
    from bench.tracks.image_robustness.models import build_model
    from bench.tracks.image_robustness.training import OptimParams, train_classifier

    rows, gathered_limit = [], context.GATHERED_EPOCH_BYTES
    for arch, batch in (("cnn-small", 32), ("cnn", 128)) if not args.tiny else (("cnn-small", 4),):
        shape = SHAPES["cnn"]
        _, sample = trained_model(arch, 0, device, shape)
        n = batch * (8 if args.tiny else 400)
        x, y = sample(n)
        test_x, test_y = sample(2000 if not args.tiny else 16)
        data = Splits(DataSpec("synthetic", shape, 10), x, y, test_x, test_y)
        params = OptimParams(arch=arch, epochs=1, batch_size=batch)
        results = {}
        for form in ("eager", "graphed", "graphed-host") * 2:  # interleaved, the second round timed
            os.environ["BENCH_CUDA_GRAPHS"] = "0" if form == "eager" else "1"
            context.GATHERED_EPOCH_BYTES = 0 if form == "graphed-host" else gathered_limit
            torch.manual_seed(0)
            model = build_model(arch, shape, 10)
            ctx = TrainContext(device=device, seed=0, generator=torch.Generator().manual_seed(0), artifacts=None,
                               model_of=None)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            train_classifier(model, data, ctx, params, desc=form)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            with torch.no_grad():
                pred = model(test_x.to(device)).argmax(1).cpu()
            results[form] = (time.perf_counter() - start, model.state_dict(), pred)
        os.environ.pop("BENCH_CUDA_GRAPHS", None)
        context.GATHERED_EPOCH_BYTES = gathered_limit
        (t_e, w_e, p_e), (t_g, w_g, p_g) = results["eager"], results["graphed"]
        t_h, w_h, _ = results["graphed-host"]
        steps = n // batch
        worst = max(float((a - b).abs().max()) for a, b in zip(w_e.values(), w_g.values()) if a.is_floating_point())
        rows.append({"model": arch, "batch": batch, "steps": steps, "eager_steps_per_s": steps / t_e,
                     "graphed_steps_per_s": steps / t_g, "speedup": t_e / t_g, "max_weight_diff": worst,
                     "graphed_host_batches_steps_per_s": steps / t_h, "gathered_vs_host_batches": t_h / t_g,
                     "gathered_equals_host_batches": all(torch.equal(w_g[k], w_h[k]) for k in w_g),
                     # how far apart, too: on the H200 the two were not bit-equal (cause not established)
                     "gathered_vs_host_max_weight_diff": max(float((w_g[k] - w_h[k]).abs().max()) for k in w_g
                                                             if w_g[k].is_floating_point()),
                     "same_test_prediction_share": float((p_e == p_g).float().mean())})
        print(f"  training {arch} batch {batch}: {steps / t_e:.0f} -> {steps / t_g:.0f} steps/s "
              f"({t_e / t_g:.2f}x), weights within {worst:.1e}, {100 * rows[-1]['same_test_prediction_share']:.1f} % "
              f"equal test predictions; batches from the host {steps / t_h:.0f} steps/s ({t_h / t_g:.2f}x slower)",
              flush=True)
    return rows


def time_suites(suites: list[str], device: str, jobs: str | None, root: Path, timeout: float,
                run_args: str = "") -> list[dict]:
    """Wall seconds of each suite's ``bench run`` in a fresh results folder under ``root``."""
    rows = []
    for suite in suites:
        results = root / suite
        cmd = [sys.executable, "-m", "bench.cli", "run", "--suite", suite, "--device", device,
               "--results", str(results)] + (["--jobs", jobs] if jobs else []) + shlex.split(run_args)
        root.mkdir(parents=True, exist_ok=True)
        log = root / f"{suite}.log"  # streamed, so a long run can be followed with tail -f
        start = time.perf_counter()
        with open(log, "w") as fh:
            try:
                code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout).returncode
            except subprocess.TimeoutExpired:  # the child is killed; its workers die with it (PR_SET_PDEATHSIG)
                code = "timeout"
        seconds = time.perf_counter() - start
        out = log.read_text(errors="replace")
        lanes = next((line.strip() for line in out.splitlines() if "worker process(es)" in line), "in-process")
        rows.append({"suite": suite, "seconds": seconds, "exit": code, "command": " ".join(cmd), "lanes": lanes,
                     "log": str(log), "tail": out.strip().splitlines()[-3:]})
        print(f"  suite {suite}: {seconds:.1f} s, exit {code}, {lanes}", flush=True)
    return rows


def print_tables(attack_rows: list[dict], suite_rows: list[dict], label: str) -> None:
    if attack_rows:
        print(f"\n{label}; median of repeats; same = per-example outcome equal to eager's; robust = share "
              f"still classified correctly")
        print(f"{'attack':<36}{'model':<10}{'batch':>6}{'eps':>7}  {'method':<13}{'ms':>9}{'images/s':>11}"
              f"{'x eager':>9}{'same':>8}{'robust':>8}")
        for r in attack_rows:
            print(f"{r['attack']:<36}{r['model']:<10}{r['batch']:>6}{r['eps']:>7.3f}  {r['method']:<13}"
                  f"{1e3 * r['median_s']:>9.2f}"
                  f"{r['images_per_s']:>11.0f}{r['speedup_vs_eager']:>9.2f}"
                  f"{100 * r['same_outcome_as_eager_share']:>7.1f}%{100 * r['robust_share']:>7.1f}%")
    if suite_rows:
        print(f"\n{'suite':<28}{'seconds':>9}  exit  lanes")
        for r in suite_rows:
            print(f"{r['suite']:<28}{r['seconds']:>9.1f}  {str(r['exit']):<5} {r['lanes']}")


def _cases(text: str) -> tuple:
    try:
        cases = tuple((arch, int(batch)) for arch, batch in (part.split(":") for part in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ARCH:BATCH,..., e.g. cnn:256,resnet18:256, not {text!r}")
    if unknown := [arch for arch, _ in cases if arch not in SHAPES]:
        raise argparse.ArgumentTypeError(f"unknown model {unknown[0]!r}; choose among {', '.join(SHAPES)}")
    return cases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--tiny", action="store_true",
                    help="smoke sizes (batch 4, 2 and 3 steps, no warm-up, 1 repeat; resnet18 on 8x8): tests")
    ap.add_argument("--cases", type=_cases, default=CASES, metavar="ARCH:BATCH,...",
                    help="models and batch sizes (default: cnn:256,cnn:1024,resnet18:256)")
    ap.add_argument("--eps", type=float, default=None,
                    help="L-inf budget (default: calibrated per model so that eager PGD-10 leaves ~half robust)")
    ap.add_argument("--attacks", default="all",
                    help="'all', 'none', or a comma list of pgd-linf,apgd-ce (default: all)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (default 7; --tiny: 1)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs first (CUDA graph capture, autotuning)")
    ap.add_argument("--train-steps", type=int, default=None, help="Adam steps on the synthetic task (default 300)")
    ap.add_argument("--training", action="store_true", help="also time the training step, eager vs graphed")
    ap.add_argument("--suites", nargs="*", default=[], metavar="S", help="also time these suites' `bench run`")
    ap.add_argument("--jobs", default=None, help="--jobs for the suites' runs (default: bench's own)")
    ap.add_argument("--run-args", default="", metavar="ARGS",
                    help="more `bench run` arguments for the suites' runs, one string, e.g. '--seed 0 1 2'")
    ap.add_argument("--suites-results", type=Path, default=None,
                    help="results root for the suites' runs (default: a temporary folder)")
    ap.add_argument("--suite-timeout", type=float, default=3600)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (1 if args.tiny else 7)
    args.train_steps = args.train_steps if args.train_steps is not None else (5 if args.tiny else 300)
    if args.tiny:
        args.warmup = 0
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device (use --device cpu)")
    device = torch.device(args.device)
    label = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"cpu ({torch.get_num_threads()} threads)") + f", torch {torch.__version__}"
    attack_rows = [] if args.attacks == "none" else run_attacks(args, device)
    training_rows = run_training(args, device) if args.training else []
    suite_rows = []
    if args.suites:
        timing = dict(device=args.device, jobs=args.jobs, timeout=args.suite_timeout, run_args=args.run_args)
        if args.suites_results is not None:
            suite_rows = time_suites(args.suites, root=args.suites_results, **timing)
        else:
            with tempfile.TemporaryDirectory(prefix="bench-suites-") as root:
                suite_rows = time_suites(args.suites, root=Path(root), **timing)
    print_tables(attack_rows, suite_rows, label)
    if args.json:
        config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        Path(args.json).write_text(json.dumps(
            {"config": {**config, "device_name": label,
                        "cuda_graphs_env": os.environ.get("BENCH_CUDA_GRAPHS")},
             "attacks": attack_rows, "training": training_rows, "suites": suite_rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
