"""Random search over corners of the Linf ball: a weak, gradient-free baseline attack."""
from dataclasses import dataclass

import torch

from bench.plugins import Attack
from bench.tracks.image_robustness import TRACK


@dataclass(frozen=True)
class Params:
    tries: int = 10


class RandomCorner(Attack):
    """Tries ``tries`` random sign vectors x + eps*s and keeps, per example, the first that fools the model.
    Threat model: Linf. Uses only ``ctx.generator``, so it is deterministic under the run's seed."""

    track = TRACK
    norm = "linf"
    Params = Params
    profiles = {"smoke": {"tries": 2}}

    @torch.no_grad()
    def perturb(self, model, x, y, eps, ctx):
        best = x.clone()
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.params.tries):
            signs = torch.randint(0, 2, x.shape, generator=ctx.generator).to(x.device, x.dtype) * 2 - 1
            candidate = (x + eps * signs).clamp(*ctx.bounds)
            new = (model(candidate).argmax(1) != y) & ~fooled
            best[new] = candidate[new]
            fooled |= new
        return best
