"""Projected gradient descent, L-inf and L2 (Madry et al., 2018), on the suite's fast PGD core."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from bench.plugins import Attack
from bench.tracks.image_robustness import TRACK
from bench.tracks.image_robustness.adversarial import pgd


@dataclass(frozen=True)
class PGDParams:
    steps: int = 20
    rel_step: float = 2.5  # step size = rel_step * eps / steps
    restarts: int = 1  # independent random starts; 1 = a single run
    random_start: bool = True
    # "ce": cross-entropy (the paper's); "cw": the Carlini-Wagner margin max_{i!=y} z_i - z_y; "dlr": the
    # difference-of-logits ratio. The last two keep a gradient where the softmax saturates.
    loss: Literal["ce", "cw", "dlr"] = "ce"


class _PGD(Attack):
    track = TRACK
    curve = True  # cheap enough to run at every eps of the dataset's sweep
    Params = PGDParams
    profiles = {"smoke": {"steps": 2}, "quick": {}, "full": {"steps": 50}}

    def perturb(self, model, x, y, eps, ctx):
        p = self.params
        step = p.rel_step * eps / max(p.steps, 1)

        def run(xs, ys):
            return pgd(model, xs, ys, eps, step, p.steps, norm=self.norm, random_start=p.random_start,
                       bounds=ctx.bounds, generator=ctx.generator, loss=p.loss)

        x_adv = run(x, y)
        if p.restarts <= 1:
            return x_adv  # the fast path: no predictions, no host sync
        # Restarts only on the examples not yet fooled; an example keeps its first success.
        with torch.no_grad():
            left = (model(x_adv).argmax(1) == y).nonzero().squeeze(1)
        for _ in range(p.restarts - 1):
            if left.numel() == 0:
                break
            cand = run(x[left], y[left])
            x_adv[left] = cand  # a failed restart replaces a failed one: both keep the robust label
            with torch.no_grad():
                left = left[model(cand).argmax(1) == y[left]]
        return x_adv


class PGDLinf(_PGD):
    """PGD under the L-inf threat model (Madry et al., "Towards Deep Learning Models Resistant to
    Adversarial Attacks", ICLR 2018).

    Untargeted ascent on the summed cross-entropy (``loss="ce"``, the default; ``"cw"``: the Carlini-Wagner
    margin max_{i!=y} z_i - z_y, ``"dlr"``: the difference-of-logits ratio, both of which keep a gradient
    when the softmax saturates and CE's vanishes): a uniform random start in the eps-ball, then ``steps``
    signed-gradient steps of size ``rel_step * eps / steps``, each projected onto the eps-ball and the data
    bounds. Defaults (quick): 20 steps, step 2.5*eps/20, one random start; full: 50 steps; smoke: 2.
    With ``restarts > 1`` the examples still correctly classified are attacked again from a fresh start and
    each example keeps its first adversarial input.

    Departures from the paper: the paper fixes absolute step sizes per dataset (MNIST: 40/100 steps of
    0.01 at eps=0.3; CIFAR-10: 7/20 steps of 2/255 at eps=8/255); a step relative to eps (2.5*eps/steps, the
    rule of thumb of Madry's group's ``robustness`` library) is used so one setting works across the eps
    sweep. Restarts keep the first success rather than the highest loss. The "cw" and "dlr" losses are not
    the paper's (they are Carlini & Wagner's, 2017, and Croce & Hein's, 2020).
    """

    norm = "linf"


class PGDL2(_PGD):
    """PGD under the L2 threat model (Madry et al., "Towards Deep Learning Models Resistant to Adversarial
    Attacks", ICLR 2018).

    Untargeted ascent on the summed cross-entropy (or, with ``loss``, the C&W margin or DLR: see ``pgd-linf``):
    a random start (uniform direction, radius uniform in
    [0, eps]), then ``steps`` steps of size ``rel_step * eps / steps`` along the per-example L2-normalised
    gradient, each projected onto the L2 eps-ball and the data bounds. Defaults (quick): 20 steps, step
    2.5*eps/20, one random start; full: 50 steps; smoke: 2. Restarts as for ``pgd-linf``.

    Departures from the paper: the paper's experiments are L-inf; this is the standard L2 variant of its
    algorithm (normalised-gradient steps, projection by rescaling), with a step relative to eps. The random
    radius is uniform in [0, eps] rather than uniform in the ball's volume.
    """

    norm = "l2"
