"""What LiRA's shadow models cost, and that they are paid once: shadow training as a multiple of one `retrain`,
and a second method's membership inference once the shadows are cached -- one run, one results folder.

Through the real runner (fresh results folder, one scenario, one seed):

1. ``retrain``'s model: its training time is the unit;
2. ``lira`` (and ``u-lira``) on ``original``: the first membership evaluation trains the ``n_shadows`` shadows
   (each a cached model of the runner); their summed training time / retrain's is the shadow cost;
3. ``lira`` on a second method (``finetune``, its model trained beforehand): the evaluation time alone, with the
   number of shadow trainings it caused (0: it reuses the cached shadows); then its ``u-lira`` (n_shadows runs of
   the method on the shadows, the extra price of U-LiRA, also as a multiple of retrain).

    OMP_NUM_THREADS=1 python benchmarks/unlearning_mia_cost.py --profile smoke --out benchmarks/results/unlearning_mia_cost_cpu.json
    OMP_NUM_THREADS=1 python benchmarks/unlearning_mia_cost.py --profile quick --dataset uci-digits-random
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from bench.registry import Registry
from bench.runner import Runner, Selection, plan


def _shadow_trainings(runner, name="shadow") -> list[float]:
    return sorted(meta["train_s"] for model, meta in runner._models.values()
                  if meta["defense"]["name"] == name and not meta.get("cached"))


def measure(profile: str, dataset: str, n_shadows: int, device: str, results: Path) -> dict:
    registry = Registry()
    out = io.StringIO()
    runner = Runner(registry, results, device=device, out=out)
    def job(defense: str, attacks: tuple[str, ...]):
        sets = tuple(f"{a}.n_shadows={n_shadows}" for a in attacks)
        return plan(registry, Selection(defenses=(defense,), attacks=attacks, datasets=(dataset,), seeds=(0,),
                                        profile=profile, sets=sets)).jobs[0]

    original = job("original", ("lira",))
    runner.model(original.defense, original.dataset, 0, profile)  # first: it also warms the process up
    retrain = job("retrain", ("lira",))
    _, meta = runner.model(retrain.defense, retrain.dataset, 0, profile)
    unit = meta["train_s"]

    def evaluate(j):
        model, meta = runner.model(j.defense, j.dataset, 0, profile)  # trained (or loaded) before the clock
        before = {name: len(_shadow_trainings(runner, name)) for name in ("shadow", "shadow-unlearn")}
        times = {}
        for cell in j.cells:
            clean = runner._clean(model, j.dataset)
            start = time.perf_counter()
            runner._evaluate(j, cell, profile, model, meta, clean)
            times[cell.attack.name] = time.perf_counter() - start
        trained = {name: len(_shadow_trainings(runner, name)) - before[name] for name in before}
        return times, trained, meta["train_s"]

    first_times, first_trained, _ = evaluate(original)
    shadows = _shadow_trainings(runner)
    second = job("finetune", ("lira", "u-lira"))
    second_times, second_trained, method_s = evaluate(second)
    unlearned = _shadow_trainings(runner, "shadow-unlearn")
    return {
        "profile": profile, "dataset": dataset, "n_shadows": n_shadows, "device": device,
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "retrain_train_s": unit,
        "first_method": {"name": "original", "lira_eval_s": first_times["lira"],
                         "shadows_trained": first_trained["shadow"], "shadow_train_s": shadows,
                         "shadow_train_total_s": sum(shadows),
                         "shadow_cost_vs_retrain": sum(shadows) / unit,
                         "lira_eval_vs_retrain": first_times["lira"] / unit},
        "second_method": {"name": "finetune", "method_train_s": method_s, "lira_eval_s": second_times["lira"],
                          "shadows_trained": second_trained["shadow"],
                          "lira_eval_vs_retrain": second_times["lira"] / unit,
                          "lira_eval_vs_first": second_times["lira"] / first_times["lira"],
                          "u_lira_eval_s": second_times["u-lira"],
                          "u_lira_shadow_runs": second_trained["shadow-unlearn"],
                          "u_lira_runs_total_s": sum(unlearned),
                          "u_lira_eval_vs_retrain": second_times["u-lira"] / unit},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--dataset", default="uci-digits-random")
    parser.add_argument("--n-shadows", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args.profile, args.dataset, args.n_shadows, args.device, Path(tmp))
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        existing = json.loads(args.out.read_text()) if args.out.exists() else {}
        existing[f"{args.profile}/{args.dataset}/{args.n_shadows}"] = result
        args.out.write_text(json.dumps(existing, indent=1) + "\n")


if __name__ == "__main__":
    main()
