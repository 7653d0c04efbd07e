"""DSU: "Uncertainty Modeling for Out-of-Distribution Generalization" (Li et al., ICLR 2022)."""
from __future__ import annotations

from dataclasses import dataclass

from bench.tracks.domain_shift.style import DSU as DSULayer
from bench.tracks.domain_shift.training import DGDefense, DGParams


@dataclass(frozen=True)
class DSUParams(DGParams):
    p: float = 0.5  # probability that a layer perturbs a batch


class DSU(DGDefense):
    """Feature statistics resampled from their batch uncertainty: per example and channel,
    beta = mu + n * std_batch(mu), gamma = sigma + n * std_batch(sigma), n ~ N(0, 1); output
    (x - mu) / sigma * gamma + beta, in training only, after every conv block but the last.

    Threat model: none (distribution shift). Defaults: p = 0.5 (the paper's), training as ``erm``. Departures:
    the shared small CNN instead of a ResNet, so the layers sit after its early conv blocks rather than after
    every ResNet stage.
    """

    Params = DSUParams

    def style_layer(self, channels):
        return DSULayer(channels, p=self.params.p)
