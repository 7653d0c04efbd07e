"""Every architecture builds for the datasets' shapes and returns finite logits (B, K)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.tracks.image_robustness.models import ARCHS, build_model

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8)]
PLAIN = (nn.Sequential, nn.Conv2d, nn.Linear, nn.ReLU, nn.BatchNorm2d, nn.Flatten)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("arch", ARCHS)
def test_logits(arch, shape):
    if arch == "resnet18" and shape == (1, 8, 8):
        pytest.skip("resnet18 handles 8x8 too (global pooling), but its forward is the slowest test")
    torch.manual_seed(0)
    model = build_model(arch, shape, 10)
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, *shape))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    if arch != "resnet18":  # plain layers only, for bound propagation
        assert all(isinstance(m, PLAIN) for m in model.modules())


def test_train_mode_batchnorm_and_width():
    model = build_model("cnn-bn", (1, 28, 28), 7, width=2)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert bn.num_batches_tracked.item() == 0  # the dummy forward in __init__ did not touch BN statistics
    assert model.training
    out = model(torch.rand(4, 1, 28, 28))
    out.sum().backward()
    assert out.shape == (4, 7)
    assert sum(p.numel() for p in model.parameters()) > sum(p.numel() for p in build_model("cnn-bn", (1, 28, 28), 7).parameters())


def test_unknown_arch():
    with pytest.raises(ValueError, match="cnn-small"):
        build_model("vgg", (1, 28, 28), 10)
    with pytest.raises(ValueError):
        build_model("cnn", (28, 28), 10)
