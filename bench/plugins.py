"""The plugin kinds: Track, Dataset, Defense, and what evaluates a trained model (Attack, Certifier, Evaluator).

A plugin is one class. It declares its track and capabilities as class attributes, a frozen ``Params``
dataclass whose every field has a default, optional per-profile overrides, and implements at most three
methods. It is registered by one entry-point line (group ``bench.tracks``, ``bench.datasets``,
``bench.defenses`` or ``bench.attacks``); the entry-point name becomes ``plugin.name``.

This module imports no torch at import time, so the CLI can describe plugins without loading it.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from bench.context import AttackContext, EvalContext, TrainContext

PROFILES = ("smoke", "quick", "full")


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
    tracks: ClassVar[tuple[str, ...]] = ()  # every track whose defenses and evaluators apply to this data
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

    def files(self) -> list[Path]:
        """The files this dataset reads, for provenance (their sha256 goes into records)."""
        return []

    @abstractmethod
    def load(self) -> Splits:
        """Load (and subsample per ``self.params``) the data as tensors."""


class Defense(Plugin):
    kind = "defense"
    produces: ClassVar[str] = "classifier"
    # Further tracks whose evaluators apply to this defense's models (a domain-generalisation classifier is
    # also attacked in the image-robustness grid); records are filed under the evaluator's track.
    also_tracks: ClassVar[tuple[str, ...]] = ()
    # A helper model other plugins request through ``model_of`` (LiRA's shadows): True trains it once, with
    # seed 0, for every run seed, so the evaluators of all seeds share it.
    shared_across_seeds: ClassVar[bool] = False

    @classmethod
    def all_tracks(cls) -> tuple[str, ...]:
        return (cls.track, *cls.also_tracks)

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        return {**super().capabilities(), "produces": cls.produces, "also_tracks": cls.also_tracks}

    def check(self) -> None:
        """Cheap check of the hyperparameters' outside references (a weights folder, say), before any compute;
        raise ``bench.errors.UsageError`` with one clear line."""

    def check_data(self, spec: DataSpec) -> None:
        """Cheap check against a selected dataset's shape and classes (a loaded checkpoint's output size, say),
        before any compute; raise ``bench.errors.UsageError`` with one clear line."""

    def identity(self) -> dict[str, Any]:
        """What identifies this defense's model beyond its params (e.g. ``{"sha256": ...}`` of a weights file it
        loads): it enters the model's cache key and the records. Called after ``check()``; cheap (cache it)."""
        return {}

    @abstractmethod
    def build(self, spec: DataSpec) -> "nn.Module":
        """A freshly initialised model (the runner loads cached weights into it or calls ``fit``)."""

    @abstractmethod
    def fit(self, model: "nn.Module", data: Splits, ctx: "TrainContext") -> None:
        """Train ``model`` in place."""


class Evaluation(Plugin):
    """What runs on a trained model (entry-point group ``bench.attacks``). Three kinds, one method each:
    an ``Attack`` returns adversarial inputs, a ``Certifier`` per-example proofs, an ``Evaluator`` metrics.
    Plugins never return accuracies: the runner turns their outputs into numbers, after the threat check."""

    kind = "attack"
    consumes: ClassVar[str] = "classifier"
    norm: ClassVar[str | None] = None  # the threat model the framework enforces: "linf", "l2" or None
    metric: ClassVar[str] = "score"  # what the record calls its headline number

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        return {**super().capabilities(), "consumes": cls.consumes, "norm": cls.norm}

    def describe(self) -> str:
        """The metric's definition as stored in records, e.g. ``pgd-linf(steps=20, ...)``."""
        fields = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(self.params).items())
        return f"{self.name}({fields})"


class Attack(Evaluation):
    norm: ClassVar[str] = "linf"
    curve: ClassVar[bool] = False  # also evaluate at every eps of the dataset's sweep
    gradient_free: ClassVar[bool] = False  # a black-box (score-based) attack: it needs no gradient
    metric = "robust_acc"

    def components(self) -> tuple[str, ...]:
        """For evaluators defined as the per-example worst case over other attacks: their names. The runner
        then combines the per-example results of those attacks when it has just computed them on the same
        model (same definition, no second run); otherwise it calls ``perturb``."""
        return ()

    @abstractmethod
    def perturb(self, model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor", eps: float,
                ctx: "AttackContext") -> "torch.Tensor":
        """Adversarial inputs for one batch. ``model`` is in eval mode and returns logits. The framework
        checks the result against the ``norm`` ball of radius ``eps`` and the data bounds afterwards."""


