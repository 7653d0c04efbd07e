"""The three plugin kinds: Defense, Attack, Dataset.

A plugin is one class. It declares its track and capabilities as class attributes, a frozen ``Params``
dataclass whose every field has a default, optional per-profile overrides, and implements at most three
methods. It is registered by one entry-point line (group ``bench.defenses``, ``bench.attacks`` or
``bench.datasets``); the entry-point name becomes ``plugin.name``.

This module imports no torch at import time, so the CLI can describe plugins without loading it.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from bench.context import AttackContext, EvalContext, TrainContext

PROFILES = ("smoke", "quick", "full")
IMAGE_TRACK = "image-robustness"


@dataclasses.dataclass(frozen=True)
class NoParams:
    """For plugins without hyperparameters."""


class Plugin(ABC):
    kind: ClassVar[str]
    track: ClassVar[str]
    modality: ClassVar[str] = "image"
    Params: ClassVar[type] = NoParams
    # Profile name -> field overrides applied on top of the defaults (quick is usually the defaults).
    profiles: ClassVar[dict[str, dict[str, Any]]] = {}
    # Paper numbers for the leaderboard's "reported" column, kept apart from ours:
    # {dataset: {column: (value, "source")}}
    reported: ClassVar[dict[str, dict[str, tuple[float, str]]]] = {}
    name: str = ""  # the entry-point name, set by the registry

    def __init__(self, params: Any = None):
        self.params = params if params is not None else self.Params()

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        """What the runner checks for compatibility before any compute."""
        return {"track": cls.track, "modality": cls.modality}


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about its data."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    bounds: tuple[float, float] = (0.0, 1.0)


@dataclasses.dataclass
class Splits:
    """Train and test tensors: x float in the dataset's bounds, shape (N, *input_shape); y int64.
    ``extras`` holds what a track adds to the data (an unlearning scenario's forget-set indices, a domain-shift
    benchmark's target domains), read by that track's defenses and evaluators."""

    spec: DataSpec
    train_x: "torch.Tensor"
    train_y: "torch.Tensor"
    test_x: "torch.Tensor"
    test_y: "torch.Tensor"
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)


class Dataset(Plugin):
    kind = "dataset"
    tracks: ClassVar[tuple[str, ...]] = (IMAGE_TRACK,)
    input_shape: ClassVar[tuple[int, ...]]
    num_classes: ClassVar[int] = 10
    bounds: ClassVar[tuple[float, float]] = (0.0, 1.0)
    # The field's conventional budgets, per norm: headline columns of the leaderboard...
    epsilons: ClassVar[dict[str, tuple[float, ...]]] = {}
    # ...and the finer grid for robustness curves (attacks with ``curve = True``).
    sweep: ClassVar[dict[str, tuple[float, ...]]] = {}

    @property
    def track(self) -> str:  # type: ignore[override]
        return self.tracks[0]

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        return {"tracks": cls.tracks, "modality": cls.modality, "norms": tuple(cls.epsilons)}

    def spec(self) -> DataSpec:
        return DataSpec(self.name, tuple(self.input_shape), self.num_classes, tuple(self.bounds))

    def check(self) -> None:
        """Cheap availability check; raise ``bench.errors.DataMissing`` with one clear line."""

    @abstractmethod
    def load(self) -> Splits:
        """Load (and subsample per ``self.params``) the data as tensors."""


class Defense(Plugin):
    kind = "defense"
    produces: ClassVar[str] = "classifier"
    # Further tracks whose evaluators apply to this defense's models (a domain-generalisation classifier is
    # also attacked in the image-robustness grid); records are filed under the evaluator's track.
    also_tracks: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def all_tracks(cls) -> tuple[str, ...]:
        return (cls.track, *cls.also_tracks)

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        return {**super().capabilities(), "produces": cls.produces, "also_tracks": cls.also_tracks}

    def check(self) -> None:
        """Cheap check of the hyperparameters' outside references (a weights folder, say), before any compute;
        raise ``bench.errors.UsageError`` with one clear line."""

    @abstractmethod
    def build(self, spec: DataSpec) -> "nn.Module":
        """A freshly initialised model (the runner loads cached weights into it or calls ``fit``)."""

    @abstractmethod
    def fit(self, model: "nn.Module", data: Splits, ctx: "TrainContext") -> None:
        """Train ``model`` in place."""


class Attack(Plugin):
    kind = "attack"
    consumes: ClassVar[str] = "classifier"
    norm: ClassVar[str] = "linf"  # the threat model the framework enforces: "linf" or "l2"
    curve: ClassVar[bool] = False  # also evaluate at every eps of the dataset's sweep
    metric: ClassVar[str] = "robust_acc"  # what the record calls the fraction of robust examples

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        return {**super().capabilities(), "consumes": cls.consumes, "norm": cls.norm}

    def components(self) -> tuple[str, ...]:
        """For evaluators defined as the per-example worst case over other attacks: their names. The runner
        then combines the per-example results of those attacks when it has just computed them on the same
        model (same definition, no second run); otherwise it calls ``perturb``."""
        return ()

    def describe(self) -> str:
        """The metric's definition as stored in records, e.g. ``pgd-linf(steps=20, ...)``."""
        fields = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(self.params).items())
        return f"{self.name}({fields})"

    @abstractmethod
    def perturb(self, model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor", eps: float,
                ctx: "AttackContext") -> "torch.Tensor":
        """Adversarial inputs for one batch. ``model`` is in eval mode and returns logits. The framework
        checks the result against the ``norm`` ball of radius ``eps`` and the data bounds afterwards."""

    def robust(self, model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor", eps: float,
               ctx: "AttackContext") -> "torch.Tensor":
        """Per example (bool): still classified correctly after the attack, run through the framework's
        threat-model check."""
        import torch

        x_adv = ctx.run(self, model, x, y, eps)
        with torch.no_grad():
            return model(x_adv).argmax(1) == y


