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
from bench_defenses.image_robustness.pgd_at import PGDAT
from bench_defenses.image_robustness.teachers import TEACHER_OF

# Every defense of the MTARD table (standard, pgd-at, trades, ard, mtard) trains its student for the same epochs
# at the same architecture and batch size in each profile: pgd-at's budget (the distillation defenses used to
# train 10 epochs at batch 256 in full against pgd-at's 20 at 128, which mixed budgets in one comparison).
DISTILLATION_PROFILES = {profile: dict(PGDAT.profiles.get(profile, {})) for profile in ("smoke", "quick", "full")}


@dataclass(frozen=True)
class ARDParams(OptimParams):
    teacher: Literal["pgd-at", "trades"] = "pgd-at"  # the robust teacher (``<name>-teacher``), trained once
    teacher_width: int | None = None  # None: the teacher defense's own (2x the student's; ``teachers.py``)
    teacher_epochs: int | None = None  # None: the teacher's own profile (its full budget there)
    temperature: float = 30.0
    alpha: float = 1.0  # weight of the distillation term; 1 - alpha weights CE on clean inputs
    eps: float | None = None  # None: the dataset's first Linf budget (0.1 on Fashion-MNIST)
    steps: int = 5
    rel_step: float = 2.5  # step size = rel_step * eps / steps, as pgd-at


def teacher_overrides(p) -> dict:
    """The teachers' hyperparameters that differ from their own profile (shared with mtard): none by default, so
    the model distilled from is the teacher row's cached model."""
    return {**({"width": p.teacher_width} if p.teacher_width is not None else {}),
            **({"epochs": p.teacher_epochs} if p.teacher_epochs is not None else {})}


class ARD(ClassifierDefense):
    """Loss alpha * t^2 * KL(T(x)/t || S(x')/t) + (1 - alpha) * CE(S(x), y): the student S on adversarial
    inputs x' (PGD on S's cross-entropy, uniform random start) matches the robust teacher T's softened output
    on the *clean* input x.

    Threat model: Linf, eps = the dataset's first budget unless set. Teacher: ``pgd-at-teacher`` (or
    ``trades-teacher``): the base defense at twice the student's width and its own full budget in each profile,
    from the runner's cache (trained first if missing) and a row of its own in the table.
    Defaults: t = 30, alpha = 1 (the authors' released defaults), KL averaged over all elements (batch and
    classes, as their code), the shared small CNN student (cnn-small; cnn in full), Adam 1e-3 cosine, batch
    128; pgd-at's budget in every profile (quick: 5 epochs, 5 PGD steps of 2.5*eps/5; full: 20 epochs, 10
    steps).
    Departures from the paper: Adam and a cosine schedule instead of SGD 0.1 with step decay over 200 epochs;
    student in eval mode while attacking (identical without BatchNorm); the teacher is a wider copy of the
    student's architecture, not a WideResNet.
    """

    track = TRACK
    Params = ARDParams
    profiles = DISTILLATION_PROFILES


    def fit(self, model, data: Splits, ctx) -> None:
        p = self.params
        teacher = ctx.model_of(TEACHER_OF[p.teacher], **teacher_overrides(p))
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

        train_classifier(model, data, ctx, p, make_inputs=adversarial, loss_fn=loss, desc=self.name,
                         graph_safe_loss=True)
