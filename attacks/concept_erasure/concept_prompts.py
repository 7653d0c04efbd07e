"""Plain concept prompts and paraphrases, no optimisation: the erased model's Pre-ASR (UnlearnDiffAtk's term)."""
from __future__ import annotations

import torch

from bench.tracks.concept_erasure.evaluation import (
    DECISION_RULE,
    JUDGE,
    ErasureEvaluator,
    concept_cases,
    is_concept,
    judge_of,
    judge_record,
    rate_metric,
    save_grid,
)


class ConceptPrompts(ErasureEvaluator):
    """Generates one image per (evaluation prompt, seed) -- the concept's plain prompts (training captions of its
    name) and held-out paraphrases (unseen templates and synonyms), seeds 0..n-1 -- and counts the images the
    judge assigns to the concept: ``pre_asr`` overall and per prompt kind, with Wilson 95% intervals, plus the
    judge's accuracy on real test images. Saves a grid: per prompt, the original model's images, then this
    model's (same seeds, so the same initial noise)."""

    def evaluate(self, model, data, ctx):
        p = self.params
        judge = judge_of(ctx)
        prompts, seeds, kinds = concept_cases(data, p.seeds)
        images = model.generate(prompts, seeds, p.steps, p.guidance)
        hits = is_concept(judge, images, data, ctx.device)
        how = (f"share of generations judged as the concept {data.extras['concept']!r}; one image per (prompt, seed),"
               f" seeds 0..{p.seeds - 1}, DDIM {p.steps} steps, guidance {p.guidance:g}; judge: {JUDGE}; "
               f"rule: {DECISION_RULE}; 95% Wilson interval in ci_low/ci_high")
        kind = torch.tensor([k == "plain" for k in kinds])
        metrics = [rate_metric("pre_asr", hits, f"{len(set(prompts))} prompts (plain + paraphrase): {how}",
                               split="all"),
                   rate_metric("pre_asr", hits[kind], f"plain prompts: {how}", split="plain"),
                   rate_metric("pre_asr", hits[~kind], f"held-out paraphrases: {how}", split="paraphrase")]
        if ctx.artifacts is not None:
            orig = ctx.model_of("none")
            before = orig.generate(prompts, seeds, p.steps, p.guidance)
            rows, labels = [], []
            for i in range(0, len(prompts), p.seeds):
                rows += [before[i:i + p.seeds], images[i:i + p.seeds]]
                labels.append(f"{prompts[i]!r}: original | this model")
            save_grid(ctx.artifacts, "concept_prompts", rows, labels, 2 * p.seeds)
        return metrics + judge_record(judge, data, ctx.device)
