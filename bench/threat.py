"""The framework's threat-model check, applied to every adversarial batch an attack returns.

Attacks are not trusted: the result is projected back into the eps-ball around x and into the data bounds,
and every example that needed it is counted as a violation and flagged in the record.
"""
from __future__ import annotations

import torch

TOLERANCE = 1e-5  # float32 round-off allowed before a step counts as a violation


def norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm == "l2":
        return flat.norm(dim=1)
    raise ValueError(f"unknown norm {norm!r}")


def project(x: torch.Tensor, x_adv: torch.Tensor, norm: str, eps: float,
            bounds: tuple[float, float]) -> torch.Tensor:
    """Closest point (in the norm's sense for the ball, then the box) to x_adv within the threat model."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        n = norms(delta, norm).clamp_min(1e-12)
        delta = delta * (eps / n).clamp(max=1.0).view(-1, *([1] * (x.dim() - 1)))
    return (x + delta).clamp(*bounds)


def enforce(x: torch.Tensor, x_adv: torch.Tensor, norm: str, eps: float,
            bounds: tuple[float, float]) -> tuple[torch.Tensor, int]:
    """Return (x_adv within the threat model, number of examples that were outside it)."""
    if x_adv.shape != x.shape:
        raise ValueError(f"attack returned shape {tuple(x_adv.shape)} for inputs of shape {tuple(x.shape)}")
    x_adv = x_adv.detach().to(x.dtype)
    bad = ~torch.isfinite(x_adv).flatten(1).all(dim=1)
    x_adv = torch.where(torch.isfinite(x_adv), x_adv, x)
    lo, hi = bounds
    outside_box = ((x_adv < lo - TOLERANCE) | (x_adv > hi + TOLERANCE)).flatten(1).any(dim=1)
    outside_ball = norms(x_adv - x, norm) > eps * (1 + TOLERANCE) + TOLERANCE
    bad |= outside_box | outside_ball
    return project(x, x_adv, norm, eps, bounds), int(bad.sum())
