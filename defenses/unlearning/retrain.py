"""Retrain: the unlearning reference (exact unlearning)."""
from __future__ import annotations

from bench.tracks.image_robustness.training import train_classifier
from bench.tracks.unlearning.scenarios import (
    UnlearningDefense,
    forget_remain,
    train_subset,
)


class Retrain(UnlearningDefense):
    """Training from scratch on the remaining data only, with the original model's recipe (same architecture,
    optimiser, epochs, seed): what every unlearning method tries to match. It never sees the forget set.
    Its time is a full training; the methods' times are measured against it.
    """

    def fit(self, model, data, ctx) -> None:
        _, remain = forget_remain(data)
        # The noisy-label scenario's remaining labels are the clean ones (only the forget set was corrupted).
        train_classifier(model, train_subset(data, remain), ctx, self.recipe(data), desc=self.name)
