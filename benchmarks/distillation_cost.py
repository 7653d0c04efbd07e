"""Training cost of trades, ard and mtard relative to pgd-at, measured under identical conditions.

``train_s`` in records is wall time on whatever the machine was doing then (cached models may come from another
session, thread count or load); this runs one epoch of each defense's own ``fit`` on the same batches, repeats
interleaved (pgd-at, trades, ard, mtard, pgd-at, ...) so load drifts hit all alike, and reports the median time
per epoch and its ratio to pgd-at. Teachers are untrained models of the right architecture (their cost, not
their weights, matters here).

    python benchmarks/distillation_cost.py --profile quick --n-train 2560 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bench.context import TrainContext
from bench.hparams import resolve
from bench.registry import Registry

DEFENSES = ("pgd-at", "trades", "ard", "mtard")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--n-train", type=int, default=2560)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    registry = Registry()

    def plugin(kind, name, **overrides):
        cls = registry.load(kind, name)
        sets = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
        return cls(resolve({name: cls}, args.profile, sets)[name])

    data = plugin("dataset", args.dataset).load()
    data.train_x, data.train_y = data.train_x[:args.n_train], data.train_y[:args.n_train]
    device = torch.device(args.device)

    def teacher(name, **overrides):
        return plugin("defense", name, **overrides).build(data.spec).to(device).eval().requires_grad_(False)

    times: dict[str, list[float]] = {name: [] for name in DEFENSES}
    for _ in range(args.repeats):
        for name in DEFENSES:
            defense = plugin("defense", name, epochs=1)
            torch.manual_seed(0)
            model = defense.build(data.spec)
            ctx = TrainContext(device=device, seed=0, generator=torch.Generator().manual_seed(0), artifacts=None,
                               model_of=teacher, epsilons={"linf": (0.1,)})
            start = time.perf_counter()
            defense.fit(model, data, ctx)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["pgd-at"])
    result = {name: {"median_s": statistics.median(t), "vs_pgd_at": statistics.median(t) / base, "runs": t}
              for name, t in times.items()}
    print(json.dumps({"profile": args.profile, "n_train": args.n_train, "device": args.device,
                      "threads": torch.get_num_threads(), "defenses": result}, indent=1))


if __name__ == "__main__":
    main()
