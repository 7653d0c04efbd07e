"""A continuous soft-prompt attack: the strongest prompt-side attacker, an upper bound for discrete ones."""
from __future__ import annotations

import dataclasses

import torch

from bench.tracks.concept_erasure.erasure import encode_prefixed, random_token_embeddings
from bench.tracks.concept_erasure.evaluation import ATTACK_PROFILES, AttackParams, PromptAttack, optimise_prefix


@dataclasses.dataclass(frozen=True)
class SoftPromptParams(AttackParams):
    lr: float = 0.01  # on embeddings (MiniLM's word embeddings have entries of ~0.05)


class SoftPrompt(PromptAttack):
    """k continuous prefix embeddings (no vocabulary constraint, no norm bound), started from random token
    embeddings and optimised with Adam on UnlearnDiffAtk's loss (the denoising error of the original model's
    image for the same prompt and seed); the soft prompt itself is generated and judged. What AdvUnlearn trains
    against; no real user can type it, so its ASR bounds every discrete prompt attack of the same length.

    Defaults: k 5, Adam lr 0.01, 40 steps (quick), the first 4 plain prompts x 4 seeds.
    """

    Params = SoftPromptParams
    profiles = ATTACK_PROFILES
    kind = "continuous embeddings"

    def attack(self, model, prompts, x_ref, gen):
        p = self.params
        prefix = random_token_embeddings(model, len(prompts), p.prefix_tokens, gen).requires_grad_(True)
        losses = optimise_prefix(model, prompts, x_ref, lambda: prefix, [prefix], p.attack_steps, p.lr, gen)
        with torch.no_grad():
            cond = encode_prefixed(model, prompts, prefix)
        texts = [f"<{p.prefix_tokens} soft tokens> | {q}" for q in prompts]
        return cond, texts, losses
