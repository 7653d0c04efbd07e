"""Helpers shared by the suite's own AutoAttack components (``apgdt``, ``fab``, ``square``): per-example norms
and projections in any input shape and box, the top-k target classes, and random draws from the run's generator.

Every random draw is made on the CPU from ``ctx.generator`` and then moved to the inputs' device, so a seed gives
the same draws on every device and the global torch RNG is never touched.
"""
from __future__ import annotations

import torch


def per_example(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N, 1, ..., 1), to broadcast over an example's dimensions."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example L-inf or L2 norm (the framework's ``bench.threat.norms``, for any shape)."""
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def project(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str, bounds: tuple[float, float]) -> torch.Tensor:
    """Into the eps-ball around x, then into the box: L-inf by clamping; L2 by rescaling the perturbation onto
    the ball (a point inside stays) -- clamping to the box afterwards only shrinks it, so both hold."""
    lo, hi = bounds
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        scale = (eps / norms(delta, "l2").clamp_min(1e-12)).clamp(max=1.0)
        delta = delta * per_example(scale, delta)
    return (x + delta).clamp(lo, hi)


def inside(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str, bounds: tuple[float, float]) -> torch.Tensor:
    """Per example: within the eps-ball and the box, exactly (no tolerance), as a bool tensor."""
    lo, hi = bounds
    in_box = ((x_adv >= lo) & (x_adv <= hi)).flatten(1).all(dim=1)
    return in_box & (norms(x_adv - x, norm) <= eps)


def random_start(x: torch.Tensor, radius: float, norm: str, generator: torch.Generator,
                 bounds: tuple[float, float]) -> torch.Tensor:
    """AutoAttack's random start: x + radius * t / ||t|| (t uniform in [-1, 1] for L-inf, Gaussian for L2), so
    the start lies on the sphere of that radius (in the L-inf case one coordinate at +-radius), then clamped
    to the box. Drawn on the CPU from ``generator``."""
    if norm == "linf":
        t = torch.rand(x.shape, generator=generator).mul_(2).sub_(1)
    else:
        t = torch.randn(x.shape, generator=generator)
    t = t.to(device=x.device, dtype=x.dtype)
    t = t / per_example(norms(t, norm).clamp_min(1e-12), t)
    return (x + radius * t).clamp(*bounds)


def seeded_int(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


@torch.no_grad()
def top_targets(model, x: torch.Tensor, y: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean logits' class order, descending, shape (N, K); correctly classified mask). For a correctly
    classified example ``order[:, 0]`` is its label and ``order[:, 1:k+1]`` its k most likely other classes:
    AutoAttack's target classes for APGD-T and FAB-T."""
    logits = model(x)
    if k > logits.shape[1] - 1:
        raise ValueError(f"{k} target classes asked of a {logits.shape[1]}-class model "
                         f"(at most {logits.shape[1] - 1})")
    order = logits.argsort(dim=1, descending=True)
    return order, logits.argmax(1) == y


def as_images(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) as is; any other shape as (N, 1, 1, D), so square windows become segments."""
    return x if x.dim() == 4 else x.reshape(len(x), 1, 1, -1)
