"""What the runner hands to plugins while they work."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from bench import threat
from bench.progress import line as progress_line
from bench.progress import progress


@dataclass
class TrainContext:
    """Given to ``Defense.fit``.

    ``model_of(defense, **overrides)`` returns another defense's trained model on the same dataset and seed
    (from the cache, training it first, visibly, if needed) -- e.g. a teacher, or an original model to unlearn.
    ``log(epoch=..., **scalars)`` appends to the training history stored with the model, and reports it as one
    line of progress (``bench.progress.line``: shown in logs, not on a terminal, where the bars show).
    """

    device: torch.device
    seed: int
    generator: torch.Generator
    artifacts: Path
    model_of: Callable[..., torch.nn.Module]
    epsilons: dict[str, tuple[float, ...]] = field(default_factory=dict)  # the dataset's budgets
    history: list[dict[str, Any]] = field(default_factory=list)

    def log(self, **scalars: Any) -> None:
        self.history.append({k: (float(v) if isinstance(v, (int, float)) else v) for k, v in scalars.items()})
        try:
            progress_line(_summary_line(scalars))
        except Exception:  # reporting progress must never stop a training run
            pass

    def progress(self, iterable: Iterable, desc: str, total: int | None = None):
        return progress(iterable, desc=desc, total=total)

    def batches(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = True):
        """Mini-batches on the device, shuffled by this context's generator (deterministic under the seed)."""
        order = torch.randperm(len(x), generator=self.generator) if shuffle else torch.arange(len(x))
        gather_once = (self.device.type != "cpu" and isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
                       and x.nbytes + y.nbytes <= GATHERED_EPOCH_BYTES)  # not texts, not data too big to copy
        yield from (gathered_batches if gather_once else per_batch_gather)(x, y, order, batch_size, self.device)


# On an accelerator an epoch's data up to this size is shuffled on the device in one gather and its batches are
# slices, instead of host work per step (a gather and a copy per batch) beside a graphed step that needs almost
# none: 12 unlearning lanes on an H200 host were limited by its 16 cores. Both give the same batches.
GATHERED_EPOCH_BYTES = 2 << 30


def per_batch_gather(x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, batch_size: int, device):
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        yield x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)


def gathered_batches(x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, batch_size: int, device):
    order = order.to(device)
    x, y = x.to(device).index_select(0, order), y.to(device).index_select(0, order)
    for i in range(0, len(order), batch_size):
        yield x[i:i + batch_size], y[i:i + batch_size]


def _summary_line(scalars: dict[str, Any]) -> str:
    """``log``'s scalars as one line: "  epoch 3 loss 0.4123 train_acc 0.8812" (the epoch first, then the rest
    in the order given; floats to 4 significant digits)."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            return fmt(v.item())
        text = str(v)
        return text if len(text) <= 40 else text[:37] + "..."
    keys = (["epoch"] if "epoch" in scalars else []) + [k for k in scalars if k != "epoch"]
    return "  " + " ".join(f"{k} {fmt(scalars[k])}" for k in keys)


@dataclass
class AttackContext:
    """Given to ``Attack.perturb``: the data bounds, a seeded generator for random starts, and
    ``run(attack, model, x, y, eps)`` to call another attack with the framework's threat check applied
    (composite evaluators such as ``worst-case`` use it)."""

    bounds: tuple[float, float]
    generator: torch.Generator
    registry: Any
    profile: str
    violations: int = 0

    def attack(self, name: str):
        """Another registered attack, with this run's profile applied to its hyperparameters."""
        from bench.hparams import resolve

        cls = self.registry.load("attack", name)
        return cls(resolve({name: cls}, self.profile, [])[name])

    def run(self, attack, model, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        x_adv = attack.perturb(model, x, y, eps, self)
        x_adv, bad = threat.enforce(x, x_adv, attack.norm, eps, self.bounds)
        self.violations += bad
        return x_adv


@dataclass
class EvalContext:
    """Given to ``Evaluator.evaluate``: where to compute, a seeded generator, ``model_of(defense, **overrides)``
    for another defense's model on the same data and seed (e.g. the original model of an unlearning scenario),
    ``models_of([(defense, overrides), ...])`` for several at once (parallel lanes then train different ones side
    by side), and an ``artifacts`` folder for per-example outputs (e.g. a text attack's CSV)."""

    device: torch.device
    batch_size: int
    generator: torch.Generator
    profile: str
    model_of: Callable[..., torch.nn.Module]
    artifacts: Path | None = None  # a folder for per-example outputs (created on demand), recorded in the record
    models_of: Callable[[list[tuple[str, dict]]], list[torch.nn.Module]] | None = None  # None: one at a time

    def __post_init__(self):
        if self.models_of is None:
            self.models_of = lambda requests: [self.model_of(name, **o) for name, o in requests]

    @torch.no_grad()
    def logits(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The model's logits for ``x`` (on the CPU), computed in batches on the device."""
        out = [model(x[i:i + self.batch_size].to(self.device)).float().cpu()
               for i in range(0, len(x), self.batch_size)]
        return torch.cat(out) if out else torch.empty(0)

    def accuracy(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        return float((self.logits(model, x).argmax(1) == y).float().mean()) if len(y) else float("nan")
