"""Targeted FAB, FAB-T (Croce & Hein, 2020), L-inf and L2: the suite's own implementation of the paper's
algorithm, with the projection onto a hyperplane within the box solved exactly (``project_on_hyperplane``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.plugins import Attack
from bench.tracks.image_robustness import TRACK
from bench_attacks.image_robustness._common import norms, per_example, random_start, top_targets


def project_on_hyperplane(p: torch.Tensor, w: torch.Tensor, r: torch.Tensor, norm: str,
                          bounds: tuple[float, float]) -> torch.Tensor:
    """Per row: the smallest d (in L-inf or L2) with w.d = r and lo <= p + d <= hi; where no such d exists,
    the d in the box that gets closest to the hyperplane (every coordinate moved to the bound in the
    direction that raises sign(r) w.d). p, w: (N, D); r: (N,).

    After flipping w's sign so that r >= 0, the optimal d_j moves coordinate j towards its bound in the
    direction of sign(w_j) by min(lam, u_j) (L-inf: all coordinates by the same amount lam, capped at their
    room u_j) or min(mu |w_j|, u_j) (L2: the Lagrange condition d = mu w, clipped to the box). Both reach
    h(lam) = sum_{tau_j <= lam} |w_j| u_j + lam * sum_{tau_j > lam} s_j, piecewise linear and non-decreasing,
    with breakpoints tau_j = u_j (L-inf) or u_j / |w_j| (L2) and slopes s_j = |w_j| (L-inf) or w_j^2 (L2):
    sorting the breakpoints and searching the segment where h reaches r gives lam exactly.
    """
    lo, hi = bounds
    sign_r = torch.where(r >= 0, 1.0, -1.0).to(w.dtype)
    w = w * sign_r[:, None]
    r = r.abs()
    aw = w.abs()
    room = torch.where(w > 0, hi - p, p - lo).clamp_min(0.0)
    active = aw > 0
    big = torch.finfo(w.dtype).max / 4  # "never saturates": coordinates the hyperplane does not depend on
    if norm == "linf":
        tau, slope = room, aw
    else:
        tau, slope = room / aw.clamp_min(1e-30), aw * aw
    tau = torch.where(active, tau, torch.full_like(tau, big))
    slope = torch.where(active, slope, torch.zeros_like(slope))
    gain = aw * room  # what a saturated coordinate contributes to w.d
    tau_s, order = tau.sort(dim=1)
    slope_s, gain_s = slope.gather(1, order), gain.gather(1, order)
    saturated = gain_s.cumsum(1) - gain_s  # sum over earlier breakpoints
    rest = slope_s.flip(1).cumsum(1).flip(1)  # slopes of this and later breakpoints
    reach = saturated + torch.where(rest > 0, tau_s * rest, torch.zeros_like(rest))  # h at each breakpoint
    k = torch.searchsorted(reach.contiguous(), r[:, None].contiguous()).clamp_max(p.shape[1] - 1)
    feasible = gain.sum(1) >= r
    lam = (r[:, None] - saturated.gather(1, k)) / rest.gather(1, k).clamp_min(1e-30)
    lam = torch.where(feasible[:, None], lam.clamp_min(0.0), torch.full_like(lam, big))
    move = torch.minimum(lam if norm == "linf" else lam * aw, room)
    return torch.where(active, torch.sign(w) * move, torch.zeros_like(w))


def _diff_and_grad(model, xk, y, t):
    """f = z_t - z_y (positive once the target class wins over the label), its gradient, and the logits."""
    with torch.enable_grad():
        xk = xk.detach().requires_grad_(True)
        logits = model(xk)
        f = logits.gather(1, t[:, None]).squeeze(1) - logits.gather(1, y[:, None]).squeeze(1)
        (g,) = torch.autograd.grad(f.sum(), xk)
    return f.detach(), g.detach(), logits.detach()


def fab_run(model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor, eps: float, norm: str, steps: int,
            x0: torch.Tensor, bounds: tuple[float, float], alpha_max: float = 0.1, eta: float = 1.05,
            beta: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """One targeted FAB run from ``x0`` (Croce & Hein, "Minimally distorted adversarial examples with a fast
    adaptive boundary attack", ICML 2020, Algorithm 1 with the class fixed to the target t).

    At x_i, the decision boundary between y and t is linearised: pi = {z : f(x_i) + grad f(x_i).(z - x_i) = 0}
    with f = z_t - z_y. Both x_i and the original x are projected onto pi within the box (``proj``, in the
    attack's norm): d_i = proj(x_i) - x_i, d_o = proj(x) - x. The next iterate is the box-clipped
    (1 - alpha)(x_i + eta d_i) + alpha (x + eta d_o), with alpha = min(||d_i|| / (||d_i|| + ||d_o||), alpha_max)
    (the bias towards the original point) and overshoot eta. When that iterate is misclassified it is a
    candidate, and the iterate moves back towards x: x_{i+1} = (1 - beta) x + beta x_{i+1}.

    FAB minimises the norm; with a fixed budget an example is done at its first misclassified iterate within
    the eps-ball (a later, smaller one would not change its outcome), so it leaves the batch then. Returns
    (x_adv, fooled): per example that iterate, else x unchanged.
    """
    out = x.clone()
    fooled_out = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    idx = torch.arange(len(x), device=x.device)
    xs, ys, ts, xk = x, y, target, x0
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    x_done = xs.clone()  # per example, its first misclassified iterate within the ball, this block
    for step in range(steps):
        if step % COMPACT_EVERY == 0 and step:
            xs, ys, ts, xk, idx, done = _compact(out, fooled_out, x_done, xs, ys, ts, xk, idx, done)
            if len(idx) == 0:
                break
            x_done = xs.clone()
        f, g, _ = _diff_and_grad(model, xk, ys, ts)
        w = g.flatten(1)
        xk_f, xs_f = xk.flatten(1), xs.flatten(1)
        # pi: w.z = w.x_i - f(x_i); for a point p, w.d = r with r = w.(x_i - p) - f(x_i)
        d_i = project_on_hyperplane(xk_f, w, -f, norm, bounds)
        d_o = project_on_hyperplane(xs_f, w, (w * (xk_f - xs_f)).sum(1) - f, norm, bounds)
        n_i = norms(d_i, norm).clamp_min(1e-8)
        n_o = norms(d_o, norm).clamp_min(1e-8)
        alpha = (n_i / (n_i + n_o)).clamp(0.0, alpha_max)[:, None]
        x_new = ((1 - alpha) * (xk_f + eta * d_i) + alpha * (xs_f + eta * d_o)).clamp(*bounds).view_as(xk)
        with torch.no_grad():
            adversarial = model(x_new).argmax(1) != ys
        newly = adversarial & (norms(x_new - xs, norm) <= eps) & ~done
        x_done = torch.where(per_example(newly, x_new), x_new, x_done)
        done = done | newly
        back = per_example(adversarial & ~newly, x_new)
        xk = torch.where(back, (1 - beta) * xs + beta * x_new, x_new)
    if len(idx):
        _compact(out, fooled_out, x_done, xs, ys, ts, xk, idx, done)
    return out, fooled_out


# Steps between two compactions of the batch: dropping the finished examples needs the host to read which they
# are (a sync); in between they stay in the batch, their result already kept.
COMPACT_EVERY = 10


def _compact(out, fooled_out, x_done, xs, ys, ts, xk, idx, done):
    """Write the finished examples' results into ``out`` and drop them from the batch."""
    hit = done.nonzero().squeeze(1)
    if len(hit):
        out[idx[hit]] = x_done[hit]
        fooled_out[idx[hit]] = True
    keep = ~done
    return xs[keep], ys[keep], ts[keep], xk[keep], idx[keep], done[keep]


@dataclass(frozen=True)
class FABTParams:
    steps: int = 20  # iterations per target class and restart
    targets: int = 3  # the k most likely other classes, attacked in turn
    restarts: int = 1  # 1: from x itself; later restarts from random points at half the eps radius
    alpha_max: float = 0.1  # the largest bias towards the original point
    eta: float = 1.05  # overshoot of the projection step
    beta: float = 0.9  # backward step after a success


class _FABT(Attack):
    track = TRACK
    Params = FABTParams
    profiles = {"smoke": {"steps": 3, "targets": 2}, "quick": {}, "full": {"steps": 100, "targets": 9}}

    def perturb(self, model, x, y, eps, ctx):
        p = self.params
        order, correct = top_targets(model, x, y, p.targets)
        out = x.detach().clone()
        left = correct.nonzero().squeeze(1)  # clean errors are already adversarial: returned unchanged
        for j in range(1, p.targets + 1):
            for restart in range(p.restarts):
                if left.numel() == 0:
                    return out
                xs, ys = x[left].detach(), y[left]
                x0 = xs if restart == 0 else random_start(xs, 0.5 * eps, self.norm, ctx.generator, ctx.bounds)
                adv, fooled = fab_run(model, xs, ys, order[left, j], eps, self.norm, p.steps, x0, ctx.bounds,
                                      alpha_max=p.alpha_max, eta=p.eta, beta=p.beta)
                out[left[fooled]] = adv[fooled]
                left = left[~fooled]
        return out


class FABT(_FABT):
    """FAB-T (Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary attack",
    ICML 2020; the targeted version is AutoAttack's, ICML 2020), L-inf.

    A minimum-norm attack: for each of the k classes with the highest clean logits other than the label, in
    turn, on the examples no earlier target has broken, the boundary between label and target is linearised
    at the iterate and both the iterate and the original point are projected onto it within the box (exactly:
    see ``project_on_hyperplane``); the step combines the two projections with a bias alpha <= alpha_max
    towards the original point and an overshoot eta, and after each success the iterate steps back towards
    the original point (beta). An example counts as broken when an iterate within the eps-ball is
    misclassified (as any class). Deterministic with one restart (the first run starts at x); needs no random
    draw then. Implementation: the suite's own, from the paper's formulas.

    Budgets: full = AutoAttack's standard version: 100 iterations for each of 9 target classes, 1 restart,
    alpha_max 0.1, eta 1.05, beta 0.9; quick: 20 iterations for each of the top 3 target classes, 1 restart;
    smoke: 3 x 2.

    Departures from the paper: the quick and smoke budgets (chosen for the CPU quick grid, see ``apgd-t``;
    FAB-T's quick share ~10 s per robust model for both L-inf eps); an example stops at its first misclassified
    iterate within the eps-ball (FAB would go on shrinking the norm; the outcome at this eps is the same), so
    the cost falls with every success; restarts after the first start at a random point on the sphere of
    radius eps/2 (AutoAttack: min(eps, best norm so far)/2), drawn from the run's generator.
    """

    norm = "linf"


class FABTL2(_FABT):
    """FAB-T (Croce & Hein, ICML 2020), L2: as ``fab-t`` with the projections onto the linearised boundary in
    the L2 norm (d = clip(mu w) to the box). Budgets as ``fab-t`` (full: AutoAttack's standard L2 version,
    100 iterations x 9 target classes). Departures from the paper: as ``fab-t``.
    """

    norm = "l2"
