"""UnlearnDiffAtk (Zhang et al., ECCV'24): discrete adversarial prompts against an erased diffusion model."""
from __future__ import annotations

import torch

from bench.tracks.concept_erasure.erasure import encode_prefixed
from bench.tracks.concept_erasure.evaluation import PromptAttack, forbidden_tokens


class UnlearnDiffAtk(PromptAttack):
    """k prefix tokens, optimised as a relaxed one-hot over the vocabulary (softmax of free logits, times the
    word-embedding matrix) with Adam on the denoising loss of a reference image of the concept made by the
    original model (the ``none`` defense's) for the same prompt and seed; then discretised by argmax: the
    discrete prompt is what is generated and judged (UnlearnDiffAtk's protocol; ASR counts a case as a success
    when the unattacked prompt already gives the concept).

    Threat model: any prompt of the form "<k tokens> <concept prompt>"; white-box gradients of the erased model.
    Defaults: k 5, 40 Adam steps of lr 0.1 on the logits (quick), the first 4 plain prompts x 4 seeds.
    Departures: the paper projects onto the one-hot simplex and runs 40 steps per prompt on SD v1.4 with a
    nudity classifier; here softmax relaxation, all cases optimised as one batch, special and [unused] tokens
    excluded.
    """

    kind = "relaxed one-hot over the vocabulary, then argmax"

    def attack(self, model, prompts, x_ref, gen):
        from bench.tracks.concept_erasure.evaluation import optimise_prefix

        p = self.params
        table = model.word_embeddings().weight.detach()
        blocked = torch.zeros(table.shape[0], device=table.device)
        blocked[forbidden_tokens(model).to(table.device)] = float("-inf")
        logits = torch.zeros(len(prompts), p.prefix_tokens, table.shape[0], device=table.device,
                             requires_grad=True)
        losses = optimise_prefix(model, prompts, x_ref, lambda: torch.softmax(logits + blocked, -1) @ table,
                                 [logits], p.attack_steps, p.lr, gen)
        ids = (logits.detach() + blocked).argmax(-1)
        texts = [model.tokenizer.decode(row.tolist()) + " | " + q for row, q in zip(ids, prompts)]
        with torch.no_grad():
            cond = encode_prefixed(model, prompts, table[ids])
        return cond, texts, losses
