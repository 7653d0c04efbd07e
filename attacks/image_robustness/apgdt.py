"""Targeted Auto-PGD on the targeted DLR loss, APGD-T (Croce & Hein, 2020), L-inf and L2: the suite's own
implementation of the paper's algorithm (``_apgd``), AutoAttack's target classes in turn."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.plugins import Attack
from bench.tracks.image_robustness import TRACK
from bench_attacks.image_robustness._apgd import apgd
from bench_attacks.image_robustness._common import random_start, top_targets


@dataclass(frozen=True)
class APGDTParams:
    steps: int = 25  # iterations per target class and restart
    targets: int = 3  # the k most likely other classes, attacked in turn
    restarts: int = 1  # random starts per target class
    rho: float = 0.75  # step-size halving threshold on the fraction of improving steps


class _APGDT(Attack):
    track = TRACK
    Params = APGDTParams
    # quick: measured on the CPU by benchmarks/worst_case_cost.py (see the docstring's departures).
    profiles = {"smoke": {"steps": 3, "targets": 2}, "quick": {}, "full": {"steps": 100, "targets": 9}}

    def perturb(self, model, x, y, eps, ctx):
        p = self.params
        order, correct = top_targets(model, x, y, p.targets)
        if order.shape[1] < 4:
            raise ValueError(f"{self.name}: the targeted DLR loss needs at least 4 classes, not {order.shape[1]}")
        out = x.detach().clone()
        left = correct.nonzero().squeeze(1)  # clean errors are already adversarial: returned unchanged
        for j in range(1, p.targets + 1):
            for _ in range(p.restarts):
                if left.numel() == 0:
                    return out
                xs, ys = x[left].detach(), y[left]
                x0 = random_start(xs, eps, self.norm, ctx.generator, ctx.bounds)
                adv, fooled = apgd(model, xs, ys, eps, self.norm, p.steps, "dlr-targeted", x0, ctx.bounds,
                                       target=order[left, j], rho=p.rho)
                out[left[fooled]] = adv[fooled]
                left = left[~fooled]
        return out


class APGDT(_APGDT):
    """APGD-T (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020), L-inf: AutoAttack's targeted APGD.

    For each of the k classes with the highest clean logits other than the label, in turn, APGD (see
    ``apgd_run``: step size 2*eps halved at checkpoints, momentum 0.75, restarts from the best point) maximises
    the targeted DLR loss -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) from a random start on the eps-sphere,
    on the examples that no earlier target has broken. An example counts as broken when it is misclassified
    (as any class, as in AutoAttack); it is returned as the first misclassified iterate, else unchanged.
    Needs at least 4 classes. Implementation: the suite's own, from the paper's formulas (torchattacks'
    ``APGDT`` measured against it in ``benchmarks/worst_case_cost.py``).

    Budgets: full = AutoAttack's standard version: 100 iterations for each of 9 target classes, 1 restart;
    quick: 25 iterations for each of the top 3 target classes, 1 restart; smoke: 3 x 2.

    Departures from the paper: the quick and smoke budgets. Quick is set so that the components AutoAttack adds
    to the suite's worst cases (apgd-t, fab-t, square and their L2 variants, apgd-ce-l2) cost about 2.5 minutes
    for the CPU quick grid's three models on its 1,000 test images (the runner runs each component on every
    clean-correct example, so costs add up; APGD-T's share ~6 s per robust model for both L-inf eps;
    ``benchmarks/results/worst_case_cost_cpu.json``). An example stops being attacked at its first
    misclassified iterate (its outcome is the same; AutoAttack keeps iterating the whole batch); random starts
    are drawn from the run's generator.
    """

    norm = "linf"


class APGDTL2(_APGDT):
    """APGD-T (Croce & Hein, ICML 2020), L2: as ``apgd-t`` with L2 steps (eta * grad / ||grad||_2), the
    projection by rescaling onto the L2 ball then clamping to the box, and a random start on the L2 sphere
    of radius eps. Budgets as ``apgd-t`` (full: AutoAttack's standard L2 version, 100 iterations x 9 target
    classes).

    Departures from the paper: as ``apgd-t``. Not a wrapper of torchattacks' ``APGDT``: its L2 step uses the
    first example's step size for the whole batch.
    """

    norm = "l2"
