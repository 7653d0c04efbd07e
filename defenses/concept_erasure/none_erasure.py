"""The unerased text-to-image model: the baseline of the concept-erasure track, and the original model every
erasure method starts from (``ctx.model_of("none")``)."""
from __future__ import annotations

import dataclasses

from bench.tracks.concept_erasure.erasure import (
    MODEL_PROFILES,
    ErasureDefense,
    ModelParams,
)
from bench.tracks.concept_erasure.model import PRESETS
from bench.tracks.concept_erasure.train import base_unet


@dataclasses.dataclass(frozen=True)
class NoErasureParams(ModelParams):
    # The base model's training seed: one base model per profile, whatever the run's seed, so that erasure
    # seeds 0, 1, 2 are three erasures of the same model (the run seed drives the erasure methods only).
    base_seed: int = 0


class NoErasure(ErasureDefense):
    """No erasure: the base model as trained by ``python -m bench.tracks.concept_erasure.train --profile P`` (a small
    UNet2DConditionModel on MiniLM-L6 token states, Fashion-MNIST with varied captions; trained once per
    profile -- seed ``base_seed``, 0, not the run's seed -- and shared by every concept and erasure seed), or a
    Stable Diffusion pipeline from a local folder (``--set none.model=/path/to/pipeline``), used as it is.

    Threat model: none. Its Pre-ASR is what there is to erase; its retained-class accuracy the utility
    reference. The training time of its first use includes the base model's training (later concepts reuse it).
    """

    Params = NoErasureParams
    profiles = MODEL_PROFILES

    def fit(self, model, data, ctx) -> None:
        model.to(ctx.device)
        if self.params.model in PRESETS:
            meta = base_unet(model, self.params.model, self.params.base_seed, progress=ctx.progress,
                             log=ctx.log)
            ctx.log(base_source=meta["source"], base_train_s=meta.get("train_s"), base_cached=meta["cached"])
