"""The domain-shift track: single-source domain generalisation (train on one domain, test on shifted ones),
style-augmentation methods and their shared training loop. Its classifiers also enter the image-robustness
grid."""
from __future__ import annotations

from bench.plugins import Track

TRACK = "domain-shift"

DEFENSES = ("erm", "dsu", "mixstyle", "advstyle-noise", "advstyle")
DATASETS = ("digits-dg", "fashion-dg")


class DomainShift(Track):
    """Accuracy on each target domain and their average, next to source accuracy."""

    suites = {
        "domain-quick": {"defenses": DEFENSES, "attacks": ("domain-accuracy",), "datasets": DATASETS,
                         "seeds": (0, 1, 2), "profile": "quick"},
        # On a GPU the same models also enter the image-robustness grid (on the shared CPUs PGD cost ~90 s a model).
        "domain-full": {"defenses": DEFENSES, "attacks": ("domain-accuracy", "pgd-linf"), "datasets": DATASETS,
                        "seeds": (0, 1, 2), "profile": "full"},
    }
    contract = {"dataset": "digits-dg", "defense": "erm", "inputs": "tensors"}
    summary_metrics = ("accuracy [average]", "robust_acc")

    def tables(self, records, facts):
        from bench.tracks.domain_shift import table

        return table.tables(records, facts.reported)

    def figures(self, records, out_dir, facts):
        from bench.tracks.domain_shift import table

        return table.figures(records, out_dir, facts)
