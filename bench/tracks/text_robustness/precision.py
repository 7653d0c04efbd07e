"""The numeric precision of the attacks' model queries on CUDA (the victim and the constraints' sentence
encoder; BERT-Attack's masked LM proposes on the CPU): ``cuda_precision``, float32 unless set. CPU queries are
always float32: on the CPU these settings change nothing.

Measured on one H100 (benchmarks/text_attack_throughput.py --precisions float32,float16, BBC News full, mlp-ft,
20 examples; benchmarks/results/text_precision_gpu_h100.json): float16 gave the same outcome on 100 % of the
examples under PWWS, TextFooler and TextBugger and 95 % under BERT-Attack (same final text on 40-70 %), and no
speed-up (31.3 s for the four attacks against 29.4 s in float32). The 16-lane BBC News full run (float16) took
as long per cell as the float32 one before it, with the host's load average at 128-148 on 16 cores: the lanes
were short of CPU, not of GPU (``bench.executors.capped_threads``).

- ``float32``: the reference (TF32 off, as PyTorch's default).
- ``tf32``: float32 tensors, matmuls and convolutions on TF32 tensor cores (10-bit mantissa inputs).
- ``float16`` / ``bfloat16``: ``torch.autocast`` -- matmuls in half precision, softmax, layer norm and the
  loss-like reductions kept in float32 by autocast's own lists.
"""
from __future__ import annotations

import contextlib
from typing import Literal

import torch

Precision = Literal["float32", "tf32", "float16", "bfloat16"]
_AUTOCAST = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@contextlib.contextmanager
def cuda_queries(precision: Precision):
    """Run the block's CUDA work at ``precision``; the process's settings are restored after it."""
    if precision not in ("float32", "tf32", *_AUTOCAST):
        raise ValueError(f"unknown precision {precision!r}")
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    half = precision in _AUTOCAST and torch.cuda.is_available()  # without CUDA, autocast("cuda") only warns
    try:
        with torch.autocast("cuda", dtype=_AUTOCAST.get(precision, torch.float16), enabled=half):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def current() -> str:
    """The precision CUDA work would run at now (keys caches of model outputs)."""
    if torch.is_autocast_enabled("cuda"):
        return str(torch.get_autocast_dtype("cuda")).removeprefix("torch.")
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "float32"
