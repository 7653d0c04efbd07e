"""Auto-PGD with the cross-entropy and the DLR loss (Croce & Hein, 2020), L-inf and L2, through torchattacks."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torchattacks
from torch import nn

from bench.plugins import Attack
from bench.tracks.image_robustness import TRACK
from bench.tracks.image_robustness.adversarial import keep_modes


@dataclass(frozen=True)
class APGDParams:
    steps: int = 50
    restarts: int = 1  # 1 = a single run from one random start
    rho: float = 0.75  # step-size halving threshold on the fraction of improving steps


class _ToUnitBox(nn.Module):
    """torchattacks assumes 4-D inputs in [0, 1]: it attacks z in [0, 1] (N, 1, 1, D) and this maps z back
    to the model's input space and shape."""

    def __init__(self, model: nn.Module, lo: float, hi: float, shape: torch.Size):
        super().__init__()
        self.model, self.lo, self.span, self.shape = model, lo, hi - lo, shape

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model((z * self.span + self.lo).reshape(-1, *self.shape))


class _APGD(Attack):
    track = TRACK
    norm = "linf"
    Params = APGDParams
    profiles = {"smoke": {"steps": 2}, "quick": {}, "full": {"steps": 100}}
    loss: str

    def perturb(self, model, x, y, eps, ctx):
        p = self.params
        lo, hi = ctx.bounds
        # The seed comes from the run's generator, so results are deterministic under the run's seed.
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator))
        unit = (x - lo) / (hi - lo)
        z = unit if unit.dim() == 4 else unit.reshape(len(x), 1, 1, -1)
        plain = (lo, hi) == (0.0, 1.0) and x.dim() == 4
        wrapped = model if plain else _ToUnitBox(model, lo, hi, x.shape[1:])
        # The map to [0, 1] scales every coordinate by 1 / (hi - lo): the ball's radius scales alike, in both norms.
        attack = torchattacks.APGD(wrapped, norm={"linf": "Linf", "l2": "L2"}[self.norm], eps=eps / (hi - lo),
                                   steps=p.steps, n_restarts=p.restarts, seed=seed, loss=self.loss, rho=p.rho)
        # torchattacks reseeds the global CPU RNG and the current CUDA device's (fork_rng restores both)
        # and calls model.eval() (keep_modes restores every module's flag).
        devices = [torch.cuda.current_device()] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), keep_modes(model):
            z_adv = attack(z, y)
        return (z_adv.reshape(x.shape) * (hi - lo) + lo).detach()


class APGDCE(_APGD):
    """APGD-CE (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020), L-inf.

    PGD with momentum 0.75 and an adaptive step size: it starts at 2*eps and is halved at checkpoints
    (at 22% of the budget, then at shrinking intervals down to 6%) where fewer than rho=0.75 of the steps
    since the last checkpoint raised the loss, or the best loss stalled; each halving restarts from the best
    point. Loss: summed cross-entropy. Implementation: ``torchattacks.APGD`` (a port of the authors' code).
    Defaults (quick): 50 steps, 1 run; full: 100 steps, 1 run (AutoAttack's standard APGD-CE); smoke: 2.

    Departures from the paper: its random-start seed is drawn from the run's generator; the quick and smoke
    budgets are below the paper's 100 steps. Examples not fooled are returned unperturbed.
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
    box, and a random start on the L2 sphere of radius eps. Implementation: ``torchattacks.APGD(norm="L2")``
    (its per-example step sizes are correct in L2, unlike its ``APGDT``'s). Defaults as ``apgd-ce`` (quick:
    50 steps; full: 100 steps, 1 run, AutoAttack's standard L2 APGD-CE; smoke: 2).

    Departures from the paper: as ``apgd-ce``.
    """

    norm = "l2"
    loss = "ce"
