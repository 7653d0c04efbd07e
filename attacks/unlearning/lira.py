"""Likelihood-ratio membership inference with shadow models: LiRA (Carlini et al., S&P'22) and its unlearning
form U-LiRA (Hayes et al., 2024), on the forget set of an unlearning scenario."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from bench.plugins import Evaluator
from bench.tracks.unlearning import TRACK
from bench.tracks.unlearning.membership import (
    attack_metrics,
    candidate_parts,
    gaussians,
    offline_score,
    online_score,
    phi,
)
from bench.tracks.unlearning.scenarios import (
    TRAIN_FIELDS,
    membership_sets,
    origin_of,
    shadow_in,
    shadow_pool,
)


@dataclass(frozen=True)
class Params:
    n_shadows: int = 8  # shadow models; every candidate is IN exactly half of them
    shadow_seed: int = 0  # the draw of the halves (with the scenario seed)
    variance: Literal["auto", "global", "per-example"] = "auto"  # auto: per-example from 64 shadows on
    member_fpr: float = 0.05  # the stated false-positive rate of the calibrated "member" threshold
    resamples: int = 200  # bootstrap resamples of each interval
    bootstrap_seed: int = 0


PROFILES = {"smoke": {"n_shadows": 4, "resamples": 100}, "quick": {"n_shadows": 8}, "full": {"n_shadows": 16}}


class _ShadowAttack(Evaluator):
    track = TRACK
    consumes = "classifier"
    Params = Params
    profiles = PROFILES

    def _recipe(self, model) -> dict:
        """The training fields of the evaluated model's method (its shadows and original use the same)."""
        params = origin_of(model).get("params", {})
        return {k: params[k] for k in TRAIN_FIELDS if k in params}

    def _variance(self) -> str:
        v = self.params.variance
        return ("per-example" if self.params.n_shadows >= 64 else "global") if v == "auto" else v

    def _candidates(self, data):
        """(pool x, pool y, candidate pool positions, [forget, cal, eval] positions into the candidates)."""
        x, y, candidates = shadow_pool(data)
        return x, y, candidates, candidate_parts(membership_sets(data))

    def _phis(self, models, x, y, ctx) -> np.ndarray:
        return np.stack([phi(ctx.logits(m, x), y) for m in models])

    def _shadows(self, recipe: dict, ctx):
        p = self.params
        return ctx.models_of([("shadow", dict(half=k, n_shadows=p.n_shadows, shadow_seed=p.shadow_seed, **recipe))
                              for k in range(p.n_shadows)])

    def _inside(self, data, n_pool, candidates) -> np.ndarray:
        p = self.params
        return shadow_in(n_pool, p.n_shadows, int(data.extras["scenario"]["seed"]), p.shadow_seed)[:, candidates]

    def _metrics(self, definition_id, text, scores, power, parts):
        forget, cal, ev = parts
        return attack_metrics(definition_id, text, scores[forget], scores[cal], scores[ev], power[forget],
                              power[ev], self.params.member_fpr, self.params.resamples, self.params.bootstrap_seed)


