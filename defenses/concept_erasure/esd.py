"""ESD -- Erased Stable Diffusion (Gandikota et al., ICCV'23).

Fine-tunes the model so that, under the concept's prompts, it predicts the negatively guided noise of the
original model: eps_hat = eps*(x_t, "") - eta (eps*(x_t, c) - eps*(x_t, "")), loss MSE(eps(x_t, c), eps_hat),
x_t on DDIM trajectories of the original model under c (eta 1).

Which weights: ``train="xattn"`` (ESD-x, the default) tunes the UNet's cross-attention (attn2) layers only --
the parameters that read the text, so the edit stays specific to prompts (ESD's choice for specific concepts
such as artists); ``train="unet"`` tunes every UNet weight outside cross-attention (ESD-u, the paper's choice
for nudity). The text encoder is frozen (it is what AdvUnlearn trains instead).

Threat model: prompts only. Defaults: the class's 24 training captions as c; 4 trajectories per caption of 20
DDIM steps, guidance 3; Adam lr 5e-4, 200 iterations of batch 16 (quick). Departures: x_t are drawn from a pool
of trajectories computed once with the frozen original model (the same distribution as sampling them at every
iteration, since the original does not change), and far fewer iterations with a larger learning rate than SD's 1e-5 (tiny model); ESD samples x_t with the
model being trained, AdvUnlearn's recipe with the original one (used here).
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from bench.tracks.concept_erasure.erasure import (
    MODEL_PROFILES,
    ErasureDefense,
    ModelParams,
    denoise_loss,
    trajectory_pool,
)
from bench.tracks.concept_erasure.model import FULL_GUIDANCE


@dataclasses.dataclass(frozen=True)
class ESDParams(ModelParams):
    train: Literal["xattn", "unet"] = "xattn"
    eta: float = 1.0
    iterations: int = 200
    batch_size: int = 16
    lr: float = 5e-4
    per_prompt: int = 4  # trajectories per erase prompt
    ddim_steps: int = 20
    guidance: float = 3.0


def trainable_unet_params(unet, which: str) -> list:
    params = [(n, p) for n, p in unet.named_parameters() if ("attn2" in n) == (which == "xattn")]
    return [p for _, p in params]


class ESD(ErasureDefense):
    Params = ESDParams
    profiles = {"smoke": {**MODEL_PROFILES["smoke"], "iterations": 20, "lr": 1e-3, "batch_size": 8, "per_prompt": 1,
                          "ddim_steps": 5},
                "full": {**MODEL_PROFILES["full"], "iterations": 400, "batch_size": 64, "per_prompt": 8,
                         "ddim_steps": 25, "guidance": FULL_GUIDANCE}}

    def fit(self, model, data, ctx) -> None:
        p = self.params
        orig = self.original(model, ctx)
        prompts = data.extras["erase_prompts"]
        pool = trajectory_pool(orig, prompts, p.per_prompt, p.ddim_steps, p.guidance, ctx.seed, eta=p.eta)
        with torch.no_grad():
            conds = model.encode(prompts)  # the text encoder stays frozen
        model.requires_grad_(False)
        params = trainable_unet_params(model.unet, p.train)
        for q in params:
            q.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=p.lr)
        model.unet.train()
        for it in ctx.progress(range(p.iterations), desc=f"esd ({data.extras['concept']})"):
            x, t, which, target = pool.batch(p.batch_size, ctx.generator)
            loss = denoise_loss(model, x, t, conds[which], target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (it + 1) % max(1, p.iterations // 10) == 0:
                ctx.log(iteration=it + 1, loss=loss.item())
        model.eval().requires_grad_(False)
