"""A toy track: two Gaussian blobs in the plane, a linear classifier, its test accuracy. It exists to show that
a new track is one package plus entry-point lines. Like every track package it imports no torch here."""
from __future__ import annotations

from bench.plugins import Track
from bench.tables import dedupe, fmt, md_row

TRACK = "toy-track"


class ToyTrack(Track):
    """Linear classifiers on Gaussian blobs; one table per dataset, one row per (defense, evaluator, metric)."""

    classifies = True
    suites = {"toy-smoke": {"defenses": ("toy-linear",), "attacks": ("toy-accuracy",), "datasets": ("toy-blobs",),
                            "seeds": (0,), "profile": "smoke"}}
    contract = {"dataset": "toy-blobs", "defense": "toy-linear", "inputs": "tensors"}

    def tables(self, records, facts):
        by_dataset: dict[str, list[dict]] = {}
        for r in records:
            by_dataset.setdefault(r["dataset"]["name"], []).append(r)
        out = {}
        for dataset, recs in sorted(by_dataset.items()):
            values: dict[tuple[str, str, str], list[float]] = {}
            for r in dedupe(recs):
                for m in r["metrics"]:
                    key = (r["defense"]["name"], r["attack"]["name"], m["name"])
                    values.setdefault(key, []).append(m["value"])
            lines = [f"# Toy leaderboard: {dataset}", "", md_row(["Defense", "Evaluator", "Metric", "Value (%)"]),
                     md_row(["---", "---", "---", "---:"])]
            lines += [md_row([*key, fmt(v)]) for key, v in sorted(values.items())]
            out[f"{dataset}.md"] = "\n".join(lines) + "\n"
        return out
