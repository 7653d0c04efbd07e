"""CUDA-graph replay of a training step: the fast path of ``train_classifier`` on a GPU.

The suite's CNNs train at batch 32-128, where one eager step (forward, backward, Adam's update: a few hundred
kernels of microseconds) is bound by Python and kernel launches. The step is captured once per batch shape and
replayed: one copy in, one replay. It is the eager step's kernels, so the update is the eager one up to the
float differences of cuBLAS's choices under capture and of Adam's on-GPU bias correction (``capturable``);
measured on an H200 (tests/tracks/image_robustness/test_fast_path.py, ``gpu`` marker): weights within a
stated tolerance of the eager step's after the same batches, and the same test accuracy within half a point.

Used when it is safe: a CUDA device, Adam (its capturable form keeps the step count and the learning rate on
the GPU, so the schedule still applies), the default loss or one its caller vouches for, and
``BENCH_CUDA_GRAPHS`` not "0". A batch of another shape (the epoch's last) runs eagerly. A step that cannot be
captured (a host sync, a CPU op) falls back to the eager step for the rest of the run, with one warning.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable

import torch
from torch import nn

WARMUP = 3  # eager steps on a side stream before capture, as torch.cuda.graph requires (they train too)

Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple]


def usable(model: nn.Module, p, device: torch.device) -> bool:
    """Whether ``train_classifier`` may graph the step of ``model`` trained with the optimiser params ``p``."""
    return (device.type == "cuda" and os.environ.get("BENCH_CUDA_GRAPHS", "1") != "0"
            and getattr(p, "optimizer", "adam") == "adam")


class Stepper:
    """Runs ``step(x, x_train, y)`` (forward, loss, backward, optimiser step; returns its outputs as tensors or
    None) eagerly for the first ``WARMUP`` batches, then as one captured graph for every batch of that shape."""

    def __init__(self, step: Step, optimizer: torch.optim.Optimizer, model: nn.Module):
        self.step, self.optimizer, self.model = step, optimizer, model
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: tuple[torch.Tensor, ...] = ()
        self.outputs: tuple = ()
        self.grads: list = []  # the graph writes the gradients here (its own pool): kept alive with it
        self.eager_steps = 0
        self.failed = False
        self.replays = 0

    def __call__(self, x: torch.Tensor, x_train: torch.Tensor, y: torch.Tensor):
        batch = (x, x_train, y)
        if self.graph is not None and self._fits(batch):
            for static, value in zip(self.inputs, batch):
                static.copy_(value)
            self.graph.replay()
            self.replays += 1
            return self.outputs
        if self.graph is None and not self.failed and self.eager_steps >= WARMUP:
            try:
                return self._capture(batch)
            except Exception as err:  # noqa: BLE001 - any capture failure means: train eagerly
                self.failed, self.graph = True, None
                torch.cuda.synchronize()
                warnings.warn(f"CUDA graph capture of the training step failed ({type(err).__name__}: {err}); "
                              "training eagerly", RuntimeWarning, stacklevel=2)
        return self._eager(batch)

    def _fits(self, batch) -> bool:
        return all(s.shape == v.shape and s.dtype == v.dtype for s, v in zip(self.inputs, batch))

    def _eager(self, batch):
        self.optimizer.zero_grad(set_to_none=True)
        if self.graph is not None or self.failed or self.eager_steps >= WARMUP:
            return self.step(*batch)
        # the warm-up steps: on a side stream, as capture requires
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = self.step(*batch)
        torch.cuda.current_stream().wait_stream(side)
        self.eager_steps += 1
        return out

    def _capture(self, batch):
        self.inputs = tuple(v.detach().clone() for v in batch)
        # no gradients before capture: backward then allocates them from the graph's pool and each replay
        # writes them afresh (nothing accumulates across steps)
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self.step(*self.inputs)
        self.graph, self.outputs = graph, outputs
        self.grads = [q.grad for q in self.model.parameters()]
        graph.replay()  # capture records the step; the replay runs it on this batch
        self.replays += 1
        return outputs

    def close(self) -> None:
        """Hand the graph's memory back (the model's gradients pointed into its pool)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.graph, self.inputs, self.outputs, self.grads = None, (), (), []
