"""The unlearning track: scenarios (an image dataset plus a forget set), methods that start from the original
model, and evaluators of forgetting and membership inference. Classifiers and their training loop come from
the image-robustness track."""
from __future__ import annotations

from bench.plugins import Track

TRACK = "unlearning"

# `original` first, so the methods' times measure the unlearning step only.
DEFENSES = ("original", "retrain", "finetune", "neggrad", "random-label", "laf", "laf-r", "laf-balanced")
# `unlearning-acc` first: it trains `retrain` for the diagnostics; LiRA's shadows are trained by the first
# membership evaluation of each scenario and seed, then reused by every method.
EVALUATORS = ("unlearning-acc", "mia", "lira")
EVALUATORS_WITH_ULIRA = (*EVALUATORS, "u-lira")
SCENARIOS = ("fashion-mnist-random", "fashion-mnist-uniform", "fashion-mnist-class", "fashion-mnist-noisy")
DIGITS = ("uci-digits-random", "uci-digits-uniform", "uci-digits-class", "uci-digits-noisy")
CIFAR = ("cifar10-random", "cifar10-uniform", "cifar10-class", "cifar10-noisy")


class Unlearning(Track):
    """Accuracy on the forget, remaining and test data, membership inference (LiRA, U-LiRA and two population
    attacks, each with its own validity gate), how far each method moved the model, the gaps to `retrain`."""

    suites = {
        "unlearning-quick": {"defenses": DEFENSES, "attacks": EVALUATORS, "datasets": SCENARIOS, "seeds": (0,),
                             "profile": "quick"},
        "unlearning-digits": {"defenses": DEFENSES, "attacks": EVALUATORS_WITH_ULIRA, "datasets": DIGITS,
                              "seeds": (0,), "profile": "quick"},
        "unlearning-full": {"defenses": DEFENSES, "attacks": EVALUATORS, "datasets": SCENARIOS,
                            "seeds": (0, 1, 2), "profile": "full"},
        # U-LiRA runs every method n_shadows times (retrain: n_shadows trainings): the paper's data removal, three
        # seeds like every full row, on its own (GPU hours; `--set u-lira.n_shadows=8` halves it).
        "unlearning-ulira-full": {"defenses": DEFENSES, "attacks": EVALUATORS_WITH_ULIRA,
                                  "datasets": ("fashion-mnist-random",), "seeds": (0, 1, 2), "profile": "full"},
        "unlearning-cifar10-full": {"defenses": DEFENSES, "attacks": EVALUATORS, "datasets": CIFAR,
                                    "seeds": (0, 1, 2), "profile": "full"},
        "unlearning-smoke": {"defenses": DEFENSES, "attacks": EVALUATORS_WITH_ULIRA,
                             "datasets": ("uci-digits-random",), "seeds": (0,), "profile": "smoke"},
    }
    contract = {"dataset": "uci-digits-random", "defense": "original", "inputs": "tensors"}
    summary_metrics = ("acc [forget]", "acc [test]", "mia_auc [lira-online]", "mia_auc [lira-offline]",
                       "mia_auc [u-lira]", "mia_auc [confidence-logreg]", "mia_auc [softmax-gbdt]")

    def tables(self, records, facts):
        from bench.tracks.unlearning import table

        return table.tables(records, facts.reported)
