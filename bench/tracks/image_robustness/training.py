"""The supervised training loop shared by image defenses: one place for the optimiser, the schedule and the
per-epoch log, so that defenses differ only in what they train on (``make_inputs``) and their loss."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.context import TrainContext
from bench.plugins import DataSpec, Defense, Splits


@dataclass(frozen=True)
class OptimParams:
    """Fields every trained image defense shares (subclass it for the defense's own Params)."""

    arch: str = "cnn-small"  # CPU-sized; the full profiles use "cnn"
    width: int = 1
    epochs: int = 5
    batch_size: int = 128
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Literal["cosine", "constant"] = "cosine"


class ClassifierDefense(Defense):
    """A defense that trains one of the suite's image classifiers, chosen by its ``arch`` and ``width`` params
    (``OptimParams``); ``fit`` is the defense's own."""

    def build(self, spec: DataSpec) -> nn.Module:
        from bench.tracks.image_robustness.models import build_model

        return build_model(self.params.arch, spec.input_shape, spec.num_classes, self.params.width)


def make_optimizer(model: nn.Module, p: OptimParams, steps_total: int):
    if p.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    if p.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps_total))
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return opt, sched


InputsFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def train_classifier(model: nn.Module, data: Splits, ctx: TrainContext, p: OptimParams,
                     make_inputs: InputsFn | None = None,
                     loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
                     | None = None, desc: str = "train") -> None:
    """Mini-batch training. ``make_inputs(model, x, y)`` gives the inputs to train on (default: x itself);
    ``loss_fn(model, x, x_train, y)`` the loss (default: CE on the training inputs)."""
    model.to(ctx.device)
    n = len(data.train_x)
    steps_per_epoch = -(-n // p.batch_size)
    opt, sched = make_optimizer(model, p, p.epochs * steps_per_epoch)
    for epoch in range(p.epochs):
        model.train()
        loss_sum = torch.zeros((), device=ctx.device)
        correct = torch.zeros((), device=ctx.device)
        bar = ctx.progress(ctx.batches(data.train_x, data.train_y, p.batch_size), total=steps_per_epoch,
                           desc=f"{desc} epoch {epoch + 1}/{p.epochs}")
        for x, y in bar:
            x_train = make_inputs(model, x, y) if make_inputs else x
            if loss_fn is None:
                logits = model(x_train)
                loss = F.cross_entropy(logits, y)
                correct += (logits.argmax(1) == y).sum()
            else:
                loss = loss_fn(model, x, x_train, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach() * len(y)
        entry = {"epoch": epoch + 1, "loss": (loss_sum / n).item(), "lr": sched.get_last_lr()[0]}
        if loss_fn is None:
            entry["train_acc"] = (correct / n).item()
        ctx.log(**entry)
    model.eval()
