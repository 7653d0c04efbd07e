"""The unerased text-to-image model: the baseline of the concept-erasure track, and the original model every
erasure method starts from (``ctx.model_of("none")``)."""
from __future__ import annotations

from bench.tracks.concept_erasure.erasure import ErasureDefense
from bench.tracks.concept_erasure.model import PRESETS
from bench.tracks.concept_erasure.train import base_unet


class NoErasure(ErasureDefense):
    """No erasure: the base model as trained by ``python -m bench.tracks.concept_erasure.train --profile P`` (a small
    UNet2DConditionModel on MiniLM-L6 token states, Fashion-MNIST with varied captions; trained once per
    profile and seed and shared by every concept), or a Stable Diffusion pipeline from a local folder
    (``--set none.model=/path/to/pipeline``), used as it is.

    Threat model: none. Its Pre-ASR is what there is to erase; its retained-class accuracy the utility
    reference. The training time of its first use includes the base model's training (later concepts reuse it).
    """

    def fit(self, model, data, ctx) -> None:
        model.to(ctx.device)
        if self.params.model in PRESETS:
            meta = base_unet(model, self.params.model, ctx.seed, progress=ctx.progress,
                             log=ctx.log)
            ctx.log(base_source=meta["source"], base_train_s=meta.get("train_s"), base_cached=meta["cached"])
