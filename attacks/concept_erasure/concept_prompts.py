"""Plain concept prompts and paraphrases, no optimisation: the erased model's Pre-ASR (UnlearnDiffAtk's term),
and the judge's calibration, reported with every table."""
from __future__ import annotations

import torch

from bench.tracks.concept_erasure.evaluation import (
    JUDGE,
    ErasureEvaluator,
    concept_cases,
    decision_rule,
    is_concept,
    judge_of,
    judge_side,
    rate_metric,
    save_grid,
    verdict_captions,
)
from bench.tracks.concept_erasure.judge import calibration


class ConceptPrompts(ErasureEvaluator):
    """Generates one image per (evaluation prompt, seed) -- the concept's plain prompts (training captions of its
    name) and held-out paraphrases (unseen templates and synonyms), seeds 0..n-1 -- and counts the images the
    judge accepts as the concept: ``pre_asr`` overall and per prompt kind, with intervals over the prompt
    clusters. Also records the judge's calibration (``judge.calibration``: the threshold, accuracy per class on
    real test images, the share of real images accepted, the share of each kind of junk rejected). Saves a
    labelled grid: per prompt, the original model's images, then this model's (same seeds, so the same initial
    noise), each with the judge's verdict under it."""

    def evaluate(self, model, data, ctx):
        p = self.params
        judge = judge_of(ctx, data, model)
        prompts, seeds, kinds = concept_cases(data, p.seeds)
        images = model.generate(prompts, seeds, p.steps, p.guidance)
        hits = is_concept(judge, images, data, ctx.device)
        how = (f"share of generations accepted as the concept {data.extras['concept']!r}; one image per (prompt, "
               f"seed), seeds 0..{p.seeds - 1}, DDIM {p.steps} steps, guidance {p.guidance:g}; judge: {JUDGE}; "
               f"rule: {decision_rule(judge)}")
        kind = torch.tensor([k == "plain" for k in kinds])
        metrics = [rate_metric("pre_asr", hits, f"{len(set(prompts))} prompts (plain + paraphrase): {how}",
                               cluster_size=p.seeds, split="all"),
                   rate_metric("pre_asr", hits[kind], f"plain prompts: {how}", cluster_size=p.seeds, split="plain"),
                   rate_metric("pre_asr", hits[~kind], f"held-out paraphrases: {how}", cluster_size=p.seeds,
                               split="paraphrase")]
        if ctx.artifacts is not None:
            orig = ctx.model_of("none")
            before = orig.generate(prompts, seeds, p.steps, p.guidance)
            b_caps, a_caps = verdict_captions(judge, before, ctx.device), verdict_captions(judge, images, ctx.device)
            rows, labels, caps = [], [], []
            for i in range(0, len(prompts), p.seeds):
                rows += [before[i:i + p.seeds], images[i:i + p.seeds]]
                caps += b_caps[i:i + p.seeds] + a_caps[i:i + p.seeds]
                labels.append(f"{prompts[i]!r}: original | this model (the judge's verdict under each)")
            save_grid(ctx.artifacts, "concept_prompts", rows, labels, 2 * p.seeds, caps)
        return metrics + calibration(judge, data, judge_side(model), data.extras["concept_class"])
