"""Worst-case cost: what each component of ``worst-case`` (L-inf) and ``worst-case-l2`` costs, at the quick and
the full budgets, on quick-profile Fashion-MNIST models, next to torchattacks.

Measured in one run, on the first ``--n`` test images of Fashion-MNIST (the quick profile's test set), with
``--threads`` torch threads (2: the README's quick job):

1. quick budgets, at every eps of the dataset (L-inf 0.1 and 0.2, L2 1.5), exactly as the runner evaluates a
   cell (``bench.evaluate.robust_mask``: clean-correct examples only, batches of 500, the threat check): each
   component's wall time and robust accuracy, the worst case (per-example AND), its total time relative to
   one APGD-CE run, and the quick grid's cost extrapolated to its 1,000 test images (times the ratio of
   clean-correct examples) for the components AutoAttack adds;
2. full budgets, at the first eps of each norm, on the first ``--n-full`` images: the same;
3. the implementations: the suite's own APGD-T, FAB-T and Square against torchattacks' ``APGDT``, ``FAB``
   (``multi_targeted``) and ``Square`` at the same (quick) budgets,
   and the suite's ``apgd-ce`` against torchattacks' ``APGD``: time, robust accuracy, threat-model violations;
4. torchattacks' ``AutoAttack(version="standard")`` (its own defaults) on the ``--n-full`` images: time and
   robust accuracy, next to the suite's worst case at the full and quick budgets on the same images.

Models: each ``--defenses`` entry at the quick profile (seed 0): from a model cache (``<results>/cache`` or
``--cache-from`` folders, matched by the defense's and dataset's configuration), else trained by the runner
into ``<results>/cache``.

    python benchmarks/worst_case_cost.py --json benchmarks/results/worst_case_cost_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from bench import hparams, threat
from bench.context import AttackContext
from bench.registry import Registry

LINF_NEW = ("apgd-t", "fab-t", "square")  # what AutoAttack adds to the suite's L-inf list (apgd-ce was there)
L2_NEW = ("apgd-ce-l2", "apgd-t-l2", "fab-t-l2", "square-l2")


def load_model(registry, defense_name: str, dataset, results: Path, extra_caches: list[Path], device):
    """(model in eval mode, where it came from): a cached model whose defense, dataset and seed configuration
    match (whatever code version wrote it), else the runner trains it."""
    from safetensors.torch import load_file

    from bench.runner import Runner, _config

    def same(config):  # a dataset's config, whatever folder (root) it was read from
        return {**config, "params": {k: v for k, v in config.get("params", {}).items() if k != "root"}}

    cls = registry.load("defense", defense_name)
    defense = cls(hparams.resolve({defense_name: cls}, "quick", [])[defense_name])
    want = {"defense": _config(defense), "dataset": same(_config(dataset)), "seed": 0}
    for folder in [results / "cache", *extra_caches]:
        for meta_path in sorted(folder.glob("*.json")):
            try:
                meta = json.loads(meta_path.read_text())
                found = {"defense": meta.get("defense"), "dataset": same(meta.get("dataset") or {}),
                         "seed": meta.get("seed")}
            except (OSError, ValueError, AttributeError):
                continue
            if found == want and meta_path.with_suffix(".safetensors").exists():
                torch.manual_seed(0)
                model = defense.build(dataset.spec())
                model.load_state_dict(load_file(str(meta_path.with_suffix(".safetensors"))), strict=True)
                model.to(device).eval()
                for p in model.parameters():
                    p.requires_grad_(False)
                return model, str(meta_path.with_suffix(".safetensors"))
    runner = Runner(registry, results, device=str(device))
    model, meta = runner.model(defense, dataset, 0, "quick")
    return model, f"trained now ({meta['train_s']:.0f} s) into {results / 'cache'}"


def plugin(registry, name: str, profile: str):
    cls = registry.load("attack", name)
    return cls(hparams.resolve({name: cls}, profile, [])[name])


def ctx_for(registry, profile: str, seed: int, bounds=(0.0, 1.0)):
    return AttackContext(bounds=bounds, generator=torch.Generator().manual_seed(seed), registry=registry,
                         profile=profile)


def measure(fn, model, x, y, correct, eps, norm, batch=500):
    """Like ``bench.evaluate.robust_mask`` for any ``fn(xb, yb) -> x_adv``: (robust mask, seconds, violations)."""
    robust = correct.clone()
    idx = correct.nonzero().flatten()
    violations = 0
    start = time.perf_counter()
    for i in range(0, len(idx), batch):
        b = idx[i:i + batch]
        x_adv = fn(x[b], y[b])
        x_adv, bad = threat.enforce(x[b], x_adv, norm, eps, (0.0, 1.0))
        violations += bad
        with torch.no_grad():
            robust[b] = model(x_adv).argmax(1) == y[b]
    return robust, time.perf_counter() - start, violations


def run_plugin(registry, model, attack, x, y, correct, eps, profile, seed=0):
    ctx = ctx_for(registry, profile, seed)
    return measure(lambda xb, yb: attack.perturb(model, xb, yb, eps, ctx), model, x, y, correct, eps, attack.norm)


def torchattacks_fn(kind: str, model, norm: str, eps: float, params, seed: int):
    """torchattacks' attack of ``kind`` at the suite plugin's budget ``params``, global RNG forked and restored."""
    import torchattacks

    from bench.tracks.image_robustness.adversarial import keep_modes

    ta_norm = {"linf": "Linf", "l2": "L2"}[norm]
    if kind == "apgd-t":
        attack = torchattacks.APGDT(model, norm=ta_norm, eps=eps, steps=params.steps, n_restarts=params.restarts,
                                    seed=seed, rho=params.rho, n_classes=params.targets + 1)
    elif kind == "fab-t":
        attack = torchattacks.FAB(model, norm=ta_norm, eps=eps, steps=params.steps, n_restarts=params.restarts,
                                  alpha_max=params.alpha_max, eta=params.eta, beta=params.beta, seed=seed,
                                  multi_targeted=True, n_classes=params.targets + 1)
    elif kind == "square":
        attack = torchattacks.Square(model, norm=ta_norm, eps=eps, n_queries=params.queries, n_restarts=1,
                                     p_init=params.p_init, seed=seed)
    elif kind == "apgd-ce":
        attack = torchattacks.APGD(model, norm=ta_norm, eps=eps, steps=params.steps, n_restarts=params.restarts,
                                   seed=seed, loss="ce", rho=params.rho)
    elif kind == "autoattack":
        attack = torchattacks.AutoAttack(model, norm=ta_norm, eps=eps, version="standard", n_classes=10, seed=seed)
    else:
        raise ValueError(kind)

    def fn(xb, yb):
        with torch.random.fork_rng(devices=[]), keep_modes(model):
            return attack(xb, yb)
    return fn


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load() -> tuple[float, float, float]:
    return tuple(round(v, 2) for v in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path(os.environ.get("BENCH_RESULTS") or "results"),
                    help="results root whose cache/ holds (or receives) the quick models (default: ./results)")
    ap.add_argument("--cache-from", type=Path, nargs="*", default=[], help="further model caches to look in")
    ap.add_argument("--defenses", nargs="+", default=["standard", "pgd-at", "lirpa"])
    ap.add_argument("--data-root", default=None, help="read Fashion-MNIST from here (default: the dataset's own)")
    ap.add_argument("--full-skip", nargs="*", default=[], help="components not to run at the full budget")
    ap.add_argument("--n", type=int, default=300, help="test images for the quick budgets and implementations")
    ap.add_argument("--n-full", type=int, default=100, help="test images for the full budgets and AutoAttack")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-full", action="store_true", help="skip sections 2 and 4")
    ap.add_argument("--no-torchattacks", action="store_true", help="skip sections 3 and 4")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--note", default="", help="stored in the JSON's config (where and how it ran)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    registry = Registry()
    ds_cls = registry.load("dataset", "fashion-mnist")
    sets = [] if args.data_root is None else [f"fashion-mnist.root={json.dumps(args.data_root)}"]
    dataset = ds_cls(hparams.resolve({"fashion-mnist": ds_cls}, "quick", sets)["fashion-mnist"])
    data = dataset.load()
    grid_n = len(data.test_x)  # the quick grid's test set (1,000 images)
    lists = {"linf": plugin(registry, "worst-case", "quick").params.attacks,
             "l2": plugin(registry, "worst-case-l2", "quick").params.attacks}
    # The full worst cases start with AutoAttack's components (the quick ones keep the suite's own attacks).
    lists_full = {"linf": plugin(registry, "worst-case", "full").params.attacks,
                  "l2": plugin(registry, "worst-case-l2", "full").params.attacks}
    eps_all = {norm: tuple(dataset.epsilons[norm]) for norm in ("linf", "l2")}
    out: dict = {"config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                            "cache_from": [str(p) for p in args.cache_from], "torch": torch.__version__,
                            "cpu": cpu_model(), "cores": os.cpu_count(),
                            "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                            "load_before": load(),
                            "components": lists, "components_full": lists_full, "epsilons": eps_all},
                 "models": {}}
    started = time.perf_counter()
    for name in args.defenses:
        model, source = load_model(registry, name, dataset, args.results, args.cache_from, device)
        with torch.no_grad():
            pred_all = torch.cat([model(data.test_x[i:i + 500]).argmax(1) for i in range(0, grid_n, 500)])
        correct_all = pred_all == data.test_y
        x, y = data.test_x[:args.n], data.test_y[:args.n]
        correct = correct_all[:args.n]
        scale = int(correct_all.sum()) / max(int(correct.sum()), 1)  # to the grid's clean-correct examples
        rec: dict = {"source": source, "clean_acc_grid": float(correct_all.float().mean()),
                     "clean_correct_grid": int(correct_all.sum()), "n": args.n, "clean_correct": int(correct.sum()),
                     "quick": {}, "full": {}, "implementations": {}, "autoattack": {}}
        print(f"\n== {name} ({source}): clean {100 * rec['clean_acc_grid']:.1f} % on {grid_n}; "
              f"{rec['clean_correct']} of the first {args.n} clean-correct; load {load()}", flush=True)

        # 1. quick budgets, every eps
        for norm, names in lists.items():
            for eps in eps_all[norm]:
                rows, masks = {}, []
                for comp in names:
                    attack = plugin(registry, comp, "quick")
                    robust, secs, bad = run_plugin(registry, model, attack, x, y, correct, eps, "quick")
                    masks.append(robust)
                    rows[comp] = {"s": secs, "robust_acc": float(robust.float().mean()), "violations": bad,
                                  "definition": attack.describe()}
                    print(f"  quick {norm} eps {eps:g} {comp:<11} {secs:7.2f} s  robust "
                          f"{100 * rows[comp]['robust_acc']:5.1f} %  violations {bad}", flush=True)
                worst = torch.stack(masks).all(0)
                base = "apgd-ce" if norm == "linf" else "apgd-ce-l2"
                total = sum(r["s"] for r in rows.values())
                if base not in rows:  # the quick L2 worst case has no APGD: one run only as the ratio's unit
                    _, secs, _ = run_plugin(registry, model, plugin(registry, base, "quick"), x, y, correct, eps,
                                            "quick")
                    rows[base] = {"s": secs, "not_a_component": True}
                new = LINF_NEW if norm == "linf" else L2_NEW
                added = sum(rows[c]["s"] for c in new if c in rows)
                rec["quick"][f"{norm}@{eps:g}"] = {
                    "components": {c: r for c, r in rows.items() if not r.get("not_a_component")}, "worst_case_robust_acc": float(worst.float().mean()),
                    "total_s": total, "ratio_to_apgd_ce": total / rows[base]["s"],
                    "added_s": added, "added_s_grid": scale * added}
                print(f"  quick {norm} eps {eps:g} worst case {100 * worst.float().mean():.1f} %, total {total:.1f} s "
                      f"= {total / rows[base]['s']:.1f} x {base}; added components {added:.1f} s "
                      f"(grid-scaled {scale * added:.1f} s)", flush=True)
        rec["added_s_grid_total"] = sum(v["added_s_grid"] for v in rec["quick"].values())

        xf, yf, cf = data.test_x[:args.n_full], data.test_y[:args.n_full], correct_all[:args.n_full]
        # 2. full budgets, first eps of each norm
        if not args.no_full:
            for norm, names in lists_full.items():
                eps = eps_all[norm][0]
                rows, masks, aa_masks = {}, [], []
                for comp in names:
                    if comp in args.full_skip:
                        continue
                    attack = plugin(registry, comp, "full")
                    robust, secs, bad = run_plugin(registry, model, attack, xf, yf, cf, eps, "full")
                    masks.append(robust)
                    if comp in ("apgd-ce", "apgd-t", "fab-t", "square", *L2_NEW):
                        aa_masks.append(robust)
                    rows[comp] = {"s": secs, "robust_acc": float(robust.float().mean()), "violations": bad,
                                  "definition": attack.describe()}
                    print(f"  full  {norm} eps {eps:g} {comp:<11} {secs:7.2f} s  robust "
                          f"{100 * rows[comp]['robust_acc']:5.1f} %  violations {bad}", flush=True)
                base = "apgd-ce" if norm == "linf" else "apgd-ce-l2"
                total = sum(r["s"] for r in rows.values())
                worst = float(torch.stack(masks).all(0).float().mean())
                worst_aa = float(torch.stack(aa_masks).all(0).float().mean()) if aa_masks else None
                rec["full"][f"{norm}@{eps:g}"] = {
                    "components": rows, "worst_case_robust_acc": worst, "autoattack_components_robust_acc": worst_aa,
                    "total_s": total, "ratio_to_apgd_ce": total / rows[base]["s"], "skipped": list(args.full_skip)}
                print(f"  full  {norm} eps {eps:g} worst case {100 * worst:.1f} % (AutoAttack's 4: "
                      f"{100 * worst_aa:.1f} %), total {total:.1f} s = {total / rows[base]['s']:.1f} x {base}",
                      flush=True)

        if not args.no_torchattacks:
            # 3. implementations at the quick budgets
            for norm in ("linf", "l2"):
                eps = eps_all[norm][0]
                suffix = "" if norm == "linf" else "-l2"
                for kind in ("apgd-t", "fab-t", "square"):
                    attack = plugin(registry, kind + suffix, "quick")
                    ours, t_ours, v_ours = run_plugin(registry, model, attack, x, y, correct, eps, "quick")
                    fn = torchattacks_fn(kind, model, norm, eps, attack.params, seed=0)
                    theirs, t_theirs, v_theirs = measure(fn, model, x, y, correct, eps, norm)
                    rec["implementations"][f"{kind}{suffix}@{eps:g}"] = {
                        "params": hparams.as_dict(attack.params),
                        "ours": {"s": t_ours, "robust_acc": float(ours.float().mean()), "violations": v_ours},
                        "torchattacks": {"s": t_theirs, "robust_acc": float(theirs.float().mean()),
                                         "violations": v_theirs}}
                    print(f"  impl  {kind + suffix:<10} eps {eps:g}: ours {t_ours:6.2f} s "
                          f"{100 * ours.float().mean():5.1f} % (viol {v_ours}) | torchattacks {t_theirs:6.2f} s "
                          f"{100 * theirs.float().mean():5.1f} % (viol {v_theirs})", flush=True)
                base = plugin(registry, "apgd-ce" + suffix, "quick")
                ours, t_ours, v_ours = run_plugin(registry, model, base, x, y, correct, eps, "quick")
                ta, t_ta, v_ta = measure(torchattacks_fn("apgd-ce", model, norm, eps, base.params, seed=0), model, x, y,
                                         correct, eps, norm)
                rec["implementations"][f"apgd-ce{suffix}@{eps:g}"] = {
                    "params": hparams.as_dict(base.params),
                    "ours": {"s": t_ours, "robust_acc": float(ours.float().mean()), "violations": v_ours},
                    "torchattacks": {"s": t_ta, "robust_acc": float(ta.float().mean()), "violations": v_ta}}
                print(f"  impl  apgd-ce{suffix:<3}  eps {eps:g}: ours {t_ours:6.2f} s {100 * ours.float().mean():5.1f} % "
                      f"(viol {v_ours}) | torchattacks {t_ta:6.2f} s {100 * ta.float().mean():5.1f} % (viol {v_ta})",
                      flush=True)

            # 4. torchattacks' AutoAttack, standard version
            if not args.no_full:
                for norm in ("linf", "l2"):
                    eps = eps_all[norm][0]
                    fn = torchattacks_fn("autoattack", model, norm, eps, None, seed=0)
                    robust, secs, bad = measure(fn, model, xf, yf, cf, eps, norm)
                    quick_worst = torch.stack([run_plugin(registry, model, plugin(registry, c, "quick"), xf, yf, cf,
                                                          eps, "quick")[0] for c in lists[norm]]).all(0)
                    full = rec["full"][f"{norm}@{eps:g}"]
                    rec["autoattack"][f"{norm}@{eps:g}"] = {
                        "torchattacks_autoattack": {"s": secs, "robust_acc": float(robust.float().mean()),
                                                    "violations": bad},
                        "ours_full_worst_case": {"s": full["total_s"], "robust_acc": full["worst_case_robust_acc"]},
                        "ours_full_autoattack_components": {"robust_acc": full["autoattack_components_robust_acc"]},
                        "ours_quick_worst_case": {"robust_acc": float(quick_worst.float().mean())}}
                    print(f"  AutoAttack {norm} eps {eps:g} (torchattacks, standard): {secs:.1f} s, robust "
                          f"{100 * robust.float().mean():.1f} % (viol {bad}) | ours full "
                          f"{100 * full['worst_case_robust_acc']:.1f} % (AutoAttack's 4 "
                          f"{100 * full['autoattack_components_robust_acc']:.1f} %), ours quick "
                          f"{100 * quick_worst.float().mean():.1f} %", flush=True)
        rec["load_after"] = load()
        out["models"][name] = rec
        if args.json:  # after each model, so that an interrupted run keeps what it measured
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(out, indent=1) + "\n")

    out["grid_added_s_all_models"] = sum(m["added_s_grid_total"] for m in out["models"].values())
    out["wall_s"] = time.perf_counter() - started
    print(f"\nquick grid ({grid_n} test images): the components AutoAttack adds cost ~"
          f"{out['grid_added_s_all_models']:.0f} s for {', '.join(args.defenses)} together "
          f"(extrapolated from {args.n} images); this run {out['wall_s']:.0f} s", flush=True)
    print_table(out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")


def print_table(out: dict) -> None:
    """One line per component: quick seconds per eps and model, full seconds, robust accuracy."""
    models = list(out["models"])
    for norm, names in out["config"]["components"].items():
        keys = [f"{norm}@{e:g}" for e in out["config"]["epsilons"][norm]]
        print(f"\n{norm}: seconds (robust %) per model; quick at {', '.join(keys)}; full at {keys[0]}")
        print(f"{'component':<12}" + "".join(f"{m:>34}" for m in models))
        for comp in [*names, "TOTAL", "ratio/apgd-ce", "worst case"]:
            cells = []
            for m in models:
                rec = out["models"][m]
                parts = []
                for where, ks in (("quick", keys), ("full", keys[:1])):
                    for k in ks:
                        entry = rec[where].get(k)
                        if entry is None:
                            continue
                        if comp == "TOTAL":
                            parts.append(f"{entry['total_s']:.0f}")
                        elif comp == "ratio/apgd-ce":
                            parts.append(f"{entry['ratio_to_apgd_ce']:.1f}x")
                        elif comp == "worst case":
                            parts.append(f"{100 * entry['worst_case_robust_acc']:.0f}%")
                        elif comp in entry["components"]:
                            c = entry["components"][comp]
                            parts.append(f"{c['s']:.1f}({100 * c['robust_acc']:.0f})")
                        else:
                            parts.append("-")
                cells.append(" ".join(parts))
            print(f"{comp:<12}" + "".join(f"{c:>34}" for c in cells))


if __name__ == "__main__":
    main()
