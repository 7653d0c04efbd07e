"""Image classifiers shared by all tracks: ``build_model(arch, input_shape, num_classes, width)``.

Inputs are images in the dataset's bounds (no normalisation layer inside: attacks and certifiers see the raw
input space). ``mlp``, ``cnn-small``, ``cnn`` and ``cnn-bn`` are ``nn.Sequential`` of plain layers only (Conv2d,
BatchNorm2d, ReLU, Flatten, Linear) so bound-propagation methods (IBP, CROWN) can walk them layer by layer.

- ``mlp``: Flatten-FC(256w)-ReLU-FC(256w)-ReLU-FC(K).
- ``cnn-small``: conv(16w,4,s2,p1)-conv(32w,4,s2,p1)-FC(100w)-FC(K), the "small" CNN of the certified-training
  literature (Wong & Kolter 2018; Gowal et al. 2018).
- ``cnn``: conv(32w,3,s1,p1)-conv(64w,4,s2,p1)-conv(64w,4,s2,p1)-FC(256w)-FC(K), ReLU after each but the last.
- ``cnn-bn``: ``cnn`` with BatchNorm2d after every conv (before its ReLU), as in modern certified training.
- ``resnet18``: CIFAR-style ResNet-18 (3x3 stem, no max-pool, global average pool), channels 64w..512w; works
  for inputs down to 8x8.

Stride-2 convs use kernel 4, padding 1, so each exactly halves even sizes (8 -> 4 -> 2, 28 -> 14 -> 7).
"""
from __future__ import annotations

import torch
from torch import nn

ARCHS = ("mlp", "cnn-small", "cnn", "cnn-bn", "resnet18")


def _flat_size(features: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Feature size after ``features`` for one input, by a dummy forward (eval mode: BN stats stay untouched)."""
    was_training = features.training
    features.eval()
    with torch.no_grad():
        size = features(torch.zeros(1, *input_shape)).numel()
    features.train(was_training)
    return size


def _conv_net(channels: int, convs: list[tuple[int, int, int, int]], batch_norm: bool) -> list[nn.Module]:
    """conv(out, kernel, stride, padding) [-BN] -ReLU for each spec."""
    layers: list[nn.Module] = []
    for out, kernel, stride, padding in convs:
        layers.append(nn.Conv2d(channels, out, kernel, stride=stride, padding=padding))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.ReLU())
        channels = out
    return layers


def _sequential_cnn(input_shape, num_classes, convs, hidden, batch_norm=False) -> nn.Sequential:
    features = nn.Sequential(*_conv_net(input_shape[0], convs, batch_norm), nn.Flatten())
    flat = _flat_size(features, input_shape)
    return nn.Sequential(*features, nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:  # projection when the shape changes
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18 (He et al. 2016) for any channel count; stem 3x3 stride 1, no max-pool."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 1):
        super().__init__()
        base = 64 * width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, base, 3, padding=1, bias=False), nn.BatchNorm2d(base),
                                  nn.ReLU())
        blocks, cin = [], base
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = base * 2 ** i
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)  # any input size: 28 -> 4x4, 32 -> 4x4, 8 -> 1x1 before pooling
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def build_model(arch: str, input_shape: tuple, num_classes: int, width: int = 1) -> nn.Module:
    """A freshly initialised classifier returning logits (B, num_classes) for inputs (B, *input_shape)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of: {', '.join(ARCHS)}")
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {input_shape}")
    if int(width) < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    w, k = int(width), int(num_classes)
    if arch == "mlp":
        d = input_shape[0] * input_shape[1] * input_shape[2]
        return nn.Sequential(nn.Flatten(), nn.Linear(d, 256 * w), nn.ReLU(), nn.Linear(256 * w, 256 * w), nn.ReLU(),
                             nn.Linear(256 * w, k))
    if arch == "cnn-small":
        return _sequential_cnn(input_shape, k, [(16 * w, 4, 2, 1), (32 * w, 4, 2, 1)], 100 * w)
    if arch in ("cnn", "cnn-bn"):
        convs = [(32 * w, 3, 1, 1), (64 * w, 4, 2, 1), (64 * w, 4, 2, 1)]
        return _sequential_cnn(input_shape, k, convs, 256 * w, batch_norm=arch == "cnn-bn")
    return ResNet18(input_shape[0], k, w)
