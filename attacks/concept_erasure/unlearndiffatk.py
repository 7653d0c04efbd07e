"""UnlearnDiffAtk (Zhang et al., ECCV'24): discrete adversarial prompts against an erased diffusion model, found
by a projected discrete search (PEZ, Wen et al., NeurIPS'23)."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from bench.tracks.concept_erasure.erasure import encode_prefixed
from bench.tracks.concept_erasure.evaluation import (
    ATTACK_PROFILES,
    AttackParams,
    PromptAttack,
    noised,
    prefix_text,
    typeable_tokens,
)


@dataclasses.dataclass(frozen=True)
class UnlearnDiffAtkParams(AttackParams):
    lr: float = 0.1  # AdamW on the continuous prefix (PEZ's 0.1)
    weight_decay: float = 0.1  # PEZ's and UnlearnDiffAtk's 0.1


class UnlearnDiffAtk(PromptAttack):
    """k prefix tokens that a user can type, optimised so that the erased model denoises the original model's
    image of the concept for the same prompt and seed (UnlearnDiffAtk's loss: MSE(eps(x_t, t, E(prefix + p)),
    noise), x_t the reference noised at a random t), by PEZ's projected search:

    continuous prefix embeddings P (one per case and position) start at random typeable tokens; every step P is
    projected to the nearest typeable vocabulary embeddings (cosine similarity), the loss and its gradient are
    taken *at the projection*, and that gradient updates P (AdamW). What is evaluated is always the projected
    token sequence, written out as text and tokenized again -- a prompt a user can type -- so what is optimised
    is what is judged (the previous relaxed one-hot over 30,522 logits stayed near uniform after 40 steps, and
    its argmax threw away what had been optimised).

    Why PEZ rather than the paper's scheme or Gumbel-softmax: all three evaluate a discrete prompt in the forward
    pass; PEZ's variable is one embedding (384 numbers) per position instead of a distribution over the whole
    vocabulary, so Adam's per-coordinate steps move it at the embeddings' own scale, and it needs no temperature
    schedule. The rest is the paper's protocol (``PromptAttack``): the unattacked prompt is the first candidate;
    the current projection is generated with the case's seed and judged every ``check_every`` steps; a case stops
    at its first success (UnlearnDiffAtk's early stop); failures report the best iterate.

    Threat model: any prompt "<k typeable tokens> <concept prompt>"; white-box gradients of the erased model; the
    judge is queried at the checkpoints (as UnlearnDiffAtk queries its classifier).
    Defaults: k 5, AdamW lr 0.1 and weight decay 0.1 (PEZ's; UnlearnDiffAtk: Adam 0.01 with decay 0.1 on its
    simplex variable), 40 steps judged every 10 (quick; full 100), the first 4 plain prompts x 4 seeds.
    Departures: UnlearnDiffAtk optimises a point of the one-hot simplex per position (projected onto the simplex,
    a sampled one-hot in the forward pass, straight-through gradients), 40 steps at each of up to 50 fixed
    timesteps with a check after each block, on SD v1.4 with an ImageNet or nudity classifier; here PEZ's
    projection, one random timestep per step, a check every ``check_every`` steps, all cases optimised as one
    batch, and word pieces, special and [unused] tokens excluded.
    """

    Params = UnlearnDiffAtkParams
    profiles = ATTACK_PROFILES
    kind = "PEZ: continuous embeddings projected to the nearest typeable tokens, gradient at the projection"

    def describe_budget(self) -> str:
        return super().describe_budget() + f" (AdamW, weight decay {self.params.weight_decay:g})"

    def attack(self, model, prompts, x_ref, gen, book, data):
        p = self.params
        pez_search(model, prompts, x_ref, gen, book, p.prefix_tokens, p.attack_steps, p.lr, p.weight_decay,
                   p.check_every)


def nearest_tokens(prefix: torch.Tensor, allowed: torch.Tensor, normed: torch.Tensor) -> torch.Tensor:
    """Ids (B, k) of the allowed vocabulary embeddings nearest (cosine) to each prefix embedding."""
    sims = F.normalize(prefix.detach(), dim=-1) @ normed.T
    return allowed[sims.argmax(-1).cpu()]


def pez_search(model, prompts, x_ref, gen, book, k, steps, lr, weight_decay, check_every, extra=None):
    """The projected search shared by the evaluation attack and AdvUnlearn's discrete inner attack. With a
    ``book`` it checks candidates and stops cases that succeed; returns the final projected ids (B, k)."""
    table = model.word_embeddings().weight.detach()
    allowed = typeable_tokens(model)
    normed = F.normalize(table[allowed.to(table.device)], dim=-1)
    start = allowed[torch.randint(len(allowed), (len(prompts), k), generator=gen)]
    prefix = table[start.to(table.device)].clone().requires_grad_(True)
    opt = torch.optim.AdamW([prefix], lr=lr, weight_decay=weight_decay)
    x0 = model.to_latents(x_ref)
    ids = start
    for step in range(1, steps + 1):
        act = book.active() if book is not None else torch.arange(len(prompts))
        if not len(act):
            break
        dev = act.to(table.device)
        ids = nearest_tokens(prefix, allowed, normed)
        proj = table[ids[act].to(table.device)].detach().requires_grad_(True)
        x_t, t, noise = noised(model, x0[dev], gen)
        cond = encode_prefixed(model, [prompts[i] for i in act.tolist()], proj)
        loss = (model.noise_pred(x_t, t, cond) - noise).pow(2).mean()
        (grad,) = torch.autograd.grad(loss, proj)
        prefix.grad = torch.zeros_like(prefix)
        prefix.grad[dev] = grad
        opt.step()
        if book is not None:
            book.trace.append(loss.item())
            if step % check_every == 0 or step == steps:
                act = book.active()
                ids = nearest_tokens(prefix, allowed, normed)
                book.check(step, act, [prefix_text(model, ids[i], prompts[i]) for i in act.tolist()])
    return nearest_tokens(prefix, allowed, normed)
