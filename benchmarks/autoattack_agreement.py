"""The suite's worst case against an independent AutoAttack (torchattacks' standard version), per example, on
models the suite trained: does any example survive our worst case but fall to AutoAttack?

For each worst-case record (``worst-case`` L-inf, ``worst-case-l2`` L2) of the chosen defenses and seed, the
model is loaded from the results folder's cache (the record's model key; its sha256 is checked against the
record's ``weights_sha256``), torchattacks' ``AutoAttack(version="standard")`` runs on the first ``--n`` test
examples at the record's eps, and the two per-example outcomes are compared on those examples: robust accuracy
each, the examples only AutoAttack breaks (our worst case missed them) and those only ours breaks.

    python benchmarks/autoattack_agreement.py --results RESULTS --profile full --n 500 --json out.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from bench.records import iter_records, unpack_mask

WORST_CASES = {"worst-case": "Linf", "worst-case-l2": "L2"}


def _weights(cache: Path, defense: dict):
    path = cache / f"{defense['model_key']}.safetensors"
    if not path.is_file():
        print(f"autoattack_agreement: no cached model {path.name} in {cache} (the record's model key)", file=sys.stderr)
        raise SystemExit(2)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if defense.get("weights_sha256") and digest != defense["weights_sha256"]:
        print(f"autoattack_agreement: {path}: sha256 {digest[:12]} is not the record's "
              f"{defense['weights_sha256'][:12]}", file=sys.stderr)
        raise SystemExit(2)
    from safetensors.torch import load_file

    return load_file(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, required=True, help="results folder with records/ and cache/")
    ap.add_argument("--cache", type=Path, default=None, help="model cache (default: RESULTS/cache)")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--profile", default="full")
    ap.add_argument("--defenses", nargs="+", default=["standard", "pgd-at", "lirpa"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=500, help="the first N test examples")
    ap.add_argument("--eps", type=float, nargs="*", default=None, help="only these budgets (default: every one)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if not (args.results / "records").is_dir():
        ap.error(f"--results {args.results}: no records/ folder there")
    if args.n < 1:
        ap.error(f"--n must be at least 1, not {args.n}")

    import torchattacks

    from bench.registry import Registry
    from bench.tracks.image_robustness.models import build_model

    registry = Registry()
    from bench import hparams

    data = registry.load("dataset", args.dataset)
    splits = data(hparams.resolve({args.dataset: data}, args.profile, [])[args.dataset]).load()
    x, y = splits.test_x[:args.n], splits.test_y[:args.n]
    cache = args.cache or args.results / "cache"
    device = torch.device(args.device)
    rows = []
    for record in iter_records(args.results / "records"):
        name = record["attack"]["name"]
        if (name not in WORST_CASES or record["defense"]["name"] not in args.defenses
                or record["dataset"]["name"] != args.dataset or record["profile"] != args.profile
                or record["seed"] != args.seed or record["status"] != "ok"):
            continue
        defense = record["defense"]
        model = build_model(defense["params"]["arch"], splits.spec.input_shape, splits.spec.num_classes,
                            defense["params"].get("width", 1))
        model.load_state_dict(_weights(cache, defense))
        model.to(device).eval()
        for entry in record["per_example"]:
            if args.eps is not None and not any(abs(entry["eps"] - e) < 1e-9 for e in args.eps):
                continue
            ours = torch.as_tensor(unpack_mask(entry))[:args.n]
            start = time.perf_counter()
            aa = torchattacks.AutoAttack(model, norm=WORST_CASES[name], eps=entry["eps"], version="standard",
                                         n_classes=splits.spec.num_classes, seed=args.seed)
            x_adv = torch.cat([aa(x[i:i + 250].to(device), y[i:i + 250].to(device)).cpu()
                               for i in range(0, len(x), 250)])
            with torch.no_grad():
                theirs = model(x_adv.to(device)).argmax(1).cpu() == y
            only_aa = int((ours & ~theirs).sum())
            row = {"defense": defense["name"], "attack": name, "eps": entry["eps"], "n": len(x),
                   "ours_robust": float(ours.float().mean()), "autoattack_robust": float(theirs.float().mean()),
                   "only_autoattack_breaks": only_aa, "only_ours_breaks": int((~ours & theirs).sum()),
                   "autoattack_s": time.perf_counter() - start}
            rows.append(row)
            print(f"{row['defense']:<10}{name:<15}eps {entry['eps']:<6g} ours {100 * row['ours_robust']:5.1f} %  "
                  f"AutoAttack {100 * row['autoattack_robust']:5.1f} %  only AA breaks {only_aa}, only ours "
                  f"{row['only_ours_breaks']}  ({row['autoattack_s']:.0f} s)", flush=True)
            if args.json:  # after every row: a long run cut short keeps what it measured
                args.json.write_text(json.dumps({"config": {k: str(v) for k, v in vars(args).items()},
                                                 "torchattacks": torchattacks.__version__, "rows": rows}, indent=1))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
