"""Per-example worst case over a list of attacks, AutoAttack-style (Croce & Hein, 2020)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.plugins import Attack
from bench.tracks.image_robustness import TRACK


class WorstCase(Attack):
    """The per-example worst case over a list of attacks: an example is robust only if no listed attack fools
    it. In a grid the runner computes each listed attack on every clean-correct example exactly as that attack's
    own cell does (and reuses the cell's outcome when it is there) and takes the per-example AND of the
    outcomes, so this is never more than any component. ``perturb`` (used outside the runner) runs the attacks in order, each only on the examples still
    correctly classified, and returns per example the first adversarial input that fools the model (else x
    unchanged). Sub-attacks run through the framework's threat check (``ctx.run``) with this run's profile,
    and must share this evaluator's norm.

    This is AutoAttack's evaluation protocol (Croce & Hein, ICML 2020). The default lists are AutoAttack's
    standard version -- APGD-CE, APGD-T, FAB-T and Square -- followed by the suite's other attacks (see the
    subclasses). Each component runs at this run's profile: in ``full`` the AutoAttack components have
    AutoAttack's standard budgets (APGD-CE 100 steps; APGD-T and FAB-T 100 steps x 9 target classes; Square
    5,000 queries), in ``quick`` and ``smoke`` smaller ones (each component's docstring gives them).

    Departures from AutoAttack: the suite's own attacks are added (they can only lower the number); the
    components are run independently on all clean-correct examples rather than each on the survivors of
    the previous ones (the same per-example AND, up to random draws; the costs add up); the quick and smoke
    budgets are below AutoAttack's (set to keep the CPU quick grid affordable; measured in
    ``benchmarks/results/worst_case_cost_cpu.json``), so a quick number is a looser upper bound.
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
    attacks: tuple[str, ...] = ("apgd-ce", "apgd-t", "fab-t", "square",  # AutoAttack's standard version
                                "apgd-dlr", "pgd-linf", "fgsm", "deepfool")


# On the CPU profiles the worst case keeps the suite's own attacks (the committed quick tables are made of them;
# AutoAttack's components still run as their own columns when selected); `full` is AutoAttack's standard list
# plus the suite's.
SUITE_LINF = ("apgd-ce", "apgd-dlr", "pgd-linf", "fgsm", "deepfool")
SUITE_L2 = ("pgd-l2", "cw-l2")


class WorstCaseLinf(WorstCase):
    __doc__ = (WorstCase.__doc__ or "") + """
    L-inf: by default AutoAttack's standard list (APGD-CE, APGD-T, FAB-T, Square), then APGD-DLR, PGD, FGSM
    and DeepFool, each at this run's profile.
    """

    norm = "linf"
    Params = WorstCaseLinfParams
    profiles = {"smoke": {"attacks": SUITE_LINF}, "quick": {"attacks": SUITE_LINF}}


@dataclass(frozen=True)
class WorstCaseL2Params:
    attacks: tuple[str, ...] = ("apgd-ce-l2", "apgd-t-l2", "fab-t-l2", "square-l2",  # AutoAttack's standard, L2
                                "pgd-l2", "cw-l2")


class WorstCaseL2(WorstCase):
    __doc__ = (WorstCase.__doc__ or "") + """
    L2: by default AutoAttack's standard list in L2 (APGD-CE, APGD-T, FAB-T, Square), then PGD-L2 and
    C&W-L2, each at this run's profile.
    """

    norm = "l2"
    Params = WorstCaseL2Params
    profiles = {"smoke": {"attacks": SUITE_L2}, "quick": {"attacks": SUITE_L2}}
