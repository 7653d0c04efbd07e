"""UCI optical digits as shipped by scikit-learn (``sklearn.datasets.load_digits``): 1797 8x8 images.

Source: the UCI "Optical Recognition of Handwritten Digits" test set bundled with scikit-learn (no download).
Pixels are counts 0-16, divided by 16 into [0, 1]; shape (1, 8, 8). Split: no official one; a fixed stratified
split (seed ``SUBSET_SEED`` = 0, independent of the run seed) holds out 360 images (36 per class) as test and
keeps 1437 for training. eps are in the [0, 1] scale; with 64 pixels the l2 budget 1.0 is about a uniform
linf change of 0.125.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np

from bench.data import stratified_split, to_splits
from bench.errors import DataMissing
from bench.plugins import Dataset, Splits
from bench.tracks.image_robustness import TRACK

N_TEST = 360


class UCIDigits(Dataset):
    """scikit-learn digits, fixed stratified 1437/360 split, (1, 8, 8) in [0, 1]."""

    name = "uci-digits"
    tracks = (TRACK,)
    input_shape = (1, 8, 8)
    num_classes = 10
    bounds = (0.0, 1.0)
    epsilons = {"linf": (0.1, 0.2), "l2": (1.0,)}
    sweep = {"linf": (0.0, 0.05, 0.1, 0.15, 0.2, 0.3),
             "l2": (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)}

    @dataclasses.dataclass(frozen=True)
    class Params:
        n_train: int | None = None  # None: all 1437
        n_test: int | None = None  # None: all 360

    profiles = {"smoke": {"n_train": 512, "n_test": 256}}

    def check(self) -> None:
        # find_spec, not import: importing scikit-learn takes a second; the data ship inside the package.
        if importlib.util.find_spec("sklearn") is None:
            raise DataMissing("uci-digits: scikit-learn is not installed; pip install scikit-learn")

    def files(self) -> list[Path]:
        # What load_digits() reads: sklearn/datasets/data/digits.csv.gz, found without importing scikit-learn.
        spec = importlib.util.find_spec("sklearn")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
            if path.is_file():
                return [path]
        return []

    def load(self) -> Splits:
        from sklearn.datasets import load_digits
        digits = load_digits()
        x, y = digits.images.astype(np.float32), digits.target.astype(np.int64)
        train, test = stratified_split(y, N_TEST)
        arrays = {"train_x": x[train], "train_y": y[train], "test_x": x[test], "test_y": y[test]}
        return to_splits(self.spec(), arrays, self.params.n_train, self.params.n_test, scale=16.0)
