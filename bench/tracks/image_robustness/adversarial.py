"""The shared PGD core: used by the ``pgd-*`` and ``fgsm``-style attack plugins and by adversarial training.

Speed is a measured target. On the CPU the loop body is exactly the minimal loop (within 10% of a minimal
eager PGD loop; ``benchmarks/gpu_speed.py --device cpu``): one forward, one ``autograd.grad`` w.r.t. the input only (no
parameter gradients), one step, one projection; no ``.item()``, no host syncs, no mode switches (callers pass
models in the mode they want: eval for attacks). On a GPU, for a model in eval mode, the same loop is captured
once per batch shape as one CUDA graph and replayed (``cuda_graphs``): small models are launch-bound there.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from bench.tracks.image_robustness import cuda_graphs


def _dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed difference-of-logits-ratio loss (Croce & Hein, 2020); needs at least 3 classes."""
    top, order = logits.sort(dim=1, descending=True)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    # the largest logit other than y's: the second largest when y is on top, else the largest
    z_other = torch.where(order[:, 0] == y, top[:, 1], top[:, 0])
    return (-(z_y - z_other) / (top[:, 0] - top[:, 2] + 1e-12)).sum()


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Summed, not averaged: the per-example gradient does not shrink with the batch size.
    return F.cross_entropy(logits, y, reduction="sum")


def _cw(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed Carlini-Wagner margin max_{i!=y} z_i - z_y (Carlini & Wagner, 2017, with kappa = infinity): its
    gradient does not vanish when the softmax saturates, unlike the cross-entropy's."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return (z_other - z_y).sum()


LOSSES = {"ce": _ce, "cw": _cw, "dlr": _dlr}


def _per_example(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N, 1, ..., 1) to broadcast over an example's dimensions."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def random_delta(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    """A random perturbation inside the eps-ball, drawn on the CPU from ``generator`` (so a seed gives the
    same start on every device) and then moved to x's device."""
    shape = x.shape
    if norm == "linf":
        delta = torch.rand(shape, generator=generator).mul_(2).sub_(1).mul_(eps)
    elif norm == "l2":
        direction = torch.randn(shape, generator=generator)
        direction /= _per_example(direction.flatten(1).norm(dim=1).clamp_min(1e-12), direction)
        radius = torch.rand(shape[0], generator=generator).mul_(eps)
        delta = direction * _per_example(radius, direction)
    else:
        raise ValueError(f"unknown norm {norm!r}")
    return delta.to(device=x.device, dtype=x.dtype)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step_size: float, steps: int,
        norm: str = "linf", random_start: bool = True, bounds: tuple[float, float] = (0.0, 1.0),
        generator: torch.Generator | None = None, loss: str = "ce") -> torch.Tensor:
    """Projected gradient ascent on ``loss`` ("ce", "cw" or "dlr", summed over the batch) inside the ``norm``
    ball of radius ``eps`` and the box ``bounds``.

    Linf: signed steps, projection by clamping. L2: steps along the per-example L2-normalised gradient,
    projection by rescaling onto the ball then clamping to the box (clamping only shrinks the perturbation,
    so the result stays in the ball). Returns a detached tensor shaped like ``x``.
    """
    if norm not in ("linf", "l2"):
        raise ValueError(f"unknown norm {norm!r}")
    loss_fn = LOSSES[loss]
    lo, hi = bounds
    x = x.detach()
    start = random_delta(x, eps, norm, generator) if random_start else None
    if norm == "linf":
        # The intersection of the ball and the box, computed once: each step is then a single clamp.
        lower, upper = (x - eps).clamp_(min=lo), (x + eps).clamp_(max=hi)
        x_adv = x.clone() if start is None else torch.clamp(x + start, lower, upper)
        tensors = {"x_adv": x_adv, "y": y, "lower": lower, "upper": upper}

        def step(t, x_adv):
            x_adv = x_adv.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(loss_fn(model(x_adv), t["y"]), x_adv)
            return torch.clamp(x_adv.detach().add_(grad.sign_(), alpha=step_size), t["lower"], t["upper"])
    else:
        x_adv = x.clone() if start is None else (x + start).clamp_(lo, hi)
        tensors = {"x_adv": x_adv, "y": y, "x": x}

        def step(t, x_adv):
            x_adv = x_adv.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(loss_fn(model(x_adv), t["y"]), x_adv)
            grad_norm = grad.flatten(1).norm(dim=1).clamp_min_(1e-12)
            delta = x_adv.detach().sub_(t["x"]).add_(grad.div_(_per_example(grad_norm, grad)), alpha=step_size)
            scale = (eps / delta.flatten(1).norm(dim=1).clamp_min_(1e-12)).clamp_max_(1.0)
            return delta.mul_(_per_example(scale, delta)).add_(t["x"]).clamp_(lo, hi)

    def loop(t):
        x_adv = t["x_adv"]
        for _ in range(steps):
            x_adv = step(t, x_adv)
        return x_adv

    # enable_grad: callers may evaluate under no_grad; this is one context switch, not one per step.
    with torch.enable_grad():
        if steps >= 2 and cuda_graphs.usable(model, x):
            out = cuda_graphs.run(model, ("pgd", norm, loss, eps, step_size, steps, lo, hi), tensors,
                                  lambda t: t["x_adv"].copy_(loop(t)))
            if out is not None:
                return out["x_adv"].clone()
        return loop(tensors).detach()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
         bounds: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """One signed gradient step of size eps from x (Goodfellow et al., 2015), clipped to the bounds."""
    return pgd(model, x, y, eps, step_size=eps, steps=1, norm="linf", random_start=False, bounds=bounds)


@contextlib.contextmanager
def no_param_grads(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily freeze the parameters, for libraries (foolbox, through eagerpy) that call
    ``loss.backward()``: otherwise they would compute, and accumulate into ``.grad``, gradients for every
    weight. The previous ``requires_grad`` flags are restored afterwards."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p in params:
            p.requires_grad_(True)


@contextlib.contextmanager
def keep_modes(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every submodule's train/eval flag afterwards, for libraries that switch modes."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
