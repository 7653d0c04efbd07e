"""The concept-erasure track's datasets: Fashion-MNIST with one class named as the concept to erase.

The images (train/test, as the ``fashion-mnist`` dataset) serve the judge (a classifier trained on them through
the runner's cache) and the real-image side of the Frechet distance; the text-to-image model itself is the
base model of ``bench.tracks.concept_erasure.train``, trained once per profile for every concept. ``Splits.extras``:
``concept`` (its name), ``concept_class``, ``erase_prompts`` (what the erasure methods train against: the
class's training captions), ``prompts`` (``{"plain": [...], "paraphrase": [...]}``, the fixed evaluation set)
and ``retain_prompts`` (``[(prompt, class)]`` of the other nine classes).
"""
from __future__ import annotations

import dataclasses

from bench.plugins import Dataset, Splits
from bench.tracks.concept_erasure import MODALITY, TRACK
from bench.tracks.concept_erasure.captions import (
    concept_class,
    concept_prompts,
    retain_prompts,
    training_captions,
)
from bench.tracks.image_robustness.fashion_mnist import FashionMNIST


@dataclasses.dataclass(frozen=True)
class EraseParams:
    concept: str = "sneaker"
    root: str | None = None  # as fashion-mnist's
    n_train: int | None = 20000  # the judge's training images (class-balanced subset)
    n_test: int | None = 1000  # real test images: the judge's accuracy, the Frechet distance's reference


class FashionErase(Dataset):
    """Fashion-MNIST with a concept (class) to erase from the text-to-image model; ``concept`` is a parameter."""

    tracks = (TRACK,)
    modality = MODALITY
    input_shape = (1, 28, 28)
    num_classes = 10
    Params = EraseParams
    profiles = {"smoke": {"n_train": 1000, "n_test": 200}, "full": {"n_test": 2000}}

    def _images(self) -> FashionMNIST:
        p = self.params
        return FashionMNIST(FashionMNIST.Params(root=p.root, n_train=p.n_train, n_test=p.n_test))

    def check(self) -> None:
        concept_class(self.params.concept)
        self._images().check()

    def load(self) -> Splits:
        data = self._images().load()
        c = concept_class(self.params.concept)
        data.spec = self.spec()
        data.extras = {"concept": self.params.concept, "concept_class": c,
                       "erase_prompts": [t for t, k in training_captions() if k == c],
                       "prompts": concept_prompts(c), "retain_prompts": retain_prompts(c)}
        return data


def _with_concept(concept: str) -> type:
    return dataclasses.make_dataclass("Params", [("concept", str, dataclasses.field(default=concept))],
                                      bases=(EraseParams,), frozen=True, namespace={"__module__": __name__})


class FashionEraseSneaker(FashionErase):
    Params = _with_concept("sneaker")


class FashionEraseBag(FashionErase):
    Params = _with_concept("bag")


class FashionEraseTrouser(FashionErase):
    Params = _with_concept("trouser")
