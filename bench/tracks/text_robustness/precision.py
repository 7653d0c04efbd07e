"""The numeric precision of the attacks' model queries on CUDA (the victim and the constraints' sentence
encoder; BERT-Attack's masked LM proposes on the CPU). An attack on a 120-word BBC News article queries MiniLM
~2,000 times, so a full-profile run is bound by float32 matmuls; tensor-core precisions are several times
faster. CPU queries are always float32: on the CPU these settings change nothing.

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
