"""Train the helper models of an unlearning grid -- originals, retrains and LiRA's shadows -- side by side,
before the grid runs.

    python scripts/prefetch_unlearning_models.py --results R --dataset fashion-mnist-noisy --seed 1 2 \
        --profile full --device cuda --lanes 8 [--defense laf-balanced]

A grid of few jobs (one method at two new seeds, say) gives the runner few lanes, and each lane trains the
helpers its cells need one after the other: the 16 shadows would queue behind two lanes. Here ``--lanes``
processes take the helpers (keyed exactly as the evaluators ask for them: the method's training fields) from one
list, each the next one nobody trains yet, through the runner's own cache and locks; `bench run` on the same
results folder afterwards finds them all cached.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

from bench.errors import UsageError
from bench.registry import Registry
from bench.runner import Runner, Selection, model_key, plan
from bench.tracks.unlearning.scenarios import train_fields


def helper_requests(defense, n_shadows: int, seeds) -> list[tuple[str, dict, int]]:
    """(helper name, overrides, seed) for every helper model the track's evaluators request for ``defense``."""
    recipe = train_fields(defense.params)
    per_seed = [(name, recipe, seed) for seed in seeds for name in ("original", "retrain")]
    shadows = [("shadow", dict(half=k, n_shadows=n_shadows, shadow_seed=0, **recipe), 0) for k in range(n_shadows)]
    return per_seed + shadows


def lane(args, index: int) -> None:
    registry = Registry()
    job = plan(registry, Selection((args.defense,), ("lira",), (args.dataset,), (args.seed[0],),
                                   args.profile)).jobs[0]
    lira = job.cells[0].attack
    runner = Runner(registry, Path(args.results), device=args.device)
    todo = helper_requests(job.defense, lira.params.n_shadows, args.seed)
    helpers = [(runner._helper(name, overrides, args.profile), seed) for name, overrides, seed in todo]
    keys = [model_key(d, job.dataset, runner._helper_seed(d, seed)) for d, seed in helpers]
    left = list(range(len(helpers)))
    time.sleep(index * 3)  # staggered starts, so lanes see each other's locks
    while left:
        free = [i for i in left if not runner.cache.busy(keys[i])]
        i = free[0] if free else left[0]  # nothing free: wait for one being trained, then load it
        defense, seed = helpers[i]
        runner._fetch(defense, job.dataset, seed, args.profile)
        runner._models.clear()  # this lane only trains; keep no models in memory
        left.remove(i)
    print(f"lane {index}: done", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--defense", default="original", help="whose training fields the helpers share")
    parser.add_argument("--seed", type=int, nargs="+", default=[0])
    parser.add_argument("--profile", default="full")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--lanes", type=int, default=4)
    args = parser.parse_args(argv)
    try:  # bad input: one line and exit code 2, before any process starts or anything is written
        plan(Registry(), Selection((args.defense,), ("lira",), (args.dataset,), tuple(args.seed), args.profile))
        if args.lanes < 1:
            raise UsageError(f"--lanes must be at least 1, got {args.lanes}")
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    procs = [mp.get_context("spawn").Process(target=lane, args=(args, i)) for i in range(args.lanes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return max(p.exitcode or 0 for p in procs)


if __name__ == "__main__":
    sys.exit(main())