class LiRA(_ShadowAttack):
    """LiRA (Carlini, Chien, Nasr, Song, Terzis & Tramer, S&P'22), online and offline, on the forget set.

    Shadows: ``n_shadows`` models with the evaluated method's training recipe (its original's), each trained on
    a random half of the pool (training set + class-matched test non-members), every candidate IN exactly half
    of them (``ctx.models_of([("shadow", {"half": k, ...}), ...])``: cached, shared by every method, evaluation
    and run seed of the scenario: the attack is fixed, the seeds vary the evaluated models). Statistic:
    phi = log(p_y / (1 - p_y)) of the example's label (the training label; the noisy forget set's corrupted one,
    and its non-members corrupted alike). Per example, Gaussians of phi under
    its IN and OUT shadows (median means; the pooled within-example variance below 64 shadows, per-example
    from 64, as LiRA recommends for few shadows).

    - ``lira-online``: log N(phi; IN) - log N(phi; OUT);
    - ``lira-offline``: log P(OUT statistic <= phi), one-sided (no IN shadows needed).

    Reported (``bench.tracks.unlearning.membership``): AUC and TPR at 1% / 0.1% FPR of the forget set vs held-out
    class-matched non-members on the evaluated model, each with a bootstrap interval; the share of the forget set
    called member at a threshold calibrated on other held-out non-members to ``member_fpr``; and the attack's
    power on the original model (the validity gate). Retrain's numbers are the goal.

    Departures from LiRA: no query augmentations (no flips/shifts: digit and clothing images); the pool adds
    the held-out non-members to the training set (so they have IN shadows too), so shadows train on about
    (n_train + n_nonmembers) / 2 samples while the target trained on n_train; the global variance is pooled
    within examples (the reference code pools raw values); the offline test is one-sided (as in the paper; the
    reference code's is two-sided).
    """

    def evaluate(self, model, data, ctx):
        recipe = self._recipe(model)
        x, y, candidates, parts = self._candidates(data)
        xc, yc = x[candidates], y[candidates]
        shadows = self._shadows(recipe, ctx)
        fit = gaussians(self._phis(shadows, xc, yc, ctx), self._inside(data, len(y), candidates), self._variance())
        target = phi(ctx.logits(model, xc), yc)
        original = phi(ctx.logits(ctx.model_of("original", **recipe), xc), yc)
        shadows_text = f"{self.params.n_shadows} shadows on random halves, {self._variance()} variance"
        metrics = []
        for definition_id, score, what in (
                ("lira-online", online_score, "LiRA online: log N(phi; IN) - log N(phi; OUT)"),
                ("lira-offline", offline_score, "LiRA offline: log P(OUT phi <= phi), one-sided")):
            metrics += self._metrics(definition_id, f"{what}, {shadows_text}", score(target, fit),
                                     score(original, fit), parts)
        return metrics


class ULiRA(_ShadowAttack):
    """U-LiRA (Hayes, Shumailov, Triantafillou, Khalifa & Papernot, 2024, "Inexact unlearning needs more
    careful evaluations"): does the forget set look *unlearned by this method* or *never seen*?

    Shadows: the evaluated method itself run on each LiRA shadow (``ctx.model_of("shadow-unlearn", ...)``), the
    shadow's forget set being the candidates (forget set + class-matched non-members) in its half. Per example,
    Gaussians of phi under the unlearned shadows that had it in their forget set (U) and under those that never
    saw it (OUT); score log N(phi; U) - log N(phi; OUT) on the evaluated model. A perfect unlearner makes U and
    OUT the same distribution: AUC 0.5. The validity gate is LiRA-online's power on the original (the same
    shadows before unlearning), since the U-LiRA scores of a good method carry no signal even on the original.

    Cost: ``n_shadows`` runs of the method per (scenario, seed) -- for ``retrain``, ``n_shadows`` trainings;
    for ``original`` nothing (its U-shadows are the shadows: U-LiRA is then LiRA online). The method and its
    hyperparameters come from the evaluated model (the defense that built it); a model of unknown origin is
    scored as ``original``. Departures: Hayes et al. train several target models per forget set and average
    over many forget sets; we evaluate the one target model per seed against per-example Gaussians.
    """

    def evaluate(self, model, data, ctx):
        from bench_defenses.unlearning.shadow import method_params_json, registry

        p = self.params
        recipe = self._recipe(model)
        origin = origin_of(model)
        method = origin.get("defense", "original")
        x, y, candidates, parts = self._candidates(data)
        xc, yc = x[candidates], y[candidates]
        inside = self._inside(data, len(y), candidates)
        shadows = self._shadows(recipe, ctx)
        lira_fit = gaussians(self._phis(shadows, xc, yc, ctx), inside, self._variance())
        if method == "original":
            unlearned = shadows
        else:
            from bench.hparams import build_params

            cls = registry().load("defense", method)
            method_json = method_params_json(build_params(cls.Params, method, origin.get("params", {})))
            unlearned = ctx.models_of([("shadow-unlearn", dict(method=method, method_params=method_json, half=k,
                                                                n_shadows=p.n_shadows, shadow_seed=p.shadow_seed))
                                       for k in range(p.n_shadows)])
        fit = gaussians(self._phis(unlearned, xc, yc, ctx), inside, self._variance())
        target = phi(ctx.logits(model, xc), yc)
        original = phi(ctx.logits(ctx.model_of("original", **recipe), xc), yc)
        text = (f"U-LiRA: log N(phi; unlearned by {method}) - log N(phi; never seen), {p.n_shadows} {method} runs "
                f"on LiRA shadows, {self._variance()} variance; gate = LiRA online on the original")
        metrics = self._metrics("u-lira", text, online_score(target, fit), online_score(original, lira_fit), parts)
        return metrics
