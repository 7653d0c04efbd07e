"""Accuracy on each unseen target domain and their mean: the single-source domain-generalisation metric
(DomainBed's table shape, Gulrajani & Lopez-Paz, ICLR 2021)."""
from __future__ import annotations

import statistics

from bench.plugins import Evaluator
from bench.tracks.domain_shift import TRACK


class DomainAccuracy(Evaluator):
    """Top-1 accuracy of the trained model on every target domain of the dataset (``Splits.extras["domains"]``),
    then their unweighted mean (domain ``average``). Source-domain test accuracy is the record's clean_acc.
    No threat model, no hyperparameters."""

    track = TRACK
    metric = "accuracy"

    def evaluate(self, model, data, ctx):
        domains = data.extras.get("domains")
        if not domains:
            raise ValueError(f"{self.name}: dataset {data.spec.name} defines no target domains")
        notes = data.extras.get("domain_notes", {})
        metrics = []
        for name, (x, y) in domains.items():
            acc = ctx.accuracy(model, x, y)
            metrics.append({"name": "accuracy", "domain": name, "value": acc, "n": len(y),
                            "definition": f"top-1 accuracy on target domain {name}: {notes.get(name, name)}"})
        metrics.append({"name": "accuracy", "domain": "average",
                        "value": statistics.fmean(m["value"] for m in metrics), "n": sum(m["n"] for m in metrics),
                        "definition": "unweighted mean of the target-domain accuracies"})
        return metrics
