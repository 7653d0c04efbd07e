"""PGD adversarial training (Madry et al., "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018)."""
from __future__ import annotations

from dataclasses import dataclass

from bench.plugins import Splits
from bench.tracks.image_robustness import TRACK
from bench.tracks.image_robustness.adversarial import pgd
from bench.tracks.image_robustness.training import ClassifierDefense, OptimParams, train_classifier


@dataclass(frozen=True)
class PGDATParams(OptimParams):
    eps: float | None = None  # None: the dataset's first Linf budget (0.1 on Fashion-MNIST)
    steps: int = 5
    rel_step: float = 2.5  # step size = rel_step * eps / steps, as in Madry et al.
    random_start: bool = True


class PGDAT(ClassifierDefense):
    """Min-max training: every batch is replaced by Linf PGD examples crafted against the current model.

    Threat model: Linf, eps = the dataset's first budget unless set. Defaults: the shared small CNN (cnn-small; cnn in the full profile), Adam 1e-3
    cosine, batch 128, PGD with a random start and step 2.5*eps/steps. Departures from the paper (which trains
    on MNIST with 40 steps of 0.01 at eps 0.3 and on CIFAR-10 with 7 steps): fewer steps and epochs on CPU
    profiles (quick: 5 steps, 5 epochs; full: 10 steps, 20 epochs); the attack runs with the model in eval mode
    (identical for models without BatchNorm/dropout).
    """

    track = TRACK
    Params = PGDATParams
    profiles = {"smoke": {"epochs": 5, "steps": 2, "lr": 3e-3, "batch_size": 64},
                "full": {"epochs": 20, "steps": 10, "arch": "cnn"}}


    def fit(self, model, data: Splits, ctx) -> None:
        p = self.params
        eps = p.eps if p.eps is not None else ctx.epsilons["linf"][0]
        ctx.log(train_eps=eps)
        bounds = data.spec.bounds

        def adversarial(model, x, y):
            model.eval()
            x_adv = pgd(model, x, y, eps=eps, step_size=p.rel_step * eps / p.steps, steps=p.steps,
                        norm="linf", random_start=p.random_start, bounds=bounds, generator=ctx.generator)
            model.train()
            return x_adv

        train_classifier(model, data, ctx, p, make_inputs=adversarial, desc=self.name)
