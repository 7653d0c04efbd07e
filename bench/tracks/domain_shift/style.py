"""Feature-statistics ("style") perturbation layers for domain generalisation, and where they go in a CNN.

Each layer sees features x (B, C, H, W), computes per-example, per-channel statistics over H, W
(mu, sigma = sqrt(var + 1e-6)), normalises x_hat = (x - mu) / sigma and re-styles it with perturbed statistics.
All are the identity in eval mode: attacks, certifiers and the domain evaluator see the plain CNN.

- ``MixStyle`` (Zhou et al., ICLR 2021): with probability p, mix each example's statistics with a random other
  example's, lambda ~ Beta(alpha, alpha); statistics detached, as in the paper.
- ``DSU`` (Li et al., ICLR 2022): with probability p, mu + n * std_batch(mu), sigma + n * std_batch(sigma),
  n ~ N(0, 1) per example and channel.
- ``AdvStyle`` (Zhang et al., arXiv 2301.12643): per forward pass, identity / adversarial / DSU with
  probability 1/3 each. The adversarial branch uses learnable per-channel magnitudes S_mu, S_sigma (initialised
  once, on the first training batch, to the batch std of mu and sigma) behind a gradient reversal layer (factor
  10): x_hat * (sigma + n_s * GRL(S_sigma)) + mu + n_m * GRL(S_mu), so one optimiser step descends on the
  network and ascends on the magnitudes. ``reverse=False`` is the noise-only ablation (magnitudes learned
  without reversal, i.e. they descend the loss).

Randomness comes from a numpy Generator per layer (``seed_style_layers``), so training is deterministic under
the run seed on any device.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

EPS = 1e-6


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example, per-channel mean and std over H, W, shapes (B, C, 1, 1)."""
    return x.mean(dim=(2, 3), keepdim=True), (x.var(dim=(2, 3), keepdim=True) + EPS).sqrt()


def batch_std(stat: torch.Tensor) -> torch.Tensor:
    """The statistic's spread over the batch (1, C, 1, 1): DSU's uncertainty estimate."""
    return (stat.var(dim=0, keepdim=True) + EPS).sqrt()


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.factor * grad, None


def grad_reverse(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Identity forward; gradient multiplied by -factor backward."""
    return _Reverse.apply(x, factor)


class StyleLayer(nn.Module):
    """Base: identity in eval mode, ``perturb`` in training mode."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.rng = np.random.default_rng(0)  # replaced by seed_style_layers from the run's generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.perturb(x) if self.training and len(x) > 1 else x

    def perturb(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def normal(self, like: torch.Tensor) -> torch.Tensor:
        """N(0, 1) noise of shape (B, C, 1, 1) from this layer's generator."""
        n = self.rng.standard_normal((like.shape[0], like.shape[1], 1, 1), dtype=np.float32)
        return torch.from_numpy(n).to(like.device, like.dtype)


class MixStyle(StyleLayer):
    def __init__(self, channels: int, p: float = 0.5, alpha: float = 0.1):
        super().__init__(channels)
        self.p, self.alpha = p, alpha

    def perturb(self, x):
        if self.rng.random() >= self.p:
            return x
        mu, sigma = (s.detach() for s in channel_stats(x))
        lam = torch.from_numpy(self.rng.beta(self.alpha, self.alpha, (len(x), 1, 1, 1)).astype(np.float32)).to(x)
        perm = torch.from_numpy(self.rng.permutation(len(x))).to(x.device)
        mu_mix = lam * mu + (1 - lam) * mu[perm]
        sigma_mix = lam * sigma + (1 - lam) * sigma[perm]
        return (x - mu) / sigma * sigma_mix + mu_mix


class DSU(StyleLayer):
    def __init__(self, channels: int, p: float = 0.5):
        super().__init__(channels)
        self.p = p

    def perturb(self, x):
        if self.rng.random() >= self.p:
            return x
        mu, sigma = channel_stats(x)
        beta = mu + self.normal(mu) * batch_std(mu)
        gamma = sigma + self.normal(sigma) * batch_std(sigma)
        return (x - mu) / sigma * gamma + beta


class AdvStyle(StyleLayer):
    def __init__(self, channels: int, reverse: bool = True, factor: float = 10.0):
        super().__init__(channels)
        self.reverse, self.factor = reverse, factor
        self.s_mu = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.s_sigma = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialised", torch.tensor(False))

    def perturb(self, x):
        mu, sigma = channel_stats(x)
        if not self.initialised:
            with torch.no_grad():
                self.s_mu.copy_(batch_std(mu))
                self.s_sigma.copy_(batch_std(sigma))
                self.initialised.fill_(True)
        branch = self.rng.integers(3)
        if branch == 0:
            return x
        if branch == 1:
            s_mu, s_sigma = self.s_mu, self.s_sigma
            if self.reverse:
                s_mu, s_sigma = grad_reverse(s_mu, self.factor), grad_reverse(s_sigma, self.factor)
        else:
            s_mu, s_sigma = batch_std(mu), batch_std(sigma)
        x_hat = (x - mu) / sigma
        return x_hat * (sigma + self.normal(sigma) * s_sigma) + mu + self.normal(mu) * s_mu


def insert_style_layers(model: nn.Module, make_layer: Callable[[int], nn.Module]) -> nn.Sequential:
    """A copy of a sequential CNN (bench.tracks.image_robustness.models: cnn-small, cnn, cnn-bn) with ``make_layer(channels)`` after
    every conv block but the last (after its ReLU): the early layers, where statistics carry style."""
    if not isinstance(model, nn.Sequential):
        raise ValueError("style layers go into the sequential CNNs (arch cnn-small, cnn or cnn-bn)")
    layers, convs, channels = list(model), [], 0
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Conv2d):
            channels = layer.out_channels
            convs.append(None)
        elif isinstance(layer, nn.ReLU) and convs and convs[-1] is None:
            convs[-1] = (i, channels)  # the block's ReLU
    blocks = [c for c in convs if c is not None][:-1]
    if not blocks:
        raise ValueError("style layers need a CNN with at least two conv blocks")
    out = []
    ends = dict(blocks)
    for i, layer in enumerate(layers):
        out.append(layer)
        if i in ends:
            out.append(make_layer(ends[i]))
    return nn.Sequential(*out)


def style_layers(model: nn.Module) -> list[StyleLayer]:
    return [m for m in model.modules() if isinstance(m, StyleLayer)]


def seed_style_layers(model: nn.Module, generator: torch.Generator) -> None:
    """Give each style layer its own numpy Generator, drawn from the run's torch generator."""
    for layer in style_layers(model):
        layer.rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,), generator=generator)))
