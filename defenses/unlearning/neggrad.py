"""NegGrad+: gradient ascent on the forget set, balanced by descent on the remaining data."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.tracks.unlearning.scenarios import (
    TrainParams,
    UnlearningDefense,
    forget_remain,
    method_profiles,
)


@dataclass(frozen=True)
class Params(TrainParams):
    unlearn_epochs: int = 1
    unlearn_lr: float = 1e-4
    alpha: float = 0.99  # weight of the remaining-data term; 1 - alpha on the (negated) forget term


class NegGrad(UnlearningDefense):
    """NegGrad+ (Kurmanji et al., NeurIPS'23 "Towards unbounded machine unlearning", the improved NegGrad):
    minimise ``alpha * CE(remaining batch) - (1 - alpha) * CE(forget batch)`` from the original model.

    One epoch = one pass over the remaining data, each batch paired with the next forget batch (cycling).
    Defaults: Adam ``unlearn_lr`` 1e-4 (constant), ``alpha`` 0.99, ``unlearn_epochs`` 1 (quick; 2 in full).
    Departures: SCRUB's code tunes alpha and the lr per scenario; we keep one setting for all scenarios.
    """

    Params = Params
    profiles = method_profiles(full={"unlearn_epochs": 2})

    def fit(self, model, data, ctx) -> None:
        self.start_from_original(model, ctx)
        forget, remain = forget_remain(data)
        p = self.params
        opt = torch.optim.Adam(model.parameters(), lr=p.unlearn_lr)
        model.train()
        for epoch in range(p.unlearn_epochs):
            forget_batches = _cycle(forget, p.batch_size, ctx.generator)
            steps = -(-len(remain) // p.batch_size)
            total = 0.0
            for xr, yr in ctx.progress(ctx.batches(data.train_x[remain], data.train_y[remain], p.batch_size),
                                       desc=f"{self.name} epoch {epoch + 1}", total=steps):
                idx = next(forget_batches)
                xf, yf = data.train_x[idx].to(ctx.device), data.train_y[idx].to(ctx.device)
                loss = p.alpha * F.cross_entropy(model(xr), yr) - (1 - p.alpha) * F.cross_entropy(model(xf), yf)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item()
            ctx.log(epoch=epoch + 1, loss=total / steps)
        model.eval()


def _cycle(idx: torch.Tensor, batch_size: int, generator: torch.Generator):
    """Endless shuffled batches of ``idx`` (reshuffled at every pass)."""
    while True:
        order = idx[torch.randperm(len(idx), generator=generator)]
        for i in range(0, len(order), batch_size):
            yield order[i:i + batch_size]
