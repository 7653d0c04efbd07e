"""Targeted Auto-PGD on the targeted DLR loss, APGD-T (Croce & Hein, 2020), L-inf and L2: the suite's own
implementation of the paper's algorithm (``apgd_run``), with per-example early exit."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.plugins import Attack
from bench.tracks.image_robustness import TRACK
from bench_attacks.image_robustness._common import per_example, project, random_start, top_targets


# ---- losses, per example, to be maximised ------------------------------------------------------------------
def ce_loss(z: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
    return F.cross_entropy(z, y, reduction="none")


def dlr_loss(z: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
    """-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3): the untargeted DLR loss (needs 3 classes)."""
    top, order = z.sort(dim=1, descending=True)
    z_y = z.gather(1, y[:, None]).squeeze(1)
    z_other = torch.where(order[:, 0] == y, top[:, 1], top[:, 0])
    return -(z_y - z_other) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted_loss(z: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2): the targeted DLR loss of APGD-T (needs 4 classes); pi
    orders the logits decreasingly. Invariant to shifting and positively rescaling the logits."""
    top = z.sort(dim=1, descending=True).values
    z_y = z.gather(1, y[:, None]).squeeze(1)
    z_t = z.gather(1, t[:, None]).squeeze(1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


LOSSES = {"ce": ce_loss, "dlr": dlr_loss, "dlr-targeted": dlr_targeted_loss}


def checkpoints(steps: int) -> list[int]:
    """The iterations w_j = ceil(p_j * steps) after which APGD may halve its step size: p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (the paper's schedule), below ``steps``, each once."""
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    w = {max(1, math.ceil(q * steps - 1e-9)) for q in p[1:]}
    return sorted(v for v in w if v < steps)


def _value_and_grad(model, xk, y, t, loss_fn):
    with torch.enable_grad():
        xk = xk.detach().requires_grad_(True)
        logits = model(xk)
        f = loss_fn(logits, y, t)
        (g,) = torch.autograd.grad(f.sum(), xk)
    return f.detach(), g.detach(), logits.detach()


def apgd_run(model, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, steps: int, loss: str,
             x0: torch.Tensor, bounds: tuple[float, float], target: torch.Tensor | None = None,
             rho: float = 0.75, momentum: float = 0.75) -> tuple[torch.Tensor, torch.Tensor]:
    """One APGD run from ``x0`` (Croce & Hein, ICML 2020, Algorithm 1): ascent on ``loss`` with step size
    eta_0 = 2 eps, momentum: x_{k+1} = P(x_k + a (z_{k+1} - x_k) + (1 - a)(x_k - x_{k-1})), z_{k+1} =
    P(x_k + eta_k step(grad)), a = 0.75 (1 at the first step), step = sign (L-inf) or grad / ||grad||_2 (L2),
    P the projection onto the ball and the box. At each checkpoint w_j (``checkpoints``) the step size of an
    example is halved, and its iterate reset to its best point, when (1) fewer than rho * (w_j - w_{j-1}) of the
    steps since the last checkpoint raised its loss, or (2) its step size was not halved at the last checkpoint
    and its best loss has not improved since.

    Returns (x_adv, fooled): per example the first iterate that the model misclassifies (the example then
    leaves the batch: it costs nothing more), else x unchanged.
    """
    loss_fn = LOSSES[loss]
    out = x.clone()
    fooled_out = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    s = {"idx": torch.arange(len(x), device=x.device), "x": x, "y": y, "xk": x0}
    if target is not None:
        s["t"] = target
    f, g, logits = _value_and_grad(model, x0, y, target, loss_fn)
    s.update(g=g, f_cur=f, x_prev=x0, x_max=x0, g_max=g, f_max=f, f_max_last=f.clone(),
             eta=torch.full((len(x),), 2.0 * eps, device=x.device, dtype=x.dtype),
             increases=torch.zeros(len(x), device=x.device),
             reduced_last=torch.zeros(len(x), dtype=torch.bool, device=x.device))

    def drop_fooled(s, logits):
        fooled = logits.argmax(1) != s["y"]
        if not bool(fooled.any()):
            return s
        out[s["idx"][fooled]] = s["xk"][fooled]
        fooled_out[s["idx"][fooled]] = True
        keep = ~fooled
        return {k: v[keep] for k, v in s.items()}

    s = drop_fooled(s, logits)
    marks, last = set(checkpoints(steps)), 0
    for i in range(steps):
        if len(s["idx"]) == 0:
            break
        xk, xs = s["xk"], s["x"]
        eta = per_example(s["eta"], xk)
        if norm == "linf":
            direction = s["g"].sign()
        else:
            direction = s["g"] / per_example(s["g"].flatten(1).norm(dim=1).clamp_min(1e-12), xk)
        z = project(xs, xk + eta * direction, eps, norm, bounds)
        a = 1.0 if i == 0 else momentum
        x_new = project(xs, xk + a * (z - xk) + (1 - a) * (xk - s["x_prev"]), eps, norm, bounds)
        f, g, logits = _value_and_grad(model, x_new, s["y"], s.get("t"), loss_fn)
        better = f > s["f_max"]
        s.update(x_prev=xk, xk=x_new, g=g, increases=s["increases"] + (f > s["f_cur"]).float(), f_cur=f,
                 x_max=torch.where(per_example(better, xk), x_new, s["x_max"]),
                 g_max=torch.where(per_example(better, xk), g, s["g_max"]),
                 f_max=torch.where(better, f, s["f_max"]))
        s = drop_fooled(s, logits)
        if i + 1 in marks and len(s["idx"]):
            oscillating = s["increases"] < rho * (i + 1 - last)
            stalled = ~s["reduced_last"] & (s["f_max_last"] >= s["f_max"])
            reduce = oscillating | stalled
            r = per_example(reduce, s["xk"])
            s.update(eta=torch.where(reduce, s["eta"] / 2, s["eta"]),
                     xk=torch.where(r, s["x_max"], s["xk"]), g=torch.where(r, s["g_max"], s["g"]),
                     f_cur=torch.where(reduce, s["f_max"], s["f_cur"]), reduced_last=reduce,
                     f_max_last=s["f_max"].clone(), increases=torch.zeros_like(s["increases"]))
            last = i + 1
    return out, fooled_out


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
                adv, fooled = apgd_run(model, xs, ys, eps, self.norm, p.steps, "dlr-targeted", x0, ctx.bounds,
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
