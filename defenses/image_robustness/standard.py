"""Standard training (empirical risk minimisation): the undefended baseline every table needs."""
from __future__ import annotations

from dataclasses import dataclass

from bench.plugins import Splits
from bench.tracks.image_robustness import TRACK
from bench.tracks.image_robustness.training import ClassifierDefense, OptimParams, train_classifier


@dataclass(frozen=True)
class StandardParams(OptimParams):
    pass


class Standard(ClassifierDefense):
    """Cross-entropy training on clean inputs.

    Threat model: none (it is the baseline). Defaults: the shared small CNN (cnn-small; cnn in the full profile), Adam 1e-3 with a cosine schedule,
    batch 128; 5 epochs (quick), 5 on a small subset (smoke), 20 (full).
    """

    track = TRACK
    Params = StandardParams
    profiles = {"smoke": {"epochs": 5, "lr": 3e-3, "batch_size": 64}, "full": {"epochs": 20, "arch": "cnn"}}


    def fit(self, model, data: Splits, ctx) -> None:
        train_classifier(model, data, ctx, self.params, desc=self.name)
