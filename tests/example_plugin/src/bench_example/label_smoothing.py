"""Label smoothing (Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016) as a bench defense.

Not a real defense against adaptive attacks -- which is exactly what a leaderboard next to pgd-at shows.
"""
from dataclasses import dataclass

import torch.nn.functional as F

from bench.tracks.image_robustness import TRACK
from bench.tracks.image_robustness.training import (
    ClassifierDefense,
    OptimParams,
    train_classifier,
)


@dataclass(frozen=True)
class Params(OptimParams):
    smoothing: float = 0.1


class LabelSmoothing(ClassifierDefense):
    """Cross-entropy against smoothed labels. Threat model: none claimed. Defaults: smoothing 0.1 and the
    shared training defaults of bench.tracks.image_robustness.training.OptimParams."""

    track = TRACK
    Params = Params
    profiles = {"smoke": {"epochs": 5, "arch": "cnn-small", "lr": 3e-3, "batch_size": 64}}

    def fit(self, model, data, ctx):
        def loss(model, x, x_train, y):
            return F.cross_entropy(model(x_train), y, label_smoothing=self.params.smoothing)

        train_classifier(model, data, ctx, self.params, loss_fn=loss, desc=self.name)
