"""Carlini & Wagner L2 attack (2017), through foolbox."""
from __future__ import annotations

from dataclasses import dataclass

import foolbox

from bench.plugins import Attack
from bench.tracks.image_robustness import TRACK
from bench.tracks.image_robustness.adversarial import keep_modes, no_param_grads


@dataclass(frozen=True)
class CWParams:
    binary_search_steps: int = 3
    steps: int = 50  # Adam steps per binary-search step
    stepsize: float = 0.01  # Adam learning rate
    confidence: float = 0.0  # kappa: required logit margin
    initial_const: float = 0.001  # c, the trade-off between distance and misclassification


class CWL2(Attack):
    """C&W L2 (Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017).

    A minimum-norm attack: Adam on the tanh-reparametrised input minimises ||delta||_2^2 + c * f(x+delta)
    with the logit-margin loss f (confidence kappa), and a binary search over c. Implementation:
    ``foolbox.attacks.L2CarliniWagnerAttack``, called with ``epsilons=[eps]`` so that foolbox clips the
    found perturbation to the L2 ball of radius eps (the threat model is the fixed-budget L2 ball).
    Defaults: 3 binary-search steps of 50 Adam steps, lr 0.01, kappa 0, c0 = 1e-3 (the paper's lr, kappa
    and c0); quick: the defaults with c0 = 0.1; full: 9 x 1000 from c0 = 1e-3 (the paper's 9 binary-search
    steps; it used up to 10,000 iterations with early abort); smoke: 1 x 3.

    Departures from the paper: the quick and smoke budgets are far below the paper's, and quick starts the
    search at c = 0.1 to make up for its 3 binary-search steps; a minimum-norm result larger than eps is
    scaled back onto the ball (it may then no longer fool the model) rather than reported with its norm.
    """

    track = TRACK
    norm = "l2"
    Params = CWParams
    # quick starts c at 0.1: from the paper's 1e-3, 3 binary-search steps (c x10 per failure) rarely reach
    # a c that fools a trained model (measured on Fashion-MNIST at eps=1: 84% vs 63% robust accuracy left).
    profiles = {"smoke": {"binary_search_steps": 1, "steps": 3}, "quick": {"initial_const": 0.1},
                "full": {"binary_search_steps": 9, "steps": 1000}}

    def perturb(self, model, x, y, eps, ctx):
        p = self.params
        attack = foolbox.attacks.L2CarliniWagnerAttack(
            binary_search_steps=p.binary_search_steps, steps=p.steps, stepsize=p.stepsize,
            confidence=p.confidence, initial_const=p.initial_const)
        with no_param_grads(model), keep_modes(model):
            fmodel = foolbox.PyTorchModel(model, bounds=ctx.bounds, device=x.device)
            _, clipped, _ = attack(fmodel, x, y, epsilons=[eps])
        return clipped[0].detach()
