"""Per-example worst case over a list of attacks, AutoAttack-style (Croce & Hein, 2020)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.plugins import Attack
from bench.tracks.image_robustness import TRACK


class WorstCase(Attack):
    """Runs each listed attack in order, each only on the examples that are still correctly classified
    (clean errors need no attack), and returns, per example, the first adversarial input that fools the model
    (else x unchanged). Sub-attacks run through the framework's threat check (``ctx.run``) with this run's
    profile, and must share this evaluator's norm.

    This is AutoAttack's evaluation protocol (Croce & Hein, ICML 2020) with a configurable attack list.
    Departure: AutoAttack's standard list is APGD-CE, APGD-T, FAB-T and Square; here the defaults are the
    suite's registered attacks (see the subclasses), so the result is an upper bound on robust accuracy
    that is typically looser than AutoAttack's.
    """

    track = TRACK

    def components(self) -> tuple[str, ...]:
        return tuple(self.params.attacks)

    def perturb(self, model, x, y, eps, ctx):
        # Load and check every sub-attack before any compute.
        subs = [ctx.attack(name) for name in self.params.attacks]
        for sub in subs:
            if isinstance(sub, WorstCase):
                raise ValueError(f"{self.name}: {sub.name!r} is itself a worst-case evaluator")
            if sub.norm != self.norm:
                raise ValueError(f"{self.name} ({self.norm}): sub-attack {sub.name!r} is {sub.norm}")
        x_adv = x.detach().clone()
        with torch.no_grad():
            left = (model(x).argmax(1) == y).nonzero().squeeze(1)
        for sub in subs:
            if left.numel() == 0:
                break
            cand = ctx.run(sub, model, x[left], y[left], eps)
            with torch.no_grad():
                fooled = model(cand).argmax(1) != y[left]
            x_adv[left[fooled]] = cand[fooled]
            left = left[~fooled]
        return x_adv


@dataclass(frozen=True)
class WorstCaseLinfParams:
    attacks: tuple[str, ...] = ("apgd-ce", "apgd-dlr", "pgd-linf", "fgsm", "deepfool")


class WorstCaseLinf(WorstCase):
    __doc__ = (WorstCase.__doc__ or "") + """
    L-inf: by default APGD-CE, APGD-DLR, PGD, FGSM, DeepFool, each at this run's profile.
    """

    norm = "linf"
    Params = WorstCaseLinfParams


@dataclass(frozen=True)
class WorstCaseL2Params:
    attacks: tuple[str, ...] = ("pgd-l2", "cw-l2")


class WorstCaseL2(WorstCase):
    __doc__ = (WorstCase.__doc__ or "") + """
    L2: by default PGD-L2 then C&W-L2, each at this run's profile.
    """

    norm = "l2"
    Params = WorstCaseL2Params
