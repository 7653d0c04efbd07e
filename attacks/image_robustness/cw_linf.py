"""CW-Linf: PGD on the Carlini-Wagner margin loss (Carlini & Wagner, S&P 2017; the L-inf "CW-inf" evaluation of
TRADES, ARD and MTARD)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.plugins import Attack
from bench.tracks.image_robustness import TRACK
from bench.tracks.image_robustness.adversarial import random_delta


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed CW margin max_{j != y} z_j - z_y (positive once the example is misclassified)."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return (others.max(dim=1).values - z_y).sum()


@dataclass(frozen=True)
class CWLinfParams:
    steps: int = 20
    rel_step: float = 2.5  # step size = rel_step * eps / steps, as pgd-linf
    random_start: bool = True


class CWLinf(Attack):
    """PGD under the L-inf threat model with the Carlini-Wagner margin loss instead of cross-entropy
    ("CW-inf" in the adversarial-distillation literature): a uniform random start in the eps-ball, then
    ``steps`` signed-gradient ascent steps on max_{j != y} z_j - z_y of size ``rel_step * eps / steps``, each
    projected onto the eps-ball and the data bounds. The margin works on logits directly, so it is not fooled by
    saturated softmax outputs that flatten the cross-entropy's gradient.

    Defaults (quick): 20 steps (PGD-20, as those papers), step 2.5*eps/20, one random start; full: 50 steps;
    smoke: 2. Departures: the papers take absolute steps (CIFAR-10: 2/255 or 0.003 at 8/255); the margin is not
    clipped at a confidence kappa (ascent continues past the decision boundary, which does not change whether
    an example is fooled).
    """

    track = TRACK
    norm = "linf"
    Params = CWLinfParams
    profiles = {"smoke": {"steps": 2}, "quick": {}, "full": {"steps": 50}}

    def perturb(self, model, x, y, eps, ctx):
        p = self.params
        step = p.rel_step * eps / max(p.steps, 1)
        lo, hi = ctx.bounds
        x = x.detach()
        lower, upper = (x - eps).clamp(min=lo), (x + eps).clamp(max=hi)
        x_adv = torch.clamp(x + random_delta(x, eps, "linf", ctx.generator), lower, upper) if p.random_start \
            else x.clone()
        with torch.enable_grad():
            for _ in range(p.steps):
                x_adv.requires_grad_(True)
                (grad,) = torch.autograd.grad(margin(model(x_adv), y), x_adv)
                x_adv = torch.clamp(x_adv.detach() + step * grad.sign(), lower, upper)
        return x_adv.detach()
