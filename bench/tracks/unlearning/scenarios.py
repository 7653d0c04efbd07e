"""The unlearning track's scenarios (dataset plugins), and what the track's defenses share.

A scenario = an image dataset + a forget set D_f (indices into the training set) + how the original model is
trained. The rest of the training set is the remaining data D_r. Kinds (Shen et al., ICLR'24 "LAF"):

- ``random``: ``fraction`` of the training samples of ``classes`` (all classes when empty), drawn at random.
  ``*-random`` is the LAF paper's data removal (40% of the samples of classes 5-9); ``*-uniform`` 10% of all.
- ``class``: every training sample of ``classes`` (whole-class removal; class 0 by default).
- ``noisy``: ``fraction`` of the training labels (of ``classes``, all when empty) are replaced by a different
  class drawn uniformly; the corrupted samples are the forget set. ``train_y`` holds the corrupted labels (what
  the original model trains on); ``extras["clean_train_y"]`` the true ones (retrain trains on D_r, whose labels
  are clean).

``Splits.extras``: ``forget_idx`` (sorted int64 tensor into the training set), ``scenario`` (its description,
incl. the forget-set size), ``forget_classes`` (class removal), ``clean_train_y`` (noisy labels).
The draw is seeded by the dataset parameter ``seed``, not the run seed: it is recorded in every record and
identical for every method and run seed.

The helpers the track's defenses share (their training parameters, starting from the original model, the
extractor/head split) live here too: the runner hashes a model's defense module and dataset module into its
cache key, and this module is the one every unlearning model has in common.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from bench.errors import UsageError
from bench.plugins import Dataset, Splits
from bench.tracks.image_robustness.fashion_mnist import FashionMNIST
from bench.tracks.image_robustness.torchvision_sets import CIFAR10
from bench.tracks.image_robustness.training import ClassifierDefense, OptimParams
from bench.tracks.image_robustness.uci_digits import UCIDigits
from bench.tracks.unlearning import TRACK

KINDS = ("random", "class", "noisy")


# ---- scenarios ----------------------------------------------------------------------------------------------

def scenario_params(base: type[Dataset], fraction: float, classes: tuple[int, ...]) -> type:
    """The base dataset's parameters (root, n_train, n_test, ...) plus the scenario's, with its defaults."""
    fields = [(f.name, f.type, dataclasses.field(default=f.default)) for f in dataclasses.fields(base.Params)]
    fields += [("seed", "int", dataclasses.field(default=0)),
               ("fraction", "float", dataclasses.field(default=fraction)),
               ("classes", "tuple[int, ...]", dataclasses.field(default=classes))]
    return dataclasses.make_dataclass("Params", fields, frozen=True, namespace={"__module__": __name__})


def draw_forget_set(y: np.ndarray, kind: str, fraction: float, classes: tuple[int, ...], num_classes: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(sorted forget indices, corrupted labels or None) for a scenario, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(np.isin(y, classes)) if classes else np.arange(len(y))
    if kind == "class":
        return pool, None
    chosen = np.sort(rng.choice(pool, size=int(round(fraction * len(pool))), replace=False))
    if kind == "random":
        return chosen, None
    noisy = y.copy()
    noisy[chosen] = (y[chosen] + rng.integers(1, num_classes, size=len(chosen))) % num_classes  # never the true one
    return chosen, noisy


class Scenario(Dataset):
    """An image dataset with a forget set; subclasses set ``base`` and ``kind``."""

    tracks = (TRACK,)
    base: ClassVar[type[Dataset]]
    kind: ClassVar[str]

    def _base(self) -> Dataset:
        names = {f.name for f in dataclasses.fields(self.base.Params)}
        return self.base(self.base.Params(**{k: v for k, v in dataclasses.asdict(self.params).items() if k in names}))

    def check(self) -> None:
        p = self.params
        if self.kind != "class" and not 0 < p.fraction < 1:
            raise UsageError(f"{self.name}: fraction must be in (0, 1), got {p.fraction}")
        if self.kind == "class" and not p.classes:
            raise UsageError(f"{self.name}: class removal needs at least one class in 'classes'")
        bad = [c for c in p.classes if not 0 <= c < self.num_classes]
        if bad:
            raise UsageError(f"{self.name}: classes {bad} outside 0..{self.num_classes - 1}")
        self._base().check()

    def files(self):
        return self._base().files()

    def load(self) -> Splits:
        import torch

        data = self._base().load()
        p = self.params
        y = data.train_y.numpy()
        forget, noisy = draw_forget_set(y, self.kind, p.fraction, tuple(p.classes), self.num_classes, p.seed)
        if len(forget) == 0 or len(forget) == len(y):
            raise UsageError(f"{self.name}: the forget set has {len(forget)} of {len(y)} training samples")
        data.extras = {"forget_idx": torch.from_numpy(forget.astype(np.int64)),
                       "scenario": {"kind": self.kind, "fraction": p.fraction, "classes": list(p.classes),
                                    "seed": p.seed, "n_forget": len(forget), "n_train": len(y)}}
        if self.kind == "class":
            data.extras["forget_classes"] = tuple(p.classes)
        if noisy is not None:
            data.extras["clean_train_y"] = data.train_y
            data.train_y = torch.from_numpy(noisy)
        return data


def _scenario(base: type[Dataset], kind: str, fraction: float, classes: tuple[int, ...], doc: str,
              profiles: dict | None = None) -> type[Scenario]:
    attrs = {"__doc__": doc, "__module__": __name__, "base": base, "kind": kind,
             "Params": scenario_params(base, fraction, classes), "profiles": profiles or base.profiles,
             "input_shape": base.input_shape, "num_classes": base.num_classes, "bounds": base.bounds,
             # The images' conventional budgets, kept as metadata (no attack of this track uses them).
             "epsilons": base.epsilons}
    return type(f"{base.__name__}{kind.title()}", (Scenario,), attrs)


PAPER_RANDOM = dict(kind="random", fraction=0.4, classes=(5, 6, 7, 8, 9))
UNIFORM = dict(kind="uniform", fraction=0.1, classes=())
CLASS = dict(kind="class", fraction=1.0, classes=(0,))
NOISY = dict(kind="noisy", fraction=0.2, classes=())
# CPU-sized quick profile for Fashion-MNIST: 2,000 training images (200 per class) for the 256-d CNN
# (2 shared CPU cores); the full profile takes all 60,000.
FMNIST_PROFILES = {"smoke": {"n_train": 512, "n_test": 256}, "quick": {"n_train": 2000, "n_test": 1000},
                   "full": {"n_train": None, "n_test": None}}


def _family(base: type[Dataset], label: str, profiles: dict | None = None) -> dict[str, type[Scenario]]:
    docs = {"random": f"{label}: forget 40% of the training samples of classes 5-9 (the LAF paper's data removal).",
            "uniform": f"{label}: forget 10% of the training samples, drawn uniformly.",
            "class": f"{label}: forget every training sample of class 0 (class removal).",
            "noisy": f"{label}: 20% of the training labels corrupted; forget those samples (noisy-label removal)."}
    out = {}
    for spec in (PAPER_RANDOM, UNIFORM, CLASS, NOISY):
        spec = dict(spec)
        name = spec.pop("kind")
        kind = "random" if name == "uniform" else name
        out[name] = _scenario(base, kind, spec["fraction"], spec["classes"], docs[name], profiles)
    return out


_fm = _family(FashionMNIST, "Fashion-MNIST", FMNIST_PROFILES)
FashionMNISTRandom, FashionMNISTUniform, FashionMNISTClass, FashionMNISTNoisy = (
    _fm["random"], _fm["uniform"], _fm["class"], _fm["noisy"])
_ud = _family(UCIDigits, "UCI digits (8x8)")
DigitsRandom, DigitsUniform, DigitsClass, DigitsNoisy = _ud["random"], _ud["uniform"], _ud["class"], _ud["noisy"]
_cf = _family(CIFAR10, "CIFAR-10 (from a local root)")
CIFAR10Random, CIFAR10Uniform, CIFAR10Class, CIFAR10Noisy = _cf["random"], _cf["uniform"], _cf["class"], _cf["noisy"]


# ---- what the track's defenses and evaluators share ---------------------------------------------------------

def forget_remain(data: Splits):
    """(forget indices, remaining indices) into the training set, as int64 tensors."""
    import torch

    if "forget_idx" not in data.extras:
        raise UsageError(f"dataset {data.spec.name} has no forget set: use an unlearning scenario "
                         f"(e.g. fashion-mnist-random)")
    forget = data.extras["forget_idx"]
    keep = torch.ones(len(data.train_y), dtype=torch.bool)
    keep[forget] = False
    return forget, torch.nonzero(keep).squeeze(1)


def train_subset(data: Splits, idx, labels=None) -> Splits:
    """``data`` with the training set restricted to ``idx`` (optionally relabelled), for ``train_classifier``."""
    y = data.train_y[idx] if labels is None else labels
    return Splits(data.spec, data.train_x[idx], y, data.test_x, data.test_y, data.extras)


@dataclasses.dataclass(frozen=True)
class TrainParams(OptimParams):
    """How the original model (and retrain) is trained. Every unlearning method carries these fields and asks
    for the original model with them, so ``--set epochs=...`` changes the original of every method alike."""

    arch: str = "cnn"  # conv32-conv64-conv64-FC256-FC(K): a 256-d embedding, as the LAF paper's CNN
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3


TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainParams))
TRAIN_PROFILES = {"smoke": {"arch": "cnn-small", "epochs": 4, "lr": 3e-3, "batch_size": 64},
                  "full": {"epochs": 10, "batch_size": 256}}


def method_profiles(**own: dict) -> dict[str, dict]:
    """The shared training profiles plus a method's own overrides per profile."""
    return {p: {**TRAIN_PROFILES.get(p, {}), **own.get(p, {})} for p in set(TRAIN_PROFILES) | set(own)}


def split_head(model):
    """(extractor g, head h) of a bench model, sharing its parameters: h is the last Linear layer."""
    from torch import nn

    from bench.tracks.image_robustness.models import ResNet18

    if isinstance(model, nn.Sequential) and isinstance(model[-1], nn.Linear):
        return model[:-1], model[-1]
    if isinstance(model, ResNet18):
        return nn.Sequential(model.stem, model.layers, model.pool, nn.Flatten()), model.fc
    raise UsageError(f"cannot split {type(model).__name__} into an extractor and a linear head")


class UnlearningDefense(ClassifierDefense):
    """A method of the unlearning track; ``fit`` starts from a copy of the scenario's original model."""

    track = TRACK
    Params = TrainParams
    profiles = TRAIN_PROFILES


    def original(self, ctx):
        """The runner's cached original model trained with this method's training fields (frozen, shared)."""
        return ctx.model_of("original", **{k: getattr(self.params, k) for k in TRAIN_FIELDS})

    def start_from_original(self, model, ctx):
        """Copy the original weights into ``model`` (never modifying the shared original); returns the original."""
        original = self.original(ctx)
        model.load_state_dict(original.state_dict())
        model.to(ctx.device)
        for p in model.parameters():
            p.requires_grad_(True)
        return original
