"""ERM for single-source domain generalisation: the baseline every domain-shift table needs (Vapnik 1998;
DomainBed, Gulrajani & Lopez-Paz, ICLR 2021, showed it is hard to beat under fair model selection)."""
from __future__ import annotations

from bench.tracks.domain_shift.training import DGDefense


class ERM(DGDefense):
    """Cross-entropy on the source domain, with the weights of the epoch best on held-out source data.

    Threat model: none (distribution shift, not an adversary). Defaults: the shared CNN (cnn-small; cnn-bn in
    the full profile), Adam 1e-3 with a cosine schedule, batch 128, 10 epochs (full: 20 at batch 256), 20% of
    the source training data held out for model selection (training-domain validation). Departures: none
    beyond the shared CNN in place of the papers' ResNets.
    """
