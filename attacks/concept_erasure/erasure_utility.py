"""Utility of an erased text-to-image model: the retained classes still come out right, and look real."""
from __future__ import annotations

import torch

from bench.tracks.concept_erasure.evaluation import (
    JUDGE,
    ErasureEvaluator,
    accepted_as,
    decision_rule,
    frechet_distance,
    judge_features,
    judge_of,
    rate_metric,
    save_grid,
    verdict_captions,
)
from bench.tracks.concept_erasure.judge import NONE


class ErasureUtility(ErasureEvaluator):
    """For every retained class (all but the concept), a plain and a paraphrased prompt, seeds 0..n-1:

    - ``retain_acc``: share of those generations the judge accepts as the prompt's class;
    - ``retain_rejected``: share the judge rejects as "not a recognisable item" (broken generations);
    - ``off_concept_rejected``: share *not* accepted as the erased concept (for the unerased model: the judge's
      rejection of off-concept generations, reported with its calibration);
    - ``frechet`` (its ``distance`` field): the Frechet distance between the judge's penultimate features (its
      input to the last linear layer) of those generations and of half the real test images of the retained
      classes (the FID formula on a Fashion-MNIST classifier instead of Inception; comparable only at equal sample
      sizes); its ``floor`` field: the same distance for as many real images of the other half, passed through
      the model's resolution (down-sampled to its side and back): what a perfect generator at that resolution
      would reach with that many samples; its value (records hold values in [0, 1]): floor / distance.
    """

    metric = "retain_acc"

    def evaluate(self, model, data, ctx):
        p = self.params
        judge = judge_of(ctx, data, model)
        cases = [(prompt, c, s) for prompt, c in data.extras["retain_prompts"] for s in range(p.seeds)]
        prompts = [c[0] for c in cases]
        images = model.generate(prompts, [c[2] for c in cases], p.steps, p.guidance)
        classes = torch.tensor([c[1] for c in cases])
        label, _ = judge.verdict(images, ctx.device)
        hits = accepted_as(judge, images, classes, ctx.device)
        real = data.test_x[data.test_y != data.extras["concept_class"]]
        # Reference half, and the other half as a perfect generator's output at the same sample size.
        reference, perfect = real[1::2], real[0::2][:len(images)]
        side = model.latent_shape[-1]
        if model.vae is None and side != perfect.shape[-1]:
            perfect = torch.nn.functional.interpolate(perfect, size=(side, side), mode="area")
        ref_f = judge_features(judge, reference, ctx.device)
        floor = frechet_distance(judge_features(judge, perfect, ctx.device), ref_f)
        fid = frechet_distance(judge_features(judge, images, ctx.device), ref_f)
        gen = (f"{len(set(prompts))} prompts of the {len(set(classes.tolist()))} retained classes x seeds "
               f"0..{p.seeds - 1}, DDIM {p.steps} steps, guidance {p.guidance:g}; judge: {JUDGE}; rule: "
               f"{decision_rule(judge)}")
        metrics = [
            rate_metric("retain_acc", hits, f"share of generations accepted as the prompt's class; {gen}",
                        cluster_size=p.seeds),
            rate_metric("retain_rejected", label == NONE, f"share of generations the judge rejects as not a "
                                                         f"recognisable item; {gen}", cluster_size=p.seeds),
            rate_metric("off_concept_rejected", label != data.extras["concept_class"],
                        f"share of generations for the other classes' prompts not accepted as the concept "
                        f"{data.extras['concept']!r}; {gen}", cluster_size=p.seeds),
            # Records hold values in [0, 1]: the distance itself is the metric's ``distance`` field.
            {"name": "frechet", "value": min(1.0, floor / max(fid, 1e-12)), "n": len(images), "distance": fid,
             "floor": floor,
             "definition": f"distance: the Frechet distance between the judge's penultimate features of the "
                           f"generations ({gen}) and of {len(reference)} real test images of the retained "
                           f"classes (every second one); floor: the same for {len(perfect)} of the others, "
                           f"down-sampled to {side}x{side} and back; "
                           f"value: floor / distance (1: as close to the real images as a perfect generator at "
                           f"this resolution)"}]
        if ctx.artifacts is not None:
            rows = [images[i:i + p.seeds] for i in range(0, len(images), p.seeds)]
            save_grid(ctx.artifacts, "retained", rows, sorted(set(prompts), key=prompts.index), p.seeds,
                      verdict_captions(judge, images, ctx.device))
        return metrics
