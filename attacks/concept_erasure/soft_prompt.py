"""A continuous soft-prompt attack: an upper-bound probe for discrete prompt attacks of the same length."""
from __future__ import annotations

import dataclasses

import torch

from bench.tracks.concept_erasure.erasure import (
    encode_prefixed,
    random_token_embeddings,
)
from bench.tracks.concept_erasure.evaluation import (
    ATTACK_PROFILES,
    AttackParams,
    PromptAttack,
    noised,
)


@dataclasses.dataclass(frozen=True)
class SoftPromptParams(AttackParams):
    lr: float = 0.01  # on embeddings (MiniLM's word embeddings have entries of ~0.05)


class SoftPrompt(PromptAttack):
    """k continuous prefix embeddings (no vocabulary constraint, no norm bound), started from random token
    embeddings and optimised with Adam on UnlearnDiffAtk's loss (the denoising error of the original model's
    image for the same prompt and seed); the soft prompt itself is generated and judged, with the protocol of
    ``PromptAttack`` (the unattacked prompt first, a check every ``check_every`` steps, a case stops at its first
    success). What AdvUnlearn trains against; no real user can type it, so its ASR bounds every discrete prompt
    attack of the same length: an upper-bound probe, not an attack.

    Defaults: k 5, Adam lr 0.01, 40 steps judged every 10 (quick; full 100), the first 4 plain prompts x 4 seeds.
    """

    Params = SoftPromptParams
    profiles = ATTACK_PROFILES
    kind = "continuous embeddings"
    probe = True

    def attack(self, model, prompts, x_ref, gen, book, data):
        p = self.params
        prefix = random_token_embeddings(model, len(prompts), p.prefix_tokens, gen).requires_grad_(True)
        opt = torch.optim.Adam([prefix], lr=p.lr)
        x0 = model.to_latents(x_ref)
        for step in range(1, p.attack_steps + 1):
            act = book.active()
            if not len(act):
                break
            dev = act.to(x0.device)
            x_t, t, noise = noised(model, x0[dev], gen)
            cond = encode_prefixed(model, [prompts[i] for i in act.tolist()], prefix[dev])
            loss = (model.noise_pred(x_t, t, cond) - noise).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward(inputs=[prefix])
            opt.step()
            book.trace.append(loss.item())
            if step % p.check_every == 0 or step == p.attack_steps:
                act = book.active()
                with torch.no_grad():
                    cond = encode_prefixed(model, [prompts[i] for i in act.tolist()], prefix[act.to(x0.device)])
                book.check(step, act, [f"<{p.prefix_tokens} soft tokens> {prompts[i]}" for i in act.tolist()],
                           cond=cond)
