"""The unlearning track: scenarios (an image dataset plus a forget set), methods that start from the original
model, and evaluators of forgetting and membership inference. Classifiers and their training loop come from
the image-robustness track."""
from __future__ import annotations

from bench.plugins import Track

TRACK = "unlearning"

# `original` first, so the methods' times measure the unlearning step only.
DEFENSES = ("original", "retrain", "finetune", "neggrad", "random-label", "laf", "laf-r")
EVALUATORS = ("unlearning-acc", "mia")
SCENARIOS = ("fashion-mnist-random", "fashion-mnist-uniform", "fashion-mnist-class", "fashion-mnist-noisy")


class Unlearning(Track):
    """Accuracy on the forget, remaining and test data, membership inference, the gap to `retrain`."""

    suites = {
        "unlearning-quick": {"defenses": DEFENSES, "attacks": EVALUATORS, "datasets": SCENARIOS, "seeds": (0,),
                             "profile": "quick"},
        "unlearning-full": {"defenses": DEFENSES, "attacks": EVALUATORS, "datasets": SCENARIOS, "seeds": (0, 1),
                            "profile": "full"},
        "unlearning-smoke": {"defenses": DEFENSES, "attacks": EVALUATORS, "datasets": ("uci-digits-random",),
                             "seeds": (0,), "profile": "smoke"},
    }
    contract = {"dataset": "uci-digits-random", "defense": "original", "inputs": "tensors"}
    summary_metrics = ("acc [forget]", "acc [test]", "mia_forget")

    def tables(self, records, facts):
        from bench.tracks.unlearning import table

        return table.tables(records, facts.reported)
