"""The supervised training loop shared by image defenses: one place for the optimiser, the schedule and the
per-epoch log, so that defenses differ only in what they train on (``make_inputs``) and their loss.

On a GPU the step after ``make_inputs`` (forward, loss, backward, Adam's update) is replayed as one CUDA graph
(``train_graphs``): the suite's CNNs train at batch 32-128, where the eager step is bound by kernel launches.
"""
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


def make_optimizer(model: nn.Module, p: OptimParams, steps_total: int, capturable: bool = False):
    """The optimiser and its schedule. ``capturable``: Adam keeps its step count and learning rate on the GPU,
    so that its update can be replayed from a CUDA graph (the schedule writes the rate in place)."""
    if p.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    elif capturable:
        lr = torch.tensor(p.lr, dtype=torch.float32, device=next(model.parameters()).device)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=p.weight_decay, capturable=True)
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
                     | None = None, desc: str = "train", graph_safe_loss: bool = False) -> None:
    """Mini-batch training. ``make_inputs(model, x, y)`` gives the inputs to train on (default: x itself);
    ``loss_fn(model, x, x_train, y)`` the loss (default: CE on the training inputs). ``graph_safe_loss``: the
    caller vouches that ``loss_fn`` runs only GPU ops with no host sync and no host-side randomness, so the step
    may be graphed (the default loss always may)."""
    from bench.tracks.image_robustness import train_graphs

    model.to(ctx.device)
    n = len(data.train_x)
    steps_per_epoch = -(-n // p.batch_size)
    graphs = train_graphs.usable(model, p, ctx.device) and (loss_fn is None or graph_safe_loss)
    opt, sched = make_optimizer(model, p, p.epochs * steps_per_epoch, capturable=graphs)

    def step(x: torch.Tensor, x_train: torch.Tensor, y: torch.Tensor):
        """One update; returns the loss and (default loss) the count of correct training predictions."""
        if loss_fn is None:
            logits = model(x_train)
            loss = F.cross_entropy(logits, y)
            correct = (logits.argmax(1) == y).sum()
        else:
            loss, correct = loss_fn(model, x, x_train, y), None
        loss.backward()
        opt.step()
        return loss.detach(), correct

    stepper = train_graphs.Stepper(step, opt, model) if graphs else None
    for epoch in range(p.epochs):
        model.train()
        loss_sum = torch.zeros((), device=ctx.device)
        correct = torch.zeros((), device=ctx.device, dtype=torch.long)
        bar = ctx.progress(ctx.batches(data.train_x, data.train_y, p.batch_size), total=steps_per_epoch,
                           desc=f"{desc} epoch {epoch + 1}/{p.epochs}")
        for x, y in bar:
            x_train = make_inputs(model, x, y) if make_inputs else x
            if stepper is not None:
                loss, n_correct = stepper(x, x_train, y)
            else:
                opt.zero_grad(set_to_none=True)
                loss, n_correct = step(x, x_train, y)
            sched.step()
            loss_sum += loss * len(y)
            if n_correct is not None:
                correct += n_correct
        entry = {"epoch": epoch + 1, "loss": (loss_sum / n).item(), "lr": float(sched.get_last_lr()[0])}
        if loss_fn is None:
            entry["train_acc"] = (correct.double() / n).item()
        ctx.log(**entry)
    if stepper is not None:
        stepper.close()
    model.eval()
