"""Fast gradient sign method (Goodfellow et al., 2015), through foolbox."""
from __future__ import annotations

from dataclasses import dataclass

import foolbox

from bench.plugins import Attack
from bench.tracks.image_robustness import TRACK
from bench.tracks.image_robustness.adversarial import keep_modes, no_param_grads


@dataclass(frozen=True)
class FGSMParams:
    """FGSM has no hyperparameters beyond eps."""


class FGSM(Attack):
    """FGSM (Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015).

    Threat model: L-inf ball of radius eps, within the data bounds. One step x + eps * sign(grad of the
    summed cross-entropy), clipped to the bounds; no random start; no hyperparameters, so every profile is
    the same. Implementation: ``foolbox.attacks.FGSM`` (foolbox 3). No departure from the paper.
    """

    track = TRACK
    norm = "linf"
    Params = FGSMParams

    def perturb(self, model, x, y, eps, ctx):
        # device=x.device: foolbox otherwise moves the model to cuda:0 whenever CUDA exists.
        with no_param_grads(model), keep_modes(model):
            fmodel = foolbox.PyTorchModel(model, bounds=ctx.bounds, device=x.device)
            _, clipped, _ = foolbox.attacks.FGSM()(fmodel, x, y, epsilons=[eps])
        return clipped[0].detach()
