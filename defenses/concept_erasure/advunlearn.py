"""AdvUnlearn -- robust concept erasure by adversarial training of the text encoder (Zhang et al., NeurIPS'24).

Outer problem: train the text encoder's transformer layers (token and position embeddings frozen, UNet frozen) on
l_u(theta, c_adv) + gamma * l_retain, where l_u = MSE(eps(x_t, E_theta(c_adv)), eps_hat) with the ESD target
eps_hat = eps*(x_t, "") - eta (eps*(x_t, c) - eps*(x_t, "")) of the original model eps*, and l_retain =
MSE(eps(x_t, E_theta(c_r)), eps*(x_t, E*(c_r))) on prompts of the retained classes.

Inner problem -- trained as it is judged: c_adv = c with k prefix tokens found by *the evaluation's own attack*,
of the same family, budget and objective. ``inner="soft-prompt"`` (the default, the family of the paper's
inner attack): k continuous embeddings, Adam at the ``soft-prompt`` evaluator's learning rate for its number of
steps, from random token embeddings; ``inner="unlearndiffatk"``: the discrete PEZ search of the
``unlearndiffatk`` evaluator (its lr, weight decay and steps). Both minimise UnlearnDiffAtk's loss -- the
denoising error of an image of the concept made by the original model (MSE(eps(x_t, E_theta(prefix + c)),
noise), x_t that image noised at a random t) -- exactly as the evaluation does, with reference images of the
erase prompts generated once by the original model. The previous inner attack (Adam 1e-3 for 5-10 steps: each
embedding entry moved at most ~0.01, a fifth of MiniLM's entry scale) was far weaker than the soft prompt it
was judged by (lr 0.01, 100 steps). ``advunlearn-fast`` keeps the paper's fast variant: one signed-gradient step
of size ``fast_step`` from a random token prefix. The first ``warmup`` fraction of iterations trains without
attack (the paper: 200 of 1000).

Threat model: prompt-level attacks on the text input (soft prefixes bound the discrete ones).
Defaults (quick): k 5, gamma 0.3, eta 1, 100 iterations of batch 8, outer Adam 3e-4, warm-up 20 %, inner =
the soft prompt's 40 steps of lr 0.01; full: 200 iterations of batch 16, inner 100 steps. Departures from the
paper (SD v1.4: 1000 iterations of batch 1, outer Adam 1e-5, inner 30 steps of lr 1e-3, COCO-caption retain
set): fewer iterations with a larger outer learning rate (tiny model, CPU budget); the inner budget is the
evaluation's rather than the paper's (the issue this track answers: train against what is judged); the retain
prompts are those of the other Fashion-MNIST classes; x_t are drawn from a pool of trajectories of the frozen
original model computed once.
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
    encode_prefixed,
    random_token_embeddings,
    trajectory_pool,
)
from bench.tracks.concept_erasure.evaluation import (
    ATTACK_PROFILES,
    AttackParams,
    noised,
)
from bench.tracks.concept_erasure.model import FULL_GUIDANCE

SOFT_LR = 0.01  # the soft-prompt evaluator's (bench_attacks.concept_erasure.soft_prompt.SoftPromptParams.lr)


@dataclasses.dataclass(frozen=True)
class AdvUnlearnParams(ModelParams):
    iterations: int = 100
    batch_size: int = 8
    lr: float = 3e-4
    gamma: float = 0.3
    eta: float = 1.0
    warmup: float = 0.2
    inner: Literal["soft-prompt", "unlearndiffatk"] = "soft-prompt"
    prefix_tokens: int = AttackParams.prefix_tokens
    attack_steps: int = AttackParams.attack_steps  # the evaluation attacks' steps (quick 40, full 100)
    attack_lr: float = SOFT_LR  # soft-prompt's; with inner="unlearndiffatk" set it to that attack's lr (0.1)
    attack_weight_decay: float = 0.1  # unlearndiffatk's (PEZ) only
    fast: bool = False
    fast_step: float = 0.05
    per_prompt: int = 4
    references: int = 2  # reference images (original model) per erase prompt: the inner attack's targets
    ddim_steps: int = 20
    guidance: float = 3.0


def encoder_layers(text_encoder) -> list:
    """The transformer layers' parameters (BERT ``encoder``, CLIP ``text_model.encoder``): what AdvUnlearn trains."""
    encoder = getattr(text_encoder, "encoder", None) or text_encoder.text_model.encoder
    return list(encoder.parameters())


