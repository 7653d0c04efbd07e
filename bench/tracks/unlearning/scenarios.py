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
incl. the forget-set size and ``train_epochs``), ``forget_classes`` (class removal), ``clean_train_y`` (noisy
labels). The draw is seeded by the dataset parameter ``seed``, not the run seed: it is recorded in every record
and identical for every method and run seed.

How the original is trained is part of the scenario where the paper's protocol needs it: ``train_epochs`` (20,
the LAF paper's base training; the noisy-label scenarios train longer, without early stopping, until the
original has mostly fit the noisy labels, as the paper's originals do) is what a defense trains for when its own
``epochs`` is None (the default). Membership inference needs non-members that look like the forget set: see
``membership_sets`` (class-matched test samples, with the same label corruption in the noisy scenario) and
``shadow_pool`` / ``shadow_in`` (the candidate pool and the random halves that LiRA's shadow models train on).

The helpers the track's defenses share (their training parameters, starting from the original model, the
extractor/head split) live here too: the runner hashes a model's defense module and dataset module into its
cache key, and this module is the one every unlearning model has in common.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from torch import nn

from bench.errors import UsageError
from bench.plugins import Dataset, Splits
from bench.tracks.image_robustness.fashion_mnist import FashionMNIST
from bench.tracks.image_robustness.torchvision_sets import CIFAR10
from bench.tracks.image_robustness.training import ClassifierDefense, OptimParams
from bench.tracks.image_robustness.uci_digits import UCIDigits
from bench.tracks.unlearning import TRACK

if TYPE_CHECKING:  # pragma: no cover
    import torch

KINDS = ("random", "class", "noisy")


# ---- scenarios ----------------------------------------------------------------------------------------------

def scenario_params(base: type[Dataset], fraction: float, classes: tuple[int, ...], train_epochs: int = 20) -> type:
    """The base dataset's parameters (root, n_train, n_test, ...) plus the scenario's, with its defaults."""
    fields = [(f.name, f.type, dataclasses.field(default=f.default)) for f in dataclasses.fields(base.Params)]
    fields += [("seed", "int", dataclasses.field(default=0)),
               ("fraction", "float", dataclasses.field(default=fraction)),
               ("classes", "tuple[int, ...]", dataclasses.field(default=classes)),
               # How long the original (and retrain, and LiRA's shadows) train when a defense's `epochs` is None.
               ("train_epochs", "int", dataclasses.field(default=train_epochs))]
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
                                    "seed": p.seed, "n_forget": len(forget), "n_train": len(y),
                                    "train_epochs": p.train_epochs}}
        if self.kind == "class":
            data.extras["forget_classes"] = tuple(p.classes)
        if noisy is not None:
            data.extras["clean_train_y"] = data.train_y
            data.train_y = torch.from_numpy(noisy)
        return data


def _scenario(base: type[Dataset], kind: str, fraction: float, classes: tuple[int, ...], doc: str,
              profiles: dict | None = None, train_epochs: int = 20) -> type[Scenario]:
    attrs = {"__doc__": doc, "__module__": __name__, "base": base, "kind": kind,
             "Params": scenario_params(base, fraction, classes, train_epochs),
             "profiles": profiles or base.profiles,
             "input_shape": base.input_shape, "num_classes": base.num_classes, "bounds": base.bounds,
             # The images' conventional budgets, kept as metadata (no attack of this track uses them).
             "epsilons": base.epsilons}
    return type(f"{base.__name__}{kind.title()}", (Scenario,), attrs)


PAPER_RANDOM = dict(kind="random", fraction=0.4, classes=(5, 6, 7, 8, 9))
UNIFORM = dict(kind="uniform", fraction=0.1, classes=())
CLASS = dict(kind="class", fraction=1.0, classes=(0,))
NOISY = dict(kind="noisy", fraction=0.2, classes=())
PAPER_EPOCHS = 20  # the LAF paper's base training: Adam 1e-4, weight decay 1e-4, batch 32, 20 epochs
# CPU-sized quick profile for Fashion-MNIST: 2,000 training images (200 per class) for the paper's CNN
# (2 shared CPU cores); the full profile takes all 60,000.
FMNIST_PROFILES = {"smoke": {"n_train": 512, "n_test": 256}, "quick": {"n_train": 2000, "n_test": 1000},
                   "full": {"n_train": None, "n_test": None}}
DIGITS_PROFILES = {"smoke": {"n_train": 512, "n_test": 256}, "quick": {}, "full": {}}
CIFAR_PROFILES = {"smoke": {"n_train": 512, "n_test": 256}, "quick": {"n_train": 5000, "n_test": 1000},
                  "full": {"n_train": None, "n_test": None}}