class Certifier(Evaluation):
    """An evaluator that proves robustness instead of attacking: ``certify`` returns, per example, whether
    every input in the eps-ball is provably classified correctly. The runner also runs the ``companion``
    attack on the same examples and records both numbers; a certified example that the attack breaks is a
    soundness error (verified <= empirical robust, per example)."""

    norm: ClassVar[str] = "linf"
    metric = "verified_acc"
    curve: ClassVar[bool] = False
    companion: ClassVar[str] = "pgd-linf"

    @abstractmethod
    def certify(self, model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor", eps: float,
                ctx: "AttackContext") -> "torch.Tensor":
        """Per example (bool): proved robust at ``eps``. Raise ``bench.errors.NotCertifiable`` for a model
        the method cannot handle."""


class Evaluator(Evaluation):
    """An evaluator whose numbers are not accuracy under a perturbation budget: accuracy on an unlearning
    scenario's forget and remaining data, membership inference, accuracy per target domain... It has no
    norm and no eps; ``evaluate`` returns the metrics and the runner adds clean accuracy and provenance.
    Attack plugins of the same track (``consumes`` permitting) still run on the same cached model."""

    @abstractmethod
    def evaluate(self, model: "nn.Module", data: Splits, ctx: "EvalContext") -> list[dict[str, Any]]:
        """Metrics as ``{"name", "value", "n", "definition"}`` dicts (plus any labels the track's tables use,
        e.g. ``"split"`` or ``"domain"``); ``value`` a float, ``definition`` says exactly what was measured."""


@dataclasses.dataclass(frozen=True)
class Facts:
    """What tables and figures may know beyond the records, taken from the installed plugins by the writer:
    each dataset's headline eps per norm, each defense's reported paper numbers, and ``load(dataset, params)``
    -> its ``Splits`` (or None when the dataset cannot be loaded here), for figures that show data."""

    headline: dict[str, dict[str, tuple[float, ...]]] = dataclasses.field(default_factory=dict)
    reported: dict[str, dict[str, dict[str, tuple[float, str]]]] = dataclasses.field(default_factory=dict)
    load: Callable[[str, dict], "Splits | None"] = lambda name, params: None


class Track(ABC):
    """A task family (entry-point group ``bench.tracks``; the entry-point name is the ``track`` of its plugins,
    of their records and of its leaderboard folder). It declares what its defenses produce, its suites, its
    tables and figures, and the plugins its contract tests exercise. The core asks the registered tracks
    instead of keeping lists, so a new track is its folders plus one entry-point line.

    Its package should import no torch at import time: ``bench --help`` lists its suites."""

    kind = "track"
    name: str = ""  # set by the registry
    # The runner measures the clean test accuracy of every model this track's defenses produce.
    classifies: ClassVar[bool] = True
    # Predefined grids for ``bench run --suite NAME``:
    # {name: {"defenses": (...), "attacks": (...), "datasets": (...), "seeds": (...), "profile": "quick"}}
    suites: ClassVar[dict[str, dict[str, Any]]] = {}
    # What the contract tests run this track's plugins on: {"dataset": name, "defense": name}, both of this
    # track, and "inputs": "tensors" (tests/core/test_contract.py feeds its plugins tensor batches and Splits)
    # or "own" (strings or prompts in: the track's own tests check the same properties).
    contract: ClassVar[dict[str, str]] = {}
    # The metrics (labels as tables write them: ``name`` or ``name [split]``) that `bench run`'s summary shows
    # for a cell of this track, after clean accuracy: the first two present (at the smallest eps).
    summary_metrics: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        return {"classifies": cls.classifies, "suites": tuple(cls.suites)}

    def tables(self, records: list[dict], facts: Facts) -> dict[str, str]:
        """``{file name in the track's folder: text}`` from the track's records (any status); byte-identical
        for identical records. The default: one row per defense and evaluator, one column per metric."""
        from bench.tables import generic_tables

        return generic_tables(records)

    def figures(self, records: list[dict], out_dir: Path, facts: Facts) -> list[Path]:
        """PNGs written into ``out_dir`` (the track's folder); their paths."""
        return []