class Certifier(Attack):
    """An evaluator that proves robustness instead of attacking: ``certify`` returns, per example, whether
    every input in the eps-ball is provably classified correctly. The runner also runs the ``companion``
    attack on the same examples and records both numbers; a certified example that the attack breaks is a
    soundness error (verified <= empirical robust, per example)."""

    metric = "verified_acc"
    companion: ClassVar[str] = "pgd-linf"

    @abstractmethod
    def certify(self, model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor", eps: float,
                ctx: "AttackContext") -> "torch.Tensor":
        """Per example (bool): proved robust at ``eps``. Raise ``bench.errors.NotCertifiable`` for a model
        the method cannot handle."""

    def robust(self, model, x, y, eps, ctx):
        return self.certify(model, x, y, eps, ctx)

    def perturb(self, model, x, y, eps, ctx):
        raise TypeError(f"{self.name} certifies; it produces no adversarial examples")


class Evaluator(Attack):
    """An evaluator whose numbers are not accuracy under a perturbation budget: accuracy on an unlearning
    scenario's forget and remaining data, membership inference, accuracy per target domain... It has no
    norm and no eps; ``evaluate`` returns the metrics and the runner adds clean accuracy and provenance.
    Attack plugins of the same track (``consumes`` permitting) still run on the same cached model."""

    norm = None  # type: ignore[assignment]
    metric = "score"

    @abstractmethod
    def evaluate(self, model: "nn.Module", data: Splits, ctx: "EvalContext") -> list[dict[str, Any]]:
        """Metrics as ``{"name", "value", "n", "definition"}`` dicts (plus any labels the track's tables use,
        e.g. ``"split"`` or ``"domain"``); ``value`` a float, ``definition`` says exactly what was measured."""

    def perturb(self, model, x, y, eps, ctx):
        raise TypeError(f"{self.name} evaluates; it produces no adversarial examples")