# Noisy-label removal: the original must have fit (memorised) the corrupted labels for there to be anything to
# unlearn; the paper trains without early stopping. These are the epochs (the paper's optimiser: Adam 1e-4, wd
# 1e-4, batch 32) after which the original fits most of the noisy forget set (its rate is in every table).
# Measured with the paper's CNN (its own training loop, on one H200): Fashion-MNIST quick (2,000 images) fits
# 50% of the noisy labels at 100 epochs, 96% at 150; UCI digits (1,437) 83% at 270, 91% at 300. Fashion-MNIST
# full (60,000): 10.6% at 80 epochs (5.4 s/epoch on an H200), still rising -- 200 is an estimate, not a
# measurement; CIFAR-10 (resnet18) is not measured either. The tables print the rate each run reached.
NOISY_EPOCHS = {"fashion-mnist": {"smoke": 150, "quick": 150, "full": 200},
                "uci-digits": {"smoke": 300, "quick": 300, "full": 300},
                "cifar10": {"smoke": 60, "quick": 60, "full": 60}}


def _family(base: type[Dataset], label: str, profiles: dict) -> dict[str, type[Scenario]]:
    noisy_epochs = NOISY_EPOCHS[base.name]
    docs = {"random": f"{label}: forget 40% of the training samples of classes 5-9 (the LAF paper's data removal).",
            "uniform": f"{label}: forget 10% of the training samples, drawn uniformly.",
            "class": f"{label}: forget every training sample of class 0 (class removal).",
            "noisy": f"{label}: 20% of the training labels corrupted; forget those samples (noisy-label removal). "
                     f"The original trains until it has fit most of them ({noisy_epochs['quick']} epochs quick, "
                     f"{noisy_epochs['full']} full)."}
    out = {}
    for spec in (PAPER_RANDOM, UNIFORM, CLASS, NOISY):
        spec = dict(spec)
        name = spec.pop("kind")
        kind = "random" if name == "uniform" else name
        own = profiles
        epochs = PAPER_EPOCHS
        if kind == "noisy":
            own = {p: {**profiles.get(p, {}), "train_epochs": noisy_epochs[p]} for p in ("smoke", "quick", "full")}
            epochs = noisy_epochs["quick"]
        out[name] = _scenario(base, kind, spec["fraction"], spec["classes"], docs[name], own, epochs)
    return out


_fm = _family(FashionMNIST, "Fashion-MNIST", FMNIST_PROFILES)
FashionMNISTRandom, FashionMNISTUniform, FashionMNISTClass, FashionMNISTNoisy = (
    _fm["random"], _fm["uniform"], _fm["class"], _fm["noisy"])
_ud = _family(UCIDigits, "UCI digits (8x8)", DIGITS_PROFILES)
DigitsRandom, DigitsUniform, DigitsClass, DigitsNoisy = _ud["random"], _ud["uniform"], _ud["class"], _ud["noisy"]
_cf = _family(CIFAR10, "CIFAR-10 (binary version, from a local root; resnet18)", CIFAR_PROFILES)
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
    extras = {k: v for k, v in data.extras.items() if k != "membership"}  # the sets of the whole scenario
    return Splits(data.spec, data.train_x[idx], y, data.test_x, data.test_y, extras)


# ---- membership: class-matched non-members, the shadow models' candidate pool -------------------------------

NONMEMBER_SHARE = 2 / 3  # at most this share of each class's test samples is held out as non-members
_MEMBERSHIP_SALT = 7919  # separates these draws from the forget-set draw of the same scenario seed


@dataclasses.dataclass
class Membership:
    """Who is a member of what, for membership inference on a scenario (all index tensors are int64).

    - ``forget``: the forget set (indices into the training set), members of the original model;
    - ``nonmember``: indices into the test set of non-members drawn from the same classes as the forget set, in
      the forget set's class proportions (as many as ``NONMEMBER_SHARE`` of each class's test samples allow);
      ``nonmember_y`` their labels: the true ones, or, in the noisy-label scenario, corrupted the same way as the
      forget set's (a different class drawn uniformly), since the forget set is judged on its corrupted labels;
    - ``cal`` / ``eval``: positions into ``nonmember`` (a stratified half each): ``cal`` calibrates the decision
      threshold of an attack at a stated false-positive rate, ``eval`` measures AUC, TPR and the realised FPR;
    - ``fit_members`` (training indices, remaining data) / ``fit_nonmembers`` (test indices outside
      ``nonmember``), class-balanced against each other: what a population attack is fitted on.
    """

    forget: "torch.Tensor"
    nonmember: "torch.Tensor"
    nonmember_y: "torch.Tensor"
    cal: "torch.Tensor"
    eval: "torch.Tensor"
    fit_members: "torch.Tensor"
    fit_nonmembers: "torch.Tensor"


def _true_train_labels(data: Splits):
    return data.extras.get("clean_train_y", data.train_y)


