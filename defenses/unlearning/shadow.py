"""Shadow models for likelihood-ratio membership inference (LiRA, U-LiRA): helpers, not unlearning methods.

The track's evaluators request them with ``ctx.models_of([("shadow", {"half": k, ...}), ...])`` (and
``"shadow-unlearn"``), so they are ordinary cached models of the runner: trained once per (scenario, recipe, k),
with seed 0, and reused by every method's evaluation at every run seed (``shared_across_seeds``).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import torch

from bench.errors import UsageError
from bench.plugins import Splits
from bench.tracks.image_robustness.training import train_classifier
from bench.tracks.unlearning.scenarios import (
    ORIGIN,
    TRAIN_FIELDS,
    TrainParams,
    UnlearningDefense,
    membership_sets,
    shadow_in,
    shadow_pool,
    train_fields,
)


@dataclass(frozen=True)
class ShadowParams(TrainParams):
    half: int = 0  # which shadow: 0 .. n_shadows - 1
    n_shadows: int = 8  # how many shadows share the pool (each candidate is IN exactly half of them)
    shadow_seed: int = 0  # the draw of the halves (with the scenario seed)


def shadow_world(data: Splits, half: int, n_shadows: int, shadow_seed: int) -> Splits:
    """The scenario as shadow ``half`` sees it: its training set is its random half of the pool (training set +
    class-matched non-members); its forget set is the candidates (forget set + non-members) in that half; the
    test set is the scenario's. Used to train a shadow (all of its training set) and to run an unlearning
    method on it (U-LiRA)."""
    x, y, candidates = shadow_pool(data)
    inside = torch.from_numpy(shadow_in(len(y), n_shadows, int(data.extras["scenario"]["seed"]), shadow_seed)[half])
    members = torch.nonzero(inside).squeeze(1)
    position = torch.full((len(y),), -1, dtype=torch.int64)
    position[members] = torch.arange(len(members))
    forget = position[candidates[inside[candidates]]]
    extras = {"forget_idx": torch.sort(forget).values,
              "scenario": {**data.extras["scenario"], "n_forget": len(forget), "n_train": len(members),
                           "shadow": half, "n_shadows": n_shadows}}
    if "forget_classes" in data.extras:
        extras["forget_classes"] = data.extras["forget_classes"]
    if "clean_train_y" in data.extras:  # the noisy candidates' true labels (unused by the methods)
        ms = membership_sets(data)
        true = torch.cat([data.extras["clean_train_y"], data.test_y[ms.nonmember]])
        extras["clean_train_y"] = true[members]
    return Splits(data.spec, x[members], y[members], data.test_x, data.test_y, extras)


_REGISTRY = []


def registry():
    """One registry for the process (reading the entry points once)."""
    from bench.registry import Registry

    if not _REGISTRY:
        _REGISTRY.append(Registry())
    return _REGISTRY[0]


def _check_half(name: str, half: int, n_shadows: int) -> None:
    if n_shadows < 2:
        raise UsageError(f"{name}: n_shadows must be at least 2 (IN and OUT shadows for every candidate)")
    if not 0 <= half < n_shadows:
        raise UsageError(f"{name}: half must be in 0..{n_shadows - 1}, got {half}")


class Shadow(UnlearningDefense):
    """A LiRA shadow model (Carlini et al., S&P'22): the original's recipe, trained on shadow ``half``'s random
    half of the candidate pool (the training set plus the class-matched test non-members; every sample is in
    exactly half of the ``n_shadows`` shadows, drawn by the scenario seed and ``shadow_seed``).

    Not a method: a helper the membership-inference evaluators request; run directly it is just another
    classifier. Departure from LiRA: the pool includes the held-out non-members so that they, too, have IN
    shadows (online LiRA needs both Gaussians for every scored example); the shadows therefore train on
    (n_train + n_nonmembers) / 2 samples instead of the target's n_train.
    """

    Params = ShadowParams
    shared_across_seeds = True

    def check(self) -> None:
        _check_half(self.name, self.params.half, self.params.n_shadows)

    def fit(self, model, data, ctx) -> None:
        p = self.params
        world = shadow_world(data, p.half, p.n_shadows, p.shadow_seed)
        train_classifier(model, world, ctx, self.recipe(data), desc=f"{self.name} {p.half}/{p.n_shadows}")


@dataclass(frozen=True)
class ShadowUnlearnParams:
    method: str = "finetune"  # the unlearning defense run on the shadow
    method_params: str = "{}"  # its hyperparameters, as canonical JSON (all its fields)
    half: int = 0
    n_shadows: int = 8
    shadow_seed: int = 0


class ShadowUnlearn(UnlearningDefense):
    """U-LiRA's shadow (Hayes et al., 2024, "Inexact unlearning needs more careful evaluations"): the unlearning
    ``method`` (with ``method_params``) run on LiRA shadow ``half``, whose forget set is the candidates it was
    trained on (forget set and non-members in its half, so that every candidate is unlearned in about half of
    the shadows and never seen in the others). ``original`` is the shadow itself (nothing unlearned);
    ``retrain`` trains the recipe from scratch on the shadow's remaining data.
    """

    Params = ShadowUnlearnParams
    shared_across_seeds = True
    profiles: dict = {}
    _cached = None

    def _method(self):
        from bench.hparams import build_params
        from bench.registry import Registry

        if self._cached is not None:
            return self._cached

        cls = Registry().load("defense", self.params.method)
        if not issubclass(cls, UnlearningDefense) or issubclass(cls, (Shadow, ShadowUnlearn)):
            raise UsageError(f"{self.name}: {self.params.method} is not an unlearning method of this track")
        try:
            overrides = json.loads(self.params.method_params)
        except ValueError as exc:
            raise UsageError(f"{self.name}: method_params is not JSON: {exc}") from None
        self._cached = cls(build_params(cls.Params, self.params.method, overrides))
        return self._cached

    def check(self) -> None:
        _check_half(self.name, self.params.half, self.params.n_shadows)
        self._method().check()

    def check_data(self, spec) -> None:
        self._method().check_data(spec)

    def build(self, spec):
        model = self._method().build(spec)
        from bench.hparams import as_dict

        setattr(model, ORIGIN, {"defense": self.name, "params": as_dict(self.params)})
        return model

    def fit(self, model, data, ctx) -> None:
        p = self.params
        method = self._method()
        fields = train_fields(method.params)
        shadow = ctx.model_of("shadow", half=p.half, n_shadows=p.n_shadows, shadow_seed=p.shadow_seed, **fields)
        if p.method == "original":
            model.load_state_dict(shadow.state_dict())
            return
        world = shadow_world(data, p.half, p.n_shadows, p.shadow_seed)

        def model_of(name, **overrides):
            if name == "original" and {k: v for k, v in overrides.items() if k in TRAIN_FIELDS} == fields:
                return shadow
            raise UsageError(f"{self.name}: {p.method} asked for {name!r}, which has no shadow counterpart")

        shadow_ctx = dataclasses.replace(ctx, model_of=model_of, history=ctx.history)
        method.fit(model, world, shadow_ctx)
        model.eval()


def method_params_json(params) -> str:
    """A method's params as the canonical JSON ``ShadowUnlearn`` takes."""
    from bench.hparams import as_dict

    return json.dumps(as_dict(params), sort_keys=True, separators=(",", ":"))

