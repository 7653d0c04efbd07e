"""MixStyle: "Domain Generalization with MixStyle" (Zhou et al., ICLR 2021)."""
from __future__ import annotations

from dataclasses import dataclass

from bench.tracks.domain_shift.style import MixStyle as MixStyleLayer
from bench.tracks.domain_shift.training import DGDefense, DGParams


@dataclass(frozen=True)
class MixStyleParams(DGParams):
    p: float = 0.5  # probability that a layer mixes a batch
    alpha: float = 0.1  # Beta(alpha, alpha) mixing weights


class MixStyle(DGDefense):
    """Feature statistics of each example mixed with those of a random other example of the batch:
    lambda ~ Beta(alpha, alpha), mu_mix = lambda mu + (1 - lambda) mu_perm (same for sigma), statistics
    detached; in training only, after every conv block but the last.

    Threat model: none (distribution shift). Defaults: p = 0.5, alpha = 0.1 (the paper's), training as ``erm``.
    Departures: single source, so the random-shuffle variant (the paper's cross-domain shuffle needs several
    source domains); the shared small CNN instead of a ResNet.
    """

    Params = MixStyleParams

    def style_layer(self, channels):
        return MixStyleLayer(channels, p=self.params.p, alpha=self.params.alpha)