def membership_sets(data: Splits) -> Membership:
    """The scenario's membership sets (``Membership``), deterministic in the scenario seed."""
    import torch

    if "membership" in data.extras:
        return data.extras["membership"]
    forget, remain = forget_remain(data)
    k = data.spec.num_classes
    seed = int(data.extras["scenario"]["seed"])
    rng = np.random.default_rng([seed, _MEMBERSHIP_SALT])
    true_y = _true_train_labels(data).numpy()
    test_y = data.test_y.numpy()
    wanted = np.bincount(true_y[forget.numpy()], minlength=k)
    available = np.floor(NONMEMBER_SHARE * np.bincount(test_y, minlength=k)).astype(int)
    classes = np.flatnonzero(wanted)
    if (available[classes] == 0).any():
        missing = int(classes[available[classes] == 0][0])
        raise UsageError(f"{data.spec.name}: the test set has too few samples of class {missing} to serve as "
                         f"non-members for membership inference on the forget set")
    scale = min(available[c] / wanted[c] for c in classes)
    take = {int(c): max(1, min(int(available[c]), int(np.floor(scale * wanted[c])))) for c in classes}
    chosen, cal, ev = [], [], []
    for c in classes:
        pool = rng.permutation(np.flatnonzero(test_y == c))[:take[int(c)]]
        start = len(chosen)
        chosen.extend(pool.tolist())
        half = len(pool) // 2
        cal.extend(range(start, start + half))
        ev.extend(range(start + half, start + len(pool)))
    nonmember = np.asarray(chosen, dtype=np.int64)
    labels = test_y[nonmember].copy()
    if "clean_train_y" in data.extras:  # the same corruption as the noisy forget set's
        labels = (labels + rng.integers(1, k, size=len(labels))) % k
    outside = np.setdiff1d(np.arange(len(test_y)), nonmember)
    remain_np = remain.numpy()
    fit_m, fit_n = [], []
    for c in range(k):
        members = remain_np[data.train_y.numpy()[remain_np] == c]
        outsiders = outside[test_y[outside] == c]
        n = min(len(members), len(outsiders))
        fit_m.extend(rng.permutation(members)[:n].tolist())
        fit_n.extend(rng.permutation(outsiders)[:n].tolist())
    as_tensor = lambda v: torch.as_tensor(np.asarray(v, dtype=np.int64))  # noqa: E731
    out = Membership(forget=forget, nonmember=as_tensor(nonmember), nonmember_y=torch.from_numpy(labels),
                     cal=as_tensor(cal), eval=as_tensor(ev), fit_members=as_tensor(fit_m),
                     fit_nonmembers=as_tensor(fit_n))
    data.extras["membership"] = out
    return out


def shadow_pool(data: Splits):
    """(x, y, candidates): the pool LiRA's shadow models draw their random halves from -- the whole training set
    (with its training labels) followed by the class-matched non-members (with ``nonmember_y``) -- and the pool
    positions of the candidates the attacks score: the forget set, then the non-members."""
    import torch

    ms = membership_sets(data)
    n = len(data.train_y)
    x = torch.cat([data.train_x, data.test_x[ms.nonmember]])
    y = torch.cat([data.train_y, ms.nonmember_y])
    candidates = torch.cat([ms.forget, n + torch.arange(len(ms.nonmember))])
    return x, y, candidates


def shadow_in(n_pool: int, n_shadows: int, scenario_seed: int, shadow_seed: int) -> np.ndarray:
    """Bool (n_shadows, n_pool): which pool samples each shadow trains on. Every sample is in exactly half of the
    shadows (odd counts: half rounded up or down at random), so each candidate has IN and OUT shadows."""
    rng = np.random.default_rng([scenario_seed, shadow_seed, _MEMBERSHIP_SALT + 1])
    keys = rng.random((n_pool, n_shadows))
    rank = keys.argsort(axis=1).argsort(axis=1)
    half = n_shadows // 2 + (rng.random(n_pool) < 0.5 if n_shadows % 2 else 0)
    return (rank < np.asarray(half).reshape(-1, 1)).T


# ---- how the track's models are built and trained -----------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TrainParams(OptimParams):
    """How the original model (and retrain, and LiRA's shadows) is trained: the LAF paper's base training
    (Adam 1e-4, weight decay 1e-4, batch 32, constant lr, 20 epochs). Every unlearning method carries these
    fields and asks for the original model with them, so ``--set epochs=...`` changes the original of every
    method alike.

    ``arch`` None: the paper's architecture for the data -- ``laf-cnn`` (its CNN: conv16-5x5-pool,
    conv32-5x5-pool, FC 256 = the embedding, head 256-128-K) for grey images, ``resnet18`` for colour ones
    (CIFAR-10). ``epochs`` None: the scenario's ``train_epochs``."""

    arch: str | None = None
    epochs: int | None = None
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-4
    schedule: Literal["cosine", "constant"] = "constant"


TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainParams))
# smoke: seconds on a CPU (the tests' and the contract's profile), not the paper's recipe.
TRAIN_PROFILES = {"smoke": {"arch": "cnn-small", "epochs": 4, "lr": 3e-3, "batch_size": 64}}


def method_profiles(**own: dict) -> dict[str, dict]:
    """The shared training profiles plus a method's own overrides per profile."""
    return {p: {**TRAIN_PROFILES.get(p, {}), **own.get(p, {})} for p in set(TRAIN_PROFILES) | set(own)}


def resolve_arch(arch: str | None, spec) -> str:
    if arch is not None:
        return arch
    return "resnet18" if spec.input_shape[0] == 3 else "laf-cnn"


def recipe(params, data: Splits):
    """``params`` with ``arch`` and ``epochs`` resolved against the scenario (what ``train_classifier`` needs)."""
    epochs = params.epochs if params.epochs is not None else int(data.extras["scenario"]["train_epochs"])
    return dataclasses.replace(params, arch=resolve_arch(params.arch, data.spec), epochs=epochs)


def train_fields(params) -> dict:
    """The training fields of a method's params (what identifies its original model)."""
    return {k: getattr(params, k) for k in TRAIN_FIELDS}


class PaperCNN(nn.Sequential):
    """The LAF paper's CNN: its extractor ends at the 256-d embedding (a Linear, no activation) and its head is
    the two Linear layers after it (``split_head`` knows)."""

    head_layers = 2


def build_track_model(arch: str, spec, width: int = 1) -> "nn.Module":
    if arch == "laf-cnn":
        c, h, w = spec.input_shape
        w1 = 16 * width
        convs = [nn.Conv2d(c, w1, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(w1, 2 * w1, 5, 1, 2), nn.ReLU(),
                 nn.MaxPool2d(2), nn.Flatten()]
        flat = 2 * w1 * (h // 4) * (w // 4)
        return PaperCNN(*convs, nn.Linear(flat, 256), nn.Linear(256, 128), nn.Linear(128, spec.num_classes))
    from bench.tracks.image_robustness.models import build_model

    return build_model(arch, spec.input_shape, spec.num_classes, width)


def split_head(model):
    """(extractor g, head h) of a bench model, sharing its parameters: h is the last Linear layer (the paper's
    CNN: its last two Linear layers)."""
    from bench.tracks.image_robustness.models import ResNet18

    if isinstance(model, PaperCNN):
        return model[:-model.head_layers], model[-model.head_layers:]
    if isinstance(model, nn.Sequential) and isinstance(model[-1], nn.Linear):
        return model[:-1], model[-1]
    if isinstance(model, ResNet18):
        return nn.Sequential(model.stem, model.layers, model.pool, nn.Flatten()), model.fc
    raise UsageError(f"cannot split {type(model).__name__} into an extractor and a linear head")


ORIGIN = "bench_unlearning_origin"  # the attribute that names, on a built model, the defense that made it


def origin_of(model) -> dict:
    """{"defense": name, "params": {...}} of the unlearning defense that built ``model`` ({} when unknown): the
    track's evaluators read it to request shadow models with the same recipe (and, for U-LiRA, the method)."""
    return dict(getattr(model, ORIGIN, None) or {})


class UnlearningDefense(ClassifierDefense):
    """A method of the unlearning track; ``fit`` starts from a copy of the scenario's original model."""

    track = TRACK
    Params = TrainParams
    profiles = TRAIN_PROFILES

    def build(self, spec):
        from bench.hparams import as_dict

        model = build_track_model(resolve_arch(self.params.arch, spec), spec, self.params.width)
        setattr(model, ORIGIN, {"defense": self.name, "params": as_dict(self.params)})
        return model

    def check_data(self, spec) -> None:
        arch = resolve_arch(self.params.arch, spec)
        if arch == "laf-cnn" and (spec.input_shape[1] % 4 or spec.input_shape[2] % 4):
            raise UsageError(f"{self.name}: laf-cnn needs image sides divisible by 4, got {spec.input_shape}")

    def recipe(self, data: Splits):
        return recipe(self.params, data)

    def original(self, ctx):
        """The runner's cached original model trained with this method's training fields (frozen, shared)."""
        return ctx.model_of("original", **train_fields(self.params))

    def start_from_original(self, model, ctx):
        """Copy the original weights into ``model`` (never modifying the shared original); returns the original."""
        original = self.original(ctx)
        model.load_state_dict(original.state_dict())
        model.to(ctx.device)
        for p in model.parameters():
            p.requires_grad_(True)
        return original
