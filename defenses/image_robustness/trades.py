"""TRADES (Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy", ICML 2019)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.plugins import Splits
from bench.tracks.image_robustness import TRACK
from bench.tracks.image_robustness.training import ClassifierDefense, OptimParams, train_classifier


@dataclass(frozen=True)
class TRADESParams(OptimParams):
    beta: float = 6.0  # weight of the robustness (KL) term; 6 is the paper's CIFAR-10 / MNIST choice
    eps: float | None = None  # None: the dataset's first Linf budget (0.1 on Fashion-MNIST)
    steps: int = 5
    rel_step: float = 2.5  # step size = rel_step * eps / steps, as pgd-at
    start_std: float = 0.001  # the paper's start: x + 0.001 * N(0, 1)


def kl_pgd(model, x: torch.Tensor, eps: float, step: float, steps: int, bounds, generator, start_std: float):
    """Linf PGD ascent on sum KL(softmax(f(x)) || softmax(f(x'))) from x + start_std * N(0, 1), projected onto
    the eps-ball and the bounds. ``model`` in the mode the caller wants (eval for the inner maximisation)."""
    lo, hi = bounds
    lower, upper = (x - eps).clamp(min=lo), (x + eps).clamp(max=hi)
    with torch.no_grad():
        p_clean = F.softmax(model(x), dim=1)
    noise = torch.randn(x.shape, generator=generator).to(x)
    x_adv = torch.clamp(x + start_std * noise, lower, upper)
    with torch.enable_grad():
        for _ in range(steps):
            x_adv.requires_grad_(True)
            kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), p_clean, reduction="sum")
            (grad,) = torch.autograd.grad(kl, x_adv)
            x_adv = torch.clamp(x_adv.detach() + step * grad.sign(), lower, upper)
    return x_adv.detach()


class TRADES(ClassifierDefense):
    """Loss CE(f(x), y) + beta * KL(f(x) || f(x')), where x' maximises that KL inside the Linf eps-ball.

    Threat model: Linf, eps = the dataset's first budget unless set. Defaults: the shared small CNN (cnn-small;
    cnn in the full profile), Adam 1e-3 cosine, batch 128, beta 6, inner maximisation by PGD on the summed KL
    from x + 0.001*N(0,1), model in eval mode while attacking; KL in the loss averaged over the batch (as the
    paper's code). Quick: 5 epochs, 5 steps of 2.5*eps/5 (pgd-at's quick budget, so their costs compare);
    full: 20 epochs, 10 steps, batch 128 (pgd-at's full budget: every row of the MTARD table trains the same).
    Departures from the paper: Adam and a cosine schedule instead of SGD 0.01 with step decay; fewer epochs
    and attack steps (the paper: 10 steps of 0.007 at eps 0.031 on CIFAR-10, 40 steps of 0.01 at 0.3 on MNIST).
    """

    track = TRACK
    Params = TRADESParams
    profiles = {"smoke": {"epochs": 5, "steps": 2, "lr": 3e-3, "batch_size": 64},
                "full": {"epochs": 20, "steps": 10, "arch": "cnn"}}  # pgd-at's budget: the MTARD table compares them


    def fit(self, model, data: Splits, ctx) -> None:
        p = self.params
        eps = p.eps if p.eps is not None else ctx.epsilons["linf"][0]
        ctx.log(train_eps=eps)

        def adversarial(model, x, y):
            model.eval()
            x_adv = kl_pgd(model, x, eps, p.rel_step * eps / p.steps, p.steps, data.spec.bounds, ctx.generator,
                           p.start_std)
            model.train()
            return x_adv

        def loss(model, x, x_adv, y):
            logits = model(x)
            robust = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
            return F.cross_entropy(logits, y) + p.beta * robust

        train_classifier(model, data, ctx, p, make_inputs=adversarial, loss_fn=loss, desc=self.name,
                         graph_safe_loss=True)
