"""Fine-tuning on the remaining data: the simplest approximate unlearning baseline."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

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


class Finetune(UnlearningDefense):
    """Fine-tune (e.g. Warnecke et al. 2023; the "FT" baseline of the LAF paper): continue training the original
    model with cross-entropy on the remaining data only, relying on catastrophic forgetting of the forget set.

    Defaults: Adam, ``unlearn_lr`` 1e-3 with a cosine schedule, ``unlearn_epochs`` 1 (quick; 2 in full), i.e.
    about a fifth of the original training. Departures: none beyond the budget.
    """

    Params = Params
    profiles = method_profiles(full={"unlearn_epochs": 2})

    def fit(self, model, data, ctx) -> None:
        self.start_from_original(model, ctx)
        _, remain = forget_remain(data)
        p = dataclasses.replace(self.recipe(data), epochs=self.params.unlearn_epochs, lr=self.params.unlearn_lr,
                                schedule="cosine")
        train_classifier(model, train_subset(data, remain), ctx, p, desc=self.name)
