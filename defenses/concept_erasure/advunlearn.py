"""AdvUnlearn -- robust concept erasure by adversarial training of the text encoder (Zhang et al., NeurIPS'24).

Outer problem: train the text encoder's transformer layers (token and position
embeddings frozen, UNet frozen) on l_u(theta, c_adv) + gamma * l_retain, where
l_u = MSE(eps(x_t, E_theta(c_adv)), eps_hat) with the ESD target eps_hat = eps*(x_t, "") - eta (eps*(x_t, c) -
eps*(x_t, "")) of the original model eps*, and l_retain = MSE(eps(x_t, E_theta(c_r)), eps*(x_t, E*(c_r))) on
prompts of the retained classes. Inner problem: c_adv = c with k soft token embeddings prepended (after [CLS]),
optimised without norm bound so that the current model reproduces the original model's noise for c
(MSE(eps(x_t, E_theta(prefix + c)), eps*(x_t, c))); Adam lr 1e-3 for ``attack_steps`` steps, or -- ``fast``
(the paper's fast variant, ``advunlearn-fast``) -- one signed-gradient step of size ``fast_step`` from a random
token prefix. The first ``warmup`` fraction of iterations trains without attack.

Threat model: prompt-level attacks on the text input (soft prefixes bound the discrete ones).
Defaults (quick): k 5, gamma 0.3, eta 1, 100 iterations of batch 8, inner Adam 1e-3 x 5 steps, outer Adam
3e-4, warm-up 20%; full: 200 iterations of batch 16, inner 10 steps. Departures from the paper (SD v1.4: 1000 iterations, outer Adam 1e-5, inner 30 steps, batch
1): fewer iterations with a larger outer learning rate and fewer inner steps (tiny model, CPU budget); the
retain prompts are those of the other Fashion-MNIST classes (the paper uses a COCO-caption retain set); x_t are
drawn from a pool of trajectories of the frozen original model computed once.
"""
from __future__ import annotations

import dataclasses

import torch

from bench.tracks.concept_erasure.erasure import (
    MODEL_PROFILES,
    ErasureDefense,
    ModelParams,
    denoise_loss,
    encode_prefixed,
    random_token_embeddings,
    trajectory_pool,
)
from bench.tracks.concept_erasure.model import FULL_GUIDANCE


@dataclasses.dataclass(frozen=True)
class AdvUnlearnParams(ModelParams):
    iterations: int = 100
    batch_size: int = 8
    lr: float = 3e-4
    gamma: float = 0.3
    eta: float = 1.0
    warmup: float = 0.2
    prefix_tokens: int = 5
    attack_steps: int = 5
    attack_lr: float = 1e-3
    fast: bool = False
    fast_step: float = 0.05
    per_prompt: int = 4
    ddim_steps: int = 20
    guidance: float = 3.0


def encoder_layers(text_encoder) -> list:
    """The transformer layers' parameters (BERT ``encoder``, CLIP ``text_model.encoder``): what AdvUnlearn trains."""
    encoder = getattr(text_encoder, "encoder", None) or text_encoder.text_model.encoder
    return list(encoder.parameters())


def inner_attack(model, prompts, x, t, target, p, gen) -> torch.Tensor:
    """A soft prefix (B, k, D) that makes the current model reproduce the original model's noise for c."""
    prefix = random_token_embeddings(model, len(prompts), p.prefix_tokens, gen).requires_grad_(True)
    if p.fast:
        loss = denoise_loss(model, x, t, encode_prefixed(model, prompts, prefix), target)
        (grad,) = torch.autograd.grad(loss, prefix)
        return (prefix - p.fast_step * grad.sign()).detach()
    opt = torch.optim.Adam([prefix], lr=p.attack_lr)
    for _ in range(p.attack_steps):
        loss = denoise_loss(model, x, t, encode_prefixed(model, prompts, prefix), target)
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=[prefix])
        opt.step()
    return prefix.detach()


class AdvUnlearn(ErasureDefense):
    Params = AdvUnlearnParams
    profiles = {"smoke": {**MODEL_PROFILES["smoke"], "iterations": 10, "lr": 1e-3, "batch_size": 4, "attack_steps": 2,
                          "per_prompt": 1, "ddim_steps": 5},
                "full": {**MODEL_PROFILES["full"], "iterations": 200, "batch_size": 16, "attack_steps": 10,
                         "per_prompt": 8, "ddim_steps": 25, "guidance": FULL_GUIDANCE}}

    def fit(self, model, data, ctx) -> None:
        p = self.params
        orig = self.original(model, ctx)
        erase = data.extras["erase_prompts"]
        retain = [prompt for prompt, _ in data.extras["retain_prompts"]]
        esd = trajectory_pool(orig, erase, p.per_prompt, p.ddim_steps, p.guidance, ctx.seed, eta=p.eta)
        # The inner attack's target: the original model's own noise for c on the same points.
        with torch.no_grad():
            concept_noise = torch.cat([orig.noise_pred(esd.x[i:i + 256], esd.t[i:i + 256],
                                                       orig.encode([erase[j] for j in esd.prompt[i:i + 256]]))
                                       for i in range(0, len(esd.t), 256)])
        kept = trajectory_pool(orig, retain, max(1, p.per_prompt // 2), p.ddim_steps, p.guidance, ctx.seed + 1)
        model.requires_grad_(False)
        params = encoder_layers(model.text_encoder)
        for q in params:
            q.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=p.lr)
        start_attack = int(p.warmup * p.iterations)
        for it in ctx.progress(range(p.iterations), desc=f"advunlearn ({data.extras['concept']})"):
            idx = torch.randint(len(esd.t), (p.batch_size,), generator=ctx.generator).to(esd.x.device)
            x, t, target = esd.x[idx], esd.t[idx], esd.target[idx]
            prompts = [erase[int(j)] for j in esd.prompt[idx]]
            if it >= start_attack:
                prefix = inner_attack(model, prompts, x, t, concept_noise[idx], p, ctx.generator)
                cond = encode_prefixed(model, prompts, prefix)
            else:
                cond = model.encode(prompts)
            loss_u = denoise_loss(model, x, t, cond, target)
            xr, tr, which, target_r = kept.batch(p.batch_size, ctx.generator)
            loss_r = denoise_loss(model, xr, tr, model.encode([retain[int(j)] for j in which]), target_r)
            loss = loss_u + p.gamma * loss_r
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (it + 1) % max(1, p.iterations // 10) == 0:
                ctx.log(iteration=it + 1, loss_unlearn=loss_u.item(), loss_retain=loss_r.item(),
                        attacked=it >= start_attack)
        model.eval().requires_grad_(False)


class AdvUnlearnFast(AdvUnlearn):
    """AdvUnlearn with the fast inner attack: one signed-gradient step on the soft prefix (see ``advunlearn``)."""

    Params = dataclasses.make_dataclass("Params", [("fast", bool, dataclasses.field(default=True))],
                                        bases=(AdvUnlearnParams,), frozen=True, namespace={"__module__": __name__})
