"""AdvStyle: "Adversarial Style Augmentation for Domain Generalization" (Zhang et al., arXiv 2301.12643),
and its noise-only ablation."""
from __future__ import annotations

from dataclasses import dataclass

from bench.tracks.domain_shift.style import AdvStyle as AdvStyleLayer
from bench.tracks.domain_shift.training import DGDefense, DGParams


@dataclass(frozen=True)
class AdvStyleParams(DGParams):
    grl: float = 10.0  # gradient reversal factor on the style magnitudes


class AdvStyle(DGDefense):
    """Adversarial feature-statistics perturbation. After every conv block but the last, in training only, each
    forward pass picks identity / adversarial / DSU with probability 1/3. The adversarial branch re-styles
    x_hat = (x - mu) / sigma as x_hat * (sigma + n_s * GRL(S_sigma)) + mu + n_m * GRL(S_mu) with learnable
    per-channel magnitudes S (initialised on the first batch to the batch std of mu and sigma) behind a
    gradient reversal layer: the same optimiser step lowers the loss in the network's weights and raises it in
    the magnitudes.

    Threat model: none (distribution shift). Defaults: GRL factor 10 (the paper's), training as ``erm``.
    Departures: the shared small CNN instead of ResNet-50 (layers after its early conv blocks, not after the
    stem and each stage); Adam instead of SGD, like the other methods here -- Adam normalises the update, so
    the reversal's factor changes the magnitudes' direction, not their step size. The paper reports PACS
    single source, ResNet-50: 61.2% (ERM) -> 67.1% mean accuracy; no digits or Fashion-MNIST numbers.
    """

    Params = AdvStyleParams

    def style_layer(self, channels):
        return AdvStyleLayer(channels, reverse=True, factor=self.params.grl)


class AdvStyleNoise(DGDefense):
    """The noise-only ablation of ``advstyle``: the same layer, the magnitudes S learned without gradient
    reversal (they descend the loss like every other weight), so any gain over ``erm`` comes from the noise and
    the DSU branch alone. Comparing it with ``advstyle`` measures the adversarial part.

    Threat model: none. Defaults: as ``advstyle``. Departures: as ``advstyle``.
    """

    def style_layer(self, channels):
        return AdvStyleLayer(channels, reverse=False)
