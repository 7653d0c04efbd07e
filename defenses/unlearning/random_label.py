"""Random labels: fine-tune on the forget set with wrong labels, next to the remaining data."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from bench.tracks.image_robustness.training import train_classifier
from bench.tracks.unlearning.scenarios import (
    TrainParams,
    UnlearningDefense,
    forget_remain,
    method_profiles,
    train_subset,
)


@dataclass(frozen=True)
class Params(TrainParams):
    unlearn_epochs: int = 1
    unlearn_lr: float = 1e-3


class RandomLabel(UnlearningDefense):
    """Random labels (Graves et al., AAAI'21 "Amnesiac machine learning"; the "RL" baseline of the LAF paper):
    relabel every forget sample with a class drawn uniformly among the other classes, then fine-tune the
    original model with cross-entropy on the remaining data (true labels) plus the relabelled forget set.

    Defaults: Adam, ``unlearn_lr`` 1e-3 with a cosine schedule, ``unlearn_epochs`` 1 (quick; 2 in full).
    Departures: Amnesiac ML relabels and fine-tunes on the forget batches only, then repairs on the
    remaining data; we mix both in one pass (the common "random labels" baseline of later papers).
    """

    Params = Params
    profiles = method_profiles(full={"unlearn_epochs": 2})

    def fit(self, model, data, ctx) -> None:
        self.start_from_original(model, ctx)
        forget, _ = forget_remain(data)
        k = data.spec.num_classes
        labels = data.train_y.clone()
        shift = torch.randint(1, k, (len(forget),), generator=ctx.generator)
        labels[forget] = (labels[forget] + shift) % k  # a class other than the training label
        p = dataclasses.replace(self.recipe(data), epochs=self.params.unlearn_epochs, lr=self.params.unlearn_lr,
                                schedule="cosine")
        everything = torch.arange(len(labels))
        train_classifier(model, train_subset(data, everything, labels), ctx, p, desc=self.name)