def inner_attack(model, prompts, x_ref, p, gen) -> torch.Tensor:
    """The evaluation's attack against the current model: a prefix (B, k, D) that makes it denoise the original
    model's image of the concept (UnlearnDiffAtk's loss)."""
    x0 = model.to_latents(x_ref)
    if p.inner == "unlearndiffatk" and not p.fast:
        from bench_attacks.concept_erasure.unlearndiffatk import pez_search

        ids = pez_search(model, prompts, x_ref, gen, None, p.prefix_tokens, p.attack_steps, p.attack_lr,
                         p.attack_weight_decay, p.attack_steps)
        return model.word_embeddings().weight[ids.to(model.device)].detach()
    prefix = random_token_embeddings(model, len(prompts), p.prefix_tokens, gen).requires_grad_(True)
    if p.fast:
        x_t, t, noise = noised(model, x0, gen)
        loss = denoise_loss(model, x_t, t, encode_prefixed(model, prompts, prefix), noise)
        (grad,) = torch.autograd.grad(loss, prefix)
        return (prefix - p.fast_step * grad.sign()).detach()
    opt = torch.optim.Adam([prefix], lr=p.attack_lr)
    for _ in range(p.attack_steps):
        x_t, t, noise = noised(model, x0, gen)
        loss = denoise_loss(model, x_t, t, encode_prefixed(model, prompts, prefix), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=[prefix])
        opt.step()
    return prefix.detach()


class AdvUnlearn(ErasureDefense):
    Params = AdvUnlearnParams
    profiles = {"smoke": {**MODEL_PROFILES["smoke"], "iterations": 10, "lr": 1e-3, "batch_size": 4,
                          "attack_steps": ATTACK_PROFILES["smoke"]["attack_steps"], "per_prompt": 1, "references": 1,
                          "ddim_steps": 5},
                "full": {**MODEL_PROFILES["full"], "iterations": 200, "batch_size": 16,
                         "attack_steps": ATTACK_PROFILES["full"]["attack_steps"], "per_prompt": 8,
                         "ddim_steps": 25, "guidance": FULL_GUIDANCE}}

    def fit(self, model, data, ctx) -> None:
        p = self.params
        orig = self.original(model, ctx)
        erase = data.extras["erase_prompts"]
        retain = [prompt for prompt, _ in data.extras["retain_prompts"]]
        esd = trajectory_pool(orig, erase, p.per_prompt, p.ddim_steps, p.guidance, ctx.seed, eta=p.eta)
        # The inner attack's targets: images of the concept by the original model, as the evaluation's references.
        ref_prompts = [q for q in erase for _ in range(p.references)]
        ref_seeds = [10_000 * (ctx.seed + 1) + i for i in range(len(ref_prompts))]
        refs = orig.generate(ref_prompts, ref_seeds, p.ddim_steps, p.guidance)
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
                which = torch.randint(p.references, (p.batch_size,), generator=ctx.generator)
                ref_idx = torch.tensor([erase.index(q) * p.references + int(w) for q, w in zip(prompts, which)])
                prefix = inner_attack(model, prompts, refs[ref_idx], p, ctx.generator)
                cond = encode_prefixed(model, prompts, prefix)
            else:
                cond = model.encode(prompts)
            loss_u = denoise_loss(model, x, t, cond, target)
            xr, tr, which_r, target_r = kept.batch(p.batch_size, ctx.generator)
            loss_r = denoise_loss(model, xr, tr, model.encode([retain[int(j)] for j in which_r]), target_r)
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
