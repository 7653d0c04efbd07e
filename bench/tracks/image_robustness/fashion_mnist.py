"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017): 28x28 grey images of 10 clothing classes.

Source: the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), or any folder in
torchvision's layout (``ROOT/FashionMNIST/raw``) or holding the four IDX files directly; files may be gzipped.
Split: the official 60000 train / 10000 test; ``n_train``/``n_test`` take class-balanced subsets that do not
depend on the run seed. Pixels are scaled to [0, 1]; eps are in that scale (linf 0.1 and 0.2 are the usual
Fashion-MNIST budgets, l2 1.5 as in the MNIST-family literature).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from bench.data import (
    MNIST_FILES,
    check_mnist_folder,
    default_data_root,
    find_idx_folder,
    mnist_folder_files,
    read_mnist_folder,
    to_splits,
)
from bench.errors import DataMissing
from bench.plugins import Dataset, Splits
from bench.tracks.image_robustness import TRACK

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"


class FashionMNIST(Dataset):
    """Fashion-MNIST, 60000/10000, (1, 28, 28) in [0, 1]."""

    name = "fashion-mnist"
    tracks = (TRACK,)
    input_shape = (1, 28, 28)
    num_classes = 10
    bounds = (0.0, 1.0)
    epsilons = {"linf": (0.1, 0.2), "l2": (1.5,)}
    sweep = {"linf": (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3),
             "l2": (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)}

    @dataclasses.dataclass(frozen=True)
    class Params:
        root: str | None = None  # None: the Debian location, then $BENCH_DATA (or ~/.cache/bench/data)
        n_train: int | None = None  # None: all 60000
        n_test: int | None = None  # None: all 10000

    # quick: the whole training set (a small CNN trains in minutes on 2 CPU cores) and 1,000 test images.
    profiles = {
        "smoke": {"n_train": 512, "n_test": 256},
        "quick": {"n_train": None, "n_test": 1000},
        "full": {"n_train": None, "n_test": None},
    }

    def _candidates(self) -> list[Path]:
        if self.params.root is None:
            return [DEBIAN_DIR, default_data_root() / "FashionMNIST" / "raw"]
        root = Path(self.params.root).expanduser()
        return [root, root / "FashionMNIST" / "raw", root / "fashion-mnist"]

    def _folder(self) -> Path:
        folder = find_idx_folder(self._candidates())
        if folder is not None:
            return folder
        if self.params.root is None:
            raise DataMissing(
                f"fashion-mnist: files not found in {DEBIAN_DIR}; install the Debian package: "
                f"apt-get install {DEBIAN_PACKAGE} (or pass --data-root DIR in torchvision's layout)")
        root = Path(self.params.root).expanduser()
        raise DataMissing(
            f"fashion-mnist: {', '.join(MNIST_FILES.values())} (raw or .gz) not found in {root} "
            f"nor in {root / 'FashionMNIST' / 'raw'}; or install the Debian package: "
            f"apt-get install {DEBIAN_PACKAGE} and leave the root unset")

    def check(self) -> None:
        # Headers, sizes, 28x28 and labels 0..9 of the four files (remembered per file in this process).
        check_mnist_folder(self._folder(), tuple(self.input_shape[1:]), self.num_classes)

    def files(self) -> list[Path]:
        folder = find_idx_folder(self._candidates())
        return [] if folder is None else mnist_folder_files(folder)

    def load(self) -> Splits:
        arrays = read_mnist_folder(self._folder())
        return to_splits(self.spec(), arrays, self.params.n_train, self.params.n_test)
