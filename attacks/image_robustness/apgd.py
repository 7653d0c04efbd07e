"""Auto-PGD with the cross-entropy and the DLR loss (Croce & Hein, 2020), L-inf and L2: the suite's own APGD
(``_apgd``), untargeted."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.plugins import Attack
from bench.tracks.image_robustness import TRACK
from bench_attacks.image_robustness._apgd import apgd
from bench_attacks.image_robustness._common import random_start


@dataclass(frozen=True)
class APGDParams:
    steps: int = 50
    restarts: int = 1  # 1 = a single run from one random start
    rho: float = 0.75  # step-size halving threshold on the fraction of improving steps


class _APGD(Attack):
    track = TRACK
    norm = "linf"
    Params = APGDParams
    profiles = {"smoke": {"steps": 2}, "quick": {}, "full": {"steps": 100}}
    loss: str

    def perturb(self, model, x, y, eps, ctx):
        p = self.params
        out = x.detach().clone()
        with torch.no_grad():
            left = (model(x).argmax(1) == y).nonzero().squeeze(1)  # clean errors: already adversarial
        for _ in range(p.restarts):
            if left.numel() == 0:
                break
            xs, ys = x[left].detach(), y[left]
            x0 = random_start(xs, eps, self.norm, ctx.generator, ctx.bounds)
            adv, fooled = apgd(model, xs, ys, eps, self.norm, p.steps, self.loss, x0, ctx.bounds, rho=p.rho)
            out[left[fooled]] = adv[fooled]
            left = left[~fooled]
        return out


class APGDCE(_APGD):
    """APGD-CE (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020), L-inf.

    PGD with momentum 0.75 and an adaptive step size: it starts at 2*eps and is halved at checkpoints
    (at 22% of the budget, then at shrinking intervals down to 6%) where fewer than rho=0.75 of the steps
    since the last checkpoint raised the loss, or the best loss stalled; each halving restarts from the best
    point. Loss: cross-entropy. Random start on the eps-sphere, as AutoAttack's. Implementation: the suite's
    own (``_apgd``, shared with ``apgd-t``), replayed as one CUDA graph per batch shape on a GPU;
    torchattacks' ``APGD`` (a port of the authors' code) is its reference in ``benchmarks/``.
    Defaults (quick): 50 steps, 1 run; full: 100 steps, 1 run (AutoAttack's standard APGD-CE); smoke: 2.

    Departures from the paper: the random start is drawn from the run's generator; the quick and smoke
    budgets are below the paper's 100 steps. An example is returned at its first misclassified iterate (as
    AutoAttack's ``x_best_adv``); examples not fooled are returned unperturbed.
    """

    loss = "ce"


class APGDDLR(_APGD):
    """APGD-DLR (Croce & Hein, ICML 2020), L-inf: APGD (see ``apgd-ce``) on the difference-of-logits-ratio
    loss -(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3), which is invariant to shifts and rescaling of the logits
    and so robust to gradient masking by logit scaling. Needs at least 3 classes. Defaults as ``apgd-ce``.

    Departures from the paper: as ``apgd-ce``; AutoAttack's standard suite uses the *targeted* DLR variant
    (APGD-T), this is the untargeted one.
    """

    loss = "dlr"


class APGDCEL2(_APGD):
    """APGD-CE (Croce & Hein, ICML 2020), L2: AutoAttack's first component in its L2 version. As ``apgd-ce``,
    with L2 steps eta * grad / ||grad||_2, the projection by rescaling onto the L2 ball then clamping to the
    box, and a random start on the L2 sphere of radius eps. Defaults as ``apgd-ce`` (quick: 50 steps; full:
    100 steps, 1 run, AutoAttack's standard L2 APGD-CE; smoke: 2).

    Departures from the paper: as ``apgd-ce``.
    """

    norm = "l2"
    loss = "ce"
