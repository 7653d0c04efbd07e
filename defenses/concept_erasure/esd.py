"""ESD -- Erased Stable Diffusion (Gandikota et al., ICCV'23).

Fine-tunes the model so that, under the concept's prompts, it predicts the negatively guided noise of the
original model: eps_hat = eps*(x_t, "") - eta (eps*(x_t, c) - eps*(x_t, "")), loss MSE(eps(x_t, c), eps_hat).

The paper's recipe, as its released training script runs it, and what of it applies here:
- which weights: ESD-u (``train="unet"``, every UNet weight outside cross-attention), the paper's choice for
  nudity and for objects (UnlearnDiffAtk and AdvUnlearn attack the object models "ESD-u"); ESD-x
  (``train="xattn"``, the cross-attention layers that read the text) is its choice for artistic styles. The
  track's concepts are object classes: ESD-u. The text encoder stays frozen (AdvUnlearn trains it instead);
- eta (``negative_guidance``) 1, start guidance 3 (the full model samples without guidance -- from 1.5 up its
  samples saturate -- so 1 there), one x_t per iteration (batch 1), 1000 iterations, Adam: all as in the paper;
- x_t from the model *being trained* (``xt_from="current"``): each iteration denoises fresh noise under c with
  the current model for a random number n of the DDIM steps (classifier-free guidance at the start guidance)
  and trains at the timestep reached, so training follows the model's own, increasingly concept-free,
  trajectories; ``xt_from="original"`` draws them from a pool of the frozen original model's (AdvUnlearn's
  recipe, and this track's earlier default);
- DDIM steps: the paper's 50 with SD's sampler; here the track's sampling steps (20 quick, 25 full), which its
  generations use;
- learning rate: the paper's 1e-5 applies here too. Measured on the quick model, bag, 1,000 iterations: Pre-ASR
  85% (unerased) -> 15% at 1e-5, retained-class accuracy 65% -> 58%; at 2e-4 (the paper's ratio 1e-5 : 1e-4 to
  SD's training rate, carried over to this model's 2e-3) Pre-ASR 0% but retained accuracy 43%. Not measured on
  the full model.

Threat model: prompts only. Defaults: the class's 24 training captions as c, each iteration one drawn at random.
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
from bench.tracks.concept_erasure.model import FULL_GUIDANCE, Cond


@dataclasses.dataclass(frozen=True)
class ESDParams(ModelParams):
    train: Literal["unet", "xattn"] = "unet"  # ESD-u (objects, nudity) or ESD-x (styles)
    eta: float = 1.0  # negative guidance
    iterations: int = 1000
    batch_size: int = 1
    lr: float = 1e-5  # the paper's
    xt_from: Literal["current", "original"] = "current"
    ddim_steps: int = 20
    guidance: float = 3.0  # start guidance of the partial denoising
    per_prompt: int = 4  # trajectories per erase prompt (xt_from="original" only)


def trainable_unet_params(unet, which: str) -> list:
    params = [(n, p) for n, p in unet.named_parameters() if ("attn2" in n) == (which == "xattn")]
    return [p for _, p in params]


class ESD(ErasureDefense):
    Params = ESDParams
    profiles = {"smoke": {**MODEL_PROFILES["smoke"], "iterations": 30, "lr": 3e-4, "batch_size": 4, "per_prompt": 1,
                          "ddim_steps": 5},
                "full": {**MODEL_PROFILES["full"], "ddim_steps": 25, "guidance": FULL_GUIDANCE}}

    def fit(self, model, data, ctx) -> None:
        p = self.params
        orig = self.original(model, ctx)
        prompts = data.extras["erase_prompts"]
        with torch.no_grad():
            conds = model.encode(prompts)  # the text encoder stays frozen
            empty = model.encode([""])
        pool = (trajectory_pool(orig, prompts, p.per_prompt, p.ddim_steps, p.guidance, ctx.seed, eta=p.eta)
                if p.xt_from == "original" else None)
        model.requires_grad_(False)
        params = trainable_unet_params(model.unet, p.train)
        for q in params:
            q.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=p.lr)
        for it in ctx.progress(range(p.iterations), desc=f"esd ({data.extras['concept']})"):
            if pool is not None:
                x, t, which, target = pool.batch(p.batch_size, ctx.generator)
            else:
                which = torch.randint(len(prompts), (p.batch_size,), generator=ctx.generator).to(conds.states.device)
                x, t, target = self.current_xt(model, orig, conds[which], empty, ctx.generator)
            model.unet.train()
            loss = denoise_loss(model, x, t, conds[which], target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            model.unet.eval()
            if (it + 1) % max(1, p.iterations // 10) == 0:
                ctx.log(iteration=it + 1, loss=loss.item())
        model.eval().requires_grad_(False)

    @torch.no_grad()
    def current_xt(self, model, orig, cond: Cond, empty: Cond, gen: torch.Generator):
        """x_t by partial DDIM denoising with the model being trained (one random stopping step per batch, as
        the paper draws one per iteration), and the ESD target of the original model there."""
        p = self.params
        n = len(cond.states)
        seeds = torch.randint(2 ** 31 - 1, (n,), generator=gen).tolist()
        stop = int(torch.randint(p.ddim_steps, (1,), generator=gen))
        model.unet.eval()
        t, x = model.sample(cond, seeds, p.ddim_steps, p.guidance, until=stop)
        tt = torch.full((n,), t, device=x.device)
        e_c = orig.noise_pred(x, tt, cond)
        e_0 = orig.noise_pred(x, tt, Cond(empty.states.expand(n, -1, -1), empty.mask.expand(n, -1),
                                          empty.pooled.expand(n, -1)))
        return x, tt, e_0 - p.eta * (e_c - e_0)
