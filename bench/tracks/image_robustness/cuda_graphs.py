"""CUDA-graph replay of fixed-shape attack loops: the fast path of the PGD core on a GPU.

A small CNN's PGD step is a few dozen kernels of microseconds each, so on a GPU the eager loop is bound by
Python and kernel-launch overhead, not by the hardware. Here the whole loop (every step, forward, input
gradient and projection, unrolled) is captured once per (model, batch shape, attack settings) into one CUDA
graph that reads and writes static buffers; a batch then costs one copy in, one replay, one copy out. The
kernels and their order are those of the eager loop, but cuBLAS may pick other algorithms under capture, so
gradients can differ in the last bits: measured on an H200 (tests/tracks/image_robustness/test_fast_path.py,
``gpu`` marker), L-inf PGD and APGD give bit-identical results (signed steps absorb the differences), L2 PGD
differs by up to 0.02 in a pixel after 20 steps with the same outcome on >= 98 % of the examples (tested).

Used only when it is safe: a CUDA input, a model with every module in eval mode (a graph would repeat
BatchNorm's running-statistics updates during the warm-up, and train-mode randomness would be frozen), and
``BENCH_CUDA_GRAPHS`` not "0". A model that cannot be captured (host syncs, CPU ops) falls back to the eager
loop once, with one warning, and is not tried again.
"""
from __future__ import annotations

import os
import time
import warnings
import weakref
from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

# A model's captured loops, newest last: a worst case runs several attacks and eps, each at a few batch shapes.
_GRAPHS: "weakref.WeakKeyDictionary[nn.Module, OrderedDict]" = weakref.WeakKeyDictionary()
_UNCAPTURABLE: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()
_FASTER: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
# Each graph keeps a private memory pool (about one step of the loop: ~1 GiB for the cnn at batch 2,000); 16 graphs
# a model held 13-17 GiB a lane on an H200, which starved lanes sharing the GPU. 6 covers one cell's shapes.
PER_MODEL = 6
WARMUP = 2  # eager iterations on a side stream before capture, as torch.cuda.graph requires


def usable(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether the graphed path may run ``model`` on ``x``."""
    return (x.is_cuda and os.environ.get("BENCH_CUDA_GRAPHS", "1") != "0" and model not in _UNCAPTURABLE
            and not any(m.training for m in model.modules()))


class _Loop:
    """One captured loop: ``buffers`` are the static tensors the graph reads (inputs) and writes (outputs)."""

    def __init__(self, graph: torch.cuda.CUDAGraph, buffers: dict[str, torch.Tensor]):
        self.graph, self.buffers = graph, buffers

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for name, value in inputs.items():
            self.buffers[name].copy_(value)
        self.graph.replay()
        return self.buffers


def run(model: nn.Module, key: tuple, inputs: dict[str, torch.Tensor],
        body: Callable[[dict[str, torch.Tensor]], None]) -> dict[str, torch.Tensor] | None:
    """Run ``body`` (which reads and updates the tensors of its dict in place) on ``inputs`` through a graph
    cached under ``(model, key, input shapes)``; returns the buffers after the run (valid until the next run
    of the same graph: callers copy what they keep), or None when the model cannot be captured."""
    shapes = tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(inputs.items()))
    loops = _GRAPHS.setdefault(model, OrderedDict())
    full_key = (key, shapes)
    loop = loops.get(full_key)
    if loop is None:
        try:
            loop = _capture(inputs, body)
        except Exception as err:  # noqa: BLE001 - any capture failure means: use the eager loop
            _UNCAPTURABLE.add(model)
            warnings.warn(f"CUDA graph capture failed for {type(model).__name__} ({type(err).__name__}: {err}); "
                          "using the eager loop", RuntimeWarning, stacklevel=3)
            torch.cuda.synchronize()
            return None
        loops[full_key] = loop
        while len(loops) > PER_MODEL:
            loops.popitem(last=False)
    else:
        loops.move_to_end(full_key)
    return loop(inputs)


def _capture(inputs: dict[str, torch.Tensor], body) -> _Loop:
    buffers = {k: v.detach().clone() for k, v in inputs.items()}
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(WARMUP):
            scratch = {k: v.clone() for k, v in buffers.items()}
            body(scratch)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body(buffers)
    return _Loop(graph, buffers)


def faster(model: nn.Module, key: tuple, graphed: Callable[[], object | None], eager: Callable[[], object]):
    """Run whichever of ``graphed`` (None: not capturable) and ``eager`` -- two forms of one computation, with the
    same per-example outcome -- was measured faster for this model and key (which includes the batch shape).

    For loops that the eager form can cut short (an example leaves the batch once fooled) the graph is not
    always faster: a model with heavy kernels gains little from removing launches and loses the early exit.
    The first call with a key times one replay against one eager run and remembers the faster."""
    picks = _FASTER.setdefault(model, {})
    pick = picks.get(key)
    if pick == "eager":
        return eager()
    result = graphed()  # the first call also captures
    if result is None:
        picks[key] = "eager"
        return eager()
    if pick is None:
        t_graph, t_eager = _seconds(graphed), _seconds(eager)
        picks[key] = "graph" if t_graph <= t_eager else "eager"
    return result


def _seconds(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start
