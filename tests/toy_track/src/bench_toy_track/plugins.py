"""The toy track's plugins: a dataset, a defense and an evaluator (this module imports torch)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bench.plugins import Dataset, DataSpec, Defense, Evaluator, Splits
from bench_toy_track import TRACK


@dataclass(frozen=True)
class BlobParams:
    n: int = 400
    seed: int = 0
    spread: float = 0.6


class ToyBlobs(Dataset):
    """Two Gaussian blobs centred at (-1, -1) and (1, 1), generated from a seed: no files, no network."""

    tracks = (TRACK,)
    input_shape = (2,)
    num_classes = 2
    bounds = (-5.0, 5.0)
    epsilons = {}
    Params = BlobParams

    def load(self) -> Splits:
        g = torch.Generator().manual_seed(self.params.seed)
        y = torch.randint(0, 2, (self.params.n,), generator=g)
        x = (y[:, None].float() * 2 - 1) + self.params.spread * torch.randn(self.params.n, 2, generator=g)
        x = x.clamp(*self.bounds)
        cut = self.params.n // 2
        return Splits(self.spec(), x[:cut], y[:cut], x[cut:], y[cut:])


@dataclass(frozen=True)
class LinearParams:
    steps: int = 100
    lr: float = 0.5
    batch_size: int = 32


class ToyLinear(Defense):
    """A linear classifier trained by SGD on cross-entropy; batches drawn from ``ctx.generator``."""

    track = TRACK
    Params = LinearParams
    profiles = {"smoke": {"steps": 30}}

    def build(self, spec: DataSpec) -> nn.Module:
        return nn.Linear(spec.input_shape[0], spec.num_classes)

    def fit(self, model, data, ctx):
        model.to(ctx.device).train()
        opt = torch.optim.SGD(model.parameters(), lr=self.params.lr)
        step = 0
        while step < self.params.steps:
            for x, y in ctx.batches(data.train_x, data.train_y, self.params.batch_size):
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                if step >= self.params.steps:
                    break
        if step:
            ctx.log(epoch=step, loss=loss.item())


class ToyAccuracy(Evaluator):
    """Test accuracy, and the share of test points classified correctly with probability at least 0.9."""

    track = TRACK
    metric = "test_acc"

    def evaluate(self, model, data, ctx):
        probs = ctx.logits(model, data.test_x).softmax(1)
        true = probs.gather(1, data.test_y[:, None]).squeeze(1)
        n = len(data.test_y)
        return [{"name": "test_acc", "value": ctx.accuracy(model, data.test_x, data.test_y), "n": n,
                 "definition": "argmax of the logits equals the label, on the test split"},
                {"name": "confident_acc", "value": float((true >= 0.9).float().mean()), "n": n,
                 "definition": "softmax probability of the true class >= 0.9, on the test split"}]
