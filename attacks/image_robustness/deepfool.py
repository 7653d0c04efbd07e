"""DeepFool, L-inf (Moosavi-Dezfooli et al., 2016), through foolbox."""
from __future__ import annotations

from dataclasses import dataclass

import foolbox

from bench.plugins import Attack
from bench.tracks.image_robustness import TRACK
from bench.tracks.image_robustness.adversarial import keep_modes, no_param_grads


@dataclass(frozen=True)
class DeepFoolParams:
    steps: int = 50
    candidates: int | None = 10  # classes considered per step (the top ones by logit); None = all
    overshoot: float = 0.02


class DeepFoolLinf(Attack):
    """DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and accurate method to fool deep
    neural networks", CVPR 2016), L-inf variant.

    A minimum-norm attack: at each step the classifier is linearised and the input moved to the nearest
    (in L-inf, i.e. using the dual L1 norm of the gradient differences) linearised decision boundary, with
    overshoot. Implementation: ``foolbox.attacks.LinfDeepFoolAttack`` on the logits, called with
    ``epsilons=[eps]`` so foolbox clips the perturbation to the L-inf ball of radius eps. Defaults (quick and
    full): 50 steps, the top-10 candidate classes, overshoot 0.02 (the paper's); smoke: 1 step, top-2 classes.

    Departures from the paper: the paper's main algorithm is L2 (L-inf is its l_p extension); considering
    only the top candidate classes is foolbox's speed-up; a result larger than eps is clipped into the ball.
    """

    track = TRACK
    norm = "linf"
    Params = DeepFoolParams
    profiles = {"smoke": {"steps": 1, "candidates": 2}, "quick": {}, "full": {}}

    def perturb(self, model, x, y, eps, ctx):
        p = self.params
        attack = foolbox.attacks.LinfDeepFoolAttack(steps=p.steps, candidates=p.candidates,
                                                    overshoot=p.overshoot)
        with no_param_grads(model), keep_modes(model):
            fmodel = foolbox.PyTorchModel(model, bounds=ctx.bounds, device=x.device)
            _, clipped, _ = attack(fmodel, x, y, epsilons=[eps])
        return clipped[0].detach()
