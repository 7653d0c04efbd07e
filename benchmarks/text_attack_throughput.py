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

    python benchmarks/text_attack_throughput.py --examples 50 --json benchmarks/results/text_attack_cpu.json
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from bench.context import EvalContext
from bench.registry import Registry
from bench.runner import Runner, Selection, plan
from bench.tracks.text_robustness import resources, sentence_encoder

ATTACKS = ("pwws", "textfooler", "bert-attack", "textbugger")


def forward_rate(model, texts, batch_size: int) -> float:
    """Texts per second through the model alone (no gradients), batched like the attacks' victim."""
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            model(texts[i:i + batch_size])
    return len(texts) / (time.perf_counter() - start)


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
    ap.add_argument("--results", type=Path, default=Path("leaderboards"), help="where the victim model is cached")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    registry = Registry()
    the_plan = plan(registry, Selection(defenses=(args.defense,), attacks=ATTACKS, datasets=(args.dataset,),
                                        profile=args.profile))
    job = the_plan.jobs[0]
    runner = Runner(registry, args.results, device="cpu")
    model, _ = runner.model(job.defense, job.dataset, job.seed, args.profile)
    data = runner.data(job.dataset)
    resources.wordnet().synsets("good")  # the one-off loads, before any clock starts
    resources.glove()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cell in job.cells:
            attack = cell.attack
            attack.params = dataclasses.replace(attack.params, n_examples=args.examples)
            texts = data.test_x[:args.examples]
            rate = forward_rate(model, texts, attack.params.batch_size)
            ctx = EvalContext(device=torch.device("cpu"), batch_size=64, generator=torch.Generator().manual_seed(0),
                              profile=args.profile, model_of=lambda name, **o: None,
                              artifacts=Path(tmp) / attack.name)
            with timed(model, "forward") as in_victim, timed(sentence_encoder, "embed") as in_encoder:
                start = time.perf_counter()
                metrics = {m["name"]: m for m in attack.evaluate(model, data, ctx)}
                seconds = time.perf_counter() - start
            budget = metrics["query_budget_used"]
            queries = budget["value"] * budget["max_queries"] * budget["n"]
            rows.append({"attack": attack.name, "examples": args.examples, "attacked": budget["n"],
                         "seconds": round(seconds, 2), "queries": round(queries),
                         "queries_per_s": round(queries / seconds, 1), "model_forward_per_s": round(rate, 1),
                         "share_in_model": round(queries / seconds / rate, 2),
                         "victim_share_timed": round(in_victim[0] / seconds, 2),
                         "encoder_share_timed": round(in_encoder[0] / seconds, 2),
                         "s_per_500_examples": round(seconds / args.examples * 500)})
    print(f"{args.defense} on {args.dataset} ({args.profile}), {args.examples} test examples, "
          f"{torch.get_num_threads()} torch threads")
    print(f"{'attack':<12} {'s':>7} {'queries':>8} {'q/s':>7} {'fwd/s':>7} {'in model':>8} {'victim':>7} "
          f"{'encoder':>7} {'s/500 ex':>9}")
    for r in rows:
        print(f"{r['attack']:<12} {r['seconds']:>7} {r['queries']:>8} {r['queries_per_s']:>7} "
              f"{r['model_forward_per_s']:>7} {r['share_in_model']:>8} {r['victim_share_timed']:>7} "
              f"{r['encoder_share_timed']:>7} {r['s_per_500_examples']:>9}")
    if args.json:
        args.json.write_text(json.dumps({"dataset": args.dataset, "defense": args.defense, "profile": args.profile,
                                         "threads": torch.get_num_threads(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
