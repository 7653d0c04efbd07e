"""Text-attack throughput: model queries per second of each word-substitution attack, side by side with the
victim model's own batched forward rate on the same texts, and the time to attack 500 examples.

The victim is the runner's cached model of ``--defense`` (trained on first use, like ``bench run``). Each attack
runs exactly as in a record (``Evaluator.evaluate``, constraint checks and CSV included) on the first
``--examples`` test examples; its queries are read back from its summary metrics. The reference is the
model's forward pass alone on the test texts in batches of the attacks' batch size: attack q/s divided by
that rate is the share of the attack's time spent in the model (the rest is candidate generation, WordNet /
GloVe / MLM look-ups and bookkeeping). Measured directly too: the time inside the victim's forward and inside
the constraints' sentence encoder, as shares of the attack's wall time (WordNet and GloVe are loaded before the
clock starts: a one-off per process). "500 examples" is extrapolated linearly from the measured examples.

``--precisions float32,float16`` runs every attack once per CUDA query precision (``cuda_precision``, see
``bench.tracks.text_robustness.precision``) and compares each run's per-example results with the first
precision's: the share of examples with the same outcome (Successful / Failed / Skipped / Rejected), the share
with the same final text, and the accuracy under attack of each.

    python benchmarks/text_attack_throughput.py --examples 50 --json benchmarks/results/text_attack_cpu.json
    python benchmarks/text_attack_throughput.py --device cuda --dataset bbc-news --profile full --examples 40 \
        --precisions float32,tf32,float16 --json benchmarks/results/text_precision_gpu.json
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import tempfile
import time
import typing
from pathlib import Path

import torch

from bench.context import EvalContext
from bench.registry import Registry
from bench.runner import Runner, Selection, plan
from bench.tracks.text_robustness import attack as attack_loop
from bench.tracks.text_robustness import precision as precision_module
from bench.tracks.text_robustness import resources, sentence_encoder

ATTACKS = ("pwws", "textfooler", "bert-attack", "textbugger")


def forward_rate(model, texts, batch_size: int) -> float:
    """Texts per second through the model alone (no gradients), batched like the attacks' victim."""
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            model(texts[i:i + batch_size]).cpu()  # .cpu(): on CUDA, the time until the result exists
    return len(texts) / (time.perf_counter() - start)


def per_example(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def agreement(rows: list[dict], reference: list[dict]) -> dict:
    """How far one precision's per-example results are from the reference precision's."""
    same = [a["result_type"] == b["result_type"] for a, b in zip(rows, reference)]
    text = [a["perturbed_text"] == b["perturbed_text"] for a, b in zip(rows, reference)]
    return {"same_outcome": round(sum(same) / len(same), 3), "same_text": round(sum(text) / len(text), 3)}


@contextlib.contextmanager
def timed(owner, name: str):
    """Seconds spent inside ``owner.name`` (a method or module function) while the block runs: ``[total]``."""
    inner, spent = getattr(owner, name), [0.0]

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start

    setattr(owner, name, wrapper)
    try:
        yield spent
    finally:
        if owner.__dict__.get(name) is wrapper and isinstance(owner, torch.nn.Module):
            del owner.__dict__[name]  # back to the class's method
        else:
            setattr(owner, name, inner)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="rotten-tomatoes")
    ap.add_argument("--defense", default="mlp-ft")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--examples", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precisions", default="float32", help="comma-separated cuda_precision values; the first is "
                                                              "the reference of the agreement columns")
    ap.add_argument("--results", type=Path, default=Path("leaderboards"), help="where the victim model is cached")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    known = typing.get_args(precision_module.Precision)
    if bad := [p for p in args.precisions.split(",") if p not in known]:
        ap.error(f"--precisions: {', '.join(bad)} not one of {', '.join(known)}")  # exit 2, before any compute

    registry = Registry()
    the_plan = plan(registry, Selection(defenses=(args.defense,), attacks=ATTACKS, datasets=(args.dataset,),
                                        profile=args.profile))
    job = the_plan.jobs[0]
    device = torch.device(args.device)
    runner = Runner(registry, args.results, device=args.device)
    model, _ = runner.model(job.defense, job.dataset, job.seed, args.profile)
    data = runner.data(job.dataset)
    resources.wordnet().synsets("good")  # the one-off loads, before any clock starts
    resources.glove()
    sentence_encoder.embed(["a warm-up sentence"])
    rows, reference = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for cell in job.cells:
            for precision in args.precisions.split(","):
                attack = cell.attack
                attack.params = dataclasses.replace(attack.params, n_examples=args.examples,
                                                    cuda_precision=precision)
                texts = data.test_x[:args.examples]
                rate = forward_rate(model, texts, attack.params.batch_size)
                artifacts = Path(tmp) / f"{attack.name}-{precision}"
                ctx = EvalContext(device=device, batch_size=64, generator=torch.Generator().manual_seed(0),
                                  profile=args.profile, model_of=lambda name, **o: None, artifacts=artifacts)
                sentence_encoder._caches.clear()  # every precision starts cold
                with timed(attack_loop.Victim, "probs") as in_victim, timed(sentence_encoder, "embed") as in_encoder:
                    start = time.perf_counter()
                    metrics = {m["name"]: m for m in attack.evaluate(model, data, ctx)}
                    seconds = time.perf_counter() - start
                budget = metrics["query_budget_used"]
                queries = budget["value"] * budget["max_queries"] * budget["n"]
                results = per_example(artifacts / "results.csv")
                reference.setdefault(attack.name, results)
                rows.append({"attack": attack.name, "precision": precision, "examples": args.examples,
                             "attacked": budget["n"], "seconds": round(seconds, 2), "queries": round(queries),
                             "queries_per_s": round(queries / seconds, 1), "model_forward_per_s": round(rate, 1),
                             "share_in_model": round(queries / seconds / rate, 2),
                             "victim_share_timed": round(in_victim[0] / seconds, 2),
                             "encoder_share_timed": round(in_encoder[0] / seconds, 2),
                             "s_per_500_examples": round(seconds / args.examples * 500),
                             "acc_under_attack": round(metrics["acc_under_attack"]["value"], 3),
                             **agreement(results, reference[attack.name])})
    print(f"{args.defense} on {args.dataset} ({args.profile}), {args.examples} test examples, {device}, "
          f"{torch.get_num_threads()} torch threads")
    print(f"{'attack':<12} {'precision':<9} {'s':>7} {'queries':>8} {'q/s':>7} {'fwd/s':>7} {'victim':>7} "
          f"{'encoder':>7} {'s/500 ex':>9} {'AuA':>6} {'same out':>8} {'same txt':>8}")
    for r in rows:
        print(f"{r['attack']:<12} {r['precision']:<9} {r['seconds']:>7} {r['queries']:>8} {r['queries_per_s']:>7} "
              f"{r['model_forward_per_s']:>7} {r['victim_share_timed']:>7} {r['encoder_share_timed']:>7} "
              f"{r['s_per_500_examples']:>9} {r['acc_under_attack']:>6} {r['same_outcome']:>8} {r['same_text']:>8}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"dataset": args.dataset, "defense": args.defense, "profile": args.profile,
                                         "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                                         "threads": torch.get_num_threads(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
