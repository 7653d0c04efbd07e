"""The APGD algorithm (Croce & Hein, ICML 2020, Algorithm 1), the suite's own implementation from the paper's
formulas, shared by ``apgd-*`` (untargeted) and ``apgd-t*`` (targeted): losses, the checkpoint schedule, one run.

Two forms of one run, with the same per-example outcome: ``apgd_run`` drops each example from the batch at its
first misclassified iterate (cheapest where kernels are cheap to launch: the CPU), ``apgd_run_fixed`` keeps the
batch's shape and masks instead, so that on a GPU the whole run is captured as one CUDA graph and replayed
(``bench.tracks.image_robustness.cuda_graphs``); ``apgd`` picks the faster, measured once per model and shape.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bench.tracks.image_robustness import cuda_graphs
from bench_attacks.image_robustness._common import per_example, project


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


def apgd_run_fixed(model, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, steps: int, loss: str,
                   x0: torch.Tensor, bounds: tuple[float, float], target: torch.Tensor | None = None,
                   rho: float = 0.75, momentum: float = 0.75) -> tuple[torch.Tensor, torch.Tensor]:
    """``apgd_run`` at a fixed batch shape, with no host synchronisation: a fooled example keeps iterating but
    its first misclassified iterate is what is returned, so the outcome per example is ``apgd_run``'s."""
    loss_fn = LOSSES[loss]
    f, g, logits = _value_and_grad(model, x0, y, target, loss_fn)
    fooled = logits.argmax(1) != y
    out = torch.where(per_example(fooled, x), x0, x)
    xk, x_prev, x_max, g_max, f_max, f_cur = x0, x0, x0, g, f, f
    f_max_last = f.clone()
    eta = torch.full((len(x),), 2.0 * eps, device=x.device, dtype=x.dtype)
    increases = torch.zeros(len(x), device=x.device)
    reduced_last = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    marks, last = set(checkpoints(steps)), 0
    for i in range(steps):
        direction = g.sign() if norm == "linf" else g / per_example(g.flatten(1).norm(dim=1).clamp_min(1e-12), xk)
        z = project(x, xk + per_example(eta, xk) * direction, eps, norm, bounds)
        a = 1.0 if i == 0 else momentum
        x_new = project(x, xk + a * (z - xk) + (1 - a) * (xk - x_prev), eps, norm, bounds)
        f, g, logits = _value_and_grad(model, x_new, y, target, loss_fn)
        better = f > f_max
        increases = increases + (f > f_cur).float()
        x_prev, xk, f_cur = xk, x_new, f
        x_max = torch.where(per_example(better, xk), x_new, x_max)
        g_max = torch.where(per_example(better, xk), g, g_max)
        f_max = torch.where(better, f, f_max)
        newly = (logits.argmax(1) != y) & ~fooled
        out = torch.where(per_example(newly, x), x_new, out)
        fooled = fooled | newly
        if i + 1 in marks:
            reduce = (increases < rho * (i + 1 - last)) | (~reduced_last & (f_max_last >= f_max))
            r = per_example(reduce, xk)
            eta = torch.where(reduce, eta / 2, eta)
            xk, g = torch.where(r, x_max, xk), torch.where(r, g_max, g)
            f_cur = torch.where(reduce, f_max, f_cur)
            reduced_last, f_max_last, increases = reduce, f_max.clone(), torch.zeros_like(increases)
            last = i + 1
    return out, fooled


def apgd(model, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, steps: int, loss: str,
         x0: torch.Tensor, bounds: tuple[float, float], target: torch.Tensor | None = None,
         rho: float = 0.75) -> tuple[torch.Tensor, torch.Tensor]:
    """One APGD run: on a GPU, a replay of a CUDA graph of ``apgd_run_fixed`` or ``apgd_run``, whichever was
    measured faster for this model and batch shape (``cuda_graphs.faster``); elsewhere ``apgd_run``.
    Returns (x_adv, fooled)."""
    def eager():
        return apgd_run(model, x, y, eps, norm, steps, loss, x0, bounds, target=target, rho=rho)

    if not (cuda_graphs.usable(model, x) and len(x) > 1):
        return eager()
    # The survivors of a batch vary in number: padded to a power of two (copies of the first example, whose
    # results are dropped), so a few captured shapes serve every batch.
    n = len(x)
    size = 1 << (n - 1).bit_length()
    key = ("apgd", norm, loss, eps, steps, rho, tuple(bounds))

    def body(t):
        t["adv"], t["fooled"] = apgd_run_fixed(model, t["x"], t["y"], eps, norm, steps, loss, t["x0"], bounds,
                                               target=t.get("t"), rho=rho)  # graph outputs, read after each replay

    def graphed():
        inputs = {"x": x, "y": y, "x0": x0} if target is None else {"x": x, "y": y, "x0": x0, "t": target}
        inputs = {k: torch.cat([v, v[:1].expand(size - n, *v.shape[1:])]) for k, v in inputs.items()}
        out = cuda_graphs.run(model, key, inputs, body)
        return None if out is None else (out["adv"][:n].clone(), out["fooled"][:n].clone())

    return cuda_graphs.faster(model, (key, size), graphed, eager)
