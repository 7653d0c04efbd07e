"""Evaluation of one model: clean predictions once, then each attack at each eps on the clean-correct
examples only (a misclassified example is not robust and needs no attack), with the framework's
threat-model check on every adversarial batch."""
from __future__ import annotations

import torch

from bench.context import AttackContext
from bench.errors import InvariantViolation
from bench.plugins import Certifier
from bench.progress import progress


def finite(logits: torch.Tensor, what: str) -> torch.Tensor:
    """The logits, or ``InvariantViolation`` when some are NaN or infinite: an argmax over them would score a
    broken model as a classifier (NaN logits predict class 0)."""
    bad = int((~torch.isfinite(logits)).any(dim=-1).sum()) if logits.ndim > 1 else int((~torch.isfinite(logits)).sum())
    if bad:
        raise InvariantViolation(f"the model returned non-finite logits (NaN or inf) for {bad} {what}")
    return logits


@torch.no_grad()
def predict(model, x: torch.Tensor, device: torch.device, batch_size: int) -> torch.Tensor:
    out = [finite(model(x[i:i + batch_size].to(device)), "test examples").argmax(1).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def robust_mask(model, attack, x: torch.Tensor, y: torch.Tensor, clean_correct: torch.Tensor, eps: float,
                ctx: AttackContext, device: torch.device, batch_size: int) -> torch.Tensor:
    """Per example: classified correctly both clean and under ``attack`` at ``eps`` -- or, for a certifier,
    proved robust (bool, on the CPU). The framework, not the plugin, turns an attack's inputs into this mask,
    after the threat-model check (``ctx.run``); violations accumulate in ``ctx.violations``."""
    robust = clean_correct.clone()
    if eps == 0:
        return robust
    idx = clean_correct.nonzero().flatten()
    for i in progress(range(0, len(idx), batch_size), desc=f"{attack.name} eps={eps:g}"):
        b = idx[i:i + batch_size]
        xb, yb = x[b].to(device), y[b].to(device)
        if isinstance(attack, Certifier):
            robust[b] = attack.certify(model, xb, yb, eps, ctx).bool().cpu()
        else:
            x_adv = ctx.run(attack, model, xb, yb, eps)
            with torch.no_grad():
                robust[b] = (finite(model(x_adv), "adversarial examples").argmax(1) == yb).cpu()
    return robust


def masking_probe(model, x: torch.Tensor, y: torch.Tensor, clean_correct: torch.Tensor, device: torch.device,
                  limit: int = 256) -> dict:
    """Two signs of gradient masking on (at most ``limit``) correctly classified test examples: the share whose
    cross-entropy input gradient is exactly zero, and whether two forward passes of the same inputs differ
    (randomness at inference: then an attack must average over it, EoT)."""
    idx = clean_correct.nonzero().flatten()[:limit]
    if len(idx) == 0:
        return {"zero_gradient_share": 0.0, "stochastic": False, "probed": 0}
    xb, yb = x[idx].to(device), y[idx].to(device)
    xb = xb.clone().requires_grad_(True)
    logits = model(xb)
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"), xb)
    zero = (grad.flatten(1).abs().amax(dim=1) == 0).float().mean()
    with torch.no_grad():
        again = model(xb.detach())
    stochastic = not torch.equal(logits.detach(), again)
    return {"zero_gradient_share": float(zero), "stochastic": bool(stochastic), "probed": int(len(idx))}
