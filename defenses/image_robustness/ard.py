"""Adversarially Robust Distillation (Goldblum, Fowl, Feizi & Goldstein, AAAI 2020): a student distilled from
one robust teacher -- MTARD's single-teacher baseline."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from bench.plugins import Splits
from bench.tracks.image_robustness import TRACK
from bench.tracks.image_robustness.adversarial import pgd
from bench.tracks.image_robustness.training import ClassifierDefense, OptimParams, train_classifier

# The distillation defenses (ARD, MTARD) share their budgets per profile, so that their rows compare.
DISTILLATION_PROFILES = {
    "smoke": {"epochs": 5, "steps": 2, "lr": 3e-3, "batch_size": 64}, "quick": {"teacher_width": 1},
    "full": {"epochs": 10, "steps": 10, "arch": "cnn", "batch_size": 256, "teacher_epochs": 10}}


@dataclass(frozen=True)
class ARDParams(OptimParams):
    teacher: Literal["pgd-at", "trades"] = "pgd-at"  # the robust teacher, trained (once) by the runner
    teacher_width: int = 2  # wider than the student
    teacher_epochs: int | None = None  # None: the teacher's own profile
    temperature: float = 30.0
    alpha: float = 1.0  # weight of the distillation term; 1 - alpha weights CE on clean inputs
    eps: float | None = None  # None: the dataset's first Linf budget (0.1 on Fashion-MNIST)
    steps: int = 5
    rel_step: float = 2.5  # step size = rel_step * eps / steps, as pgd-at


def teacher_overrides(p) -> dict:
    """The robust teacher's hyperparameters that differ from its own profile (shared with mtard)."""
    return {"width": p.teacher_width, **({"epochs": p.teacher_epochs} if p.teacher_epochs is not None else {})}


class ARD(ClassifierDefense):
    """Loss alpha * t^2 * KL(T(x)/t || S(x')/t) + (1 - alpha) * CE(S(x), y): the student S on adversarial
    inputs x' (PGD on S's cross-entropy, uniform random start) matches the robust teacher T's softened output
    on the *clean* input x.

    Threat model: Linf, eps = the dataset's first budget unless set. Teacher: ``pgd-at`` (or ``trades``) at
    ``teacher_width`` times the student's width, from the runner's cache (trained first if missing).
    Defaults: t = 30, alpha = 1 (the authors' released defaults), KL averaged over all elements (batch and
    classes, as their code), the shared small CNN student (cnn-small; cnn in full), Adam 1e-3 cosine, batch
    128; quick: 5 epochs, 5 PGD steps of 2.5*eps/5 (pgd-at's budget); full: 10 steps, 10 epochs, batch 256.
    Departures from the paper: Adam and a cosine schedule instead of SGD 0.1 with step decay over 200 epochs;
    student in eval mode while attacking (identical without BatchNorm); the teacher is a wider copy of the
    student's architecture, not a WideResNet -- in the quick profile the cached pgd-at row's model itself (not
    wider: CPU budget).
    """

    track = TRACK
    Params = ARDParams
    # quick: the cached pgd-at row's model as the teacher (a 2x wider one costs ~4x pgd-at on these CPUs)
    profiles = DISTILLATION_PROFILES


    def fit(self, model, data: Splits, ctx) -> None:
        p = self.params
        teacher = ctx.model_of(p.teacher, **teacher_overrides(p))
        eps = p.eps if p.eps is not None else ctx.epsilons["linf"][0]
        ctx.log(train_eps=eps)
        t = p.temperature

        def adversarial(model, x, y):
            model.eval()
            x_adv = pgd(model, x, y, eps=eps, step_size=p.rel_step * eps / p.steps, steps=p.steps, norm="linf",
                        random_start=True, bounds=data.spec.bounds, generator=ctx.generator)
            model.train()
            return x_adv

        def loss(model, x, x_adv, y):
            with torch.no_grad():
                soft = F.softmax(teacher(x) / t, dim=1)
            # KL averaged over all elements (batch and classes), as the authors' code
            distill = F.kl_div(F.log_softmax(model(x_adv) / t, dim=1), soft, reduction="sum") / soft.numel() * t * t
            if p.alpha == 1.0:
                return distill  # no clean forward pass needed
            return p.alpha * distill + (1 - p.alpha) * F.cross_entropy(model(x), y)

        train_classifier(model, data, ctx, p, make_inputs=adversarial, loss_fn=loss, desc=self.name)
