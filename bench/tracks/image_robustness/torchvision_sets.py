"""MNIST and CIFAR-10 from a local root, optionally downloaded, read without pickle.

Root: ``Params.root``, else ``$BENCH_DATA``, else ``~/.cache/bench/data``. Nothing is fetched unless
``download=true`` (for users with a network); ``check()`` never touches the network.

- MNIST (LeCun et al.): torchvision's layout ``ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``
  (a flat folder with the four files also works), read with the IDX reader. Official 60000/10000 split.
  eps: linf 0.1 and 0.3, l2 2.0 (the MNIST conventions).
- CIFAR-10 (Krizhevsky, 2009): the official *binary* version only, ``ROOT/cifar-10-batches-bin/``
  (``data_batch_{1..5}.bin``, ``test_batch.bin``; records of 1 label byte + 3072 pixel bytes, channel-major).
  torchvision's ``cifar-10-batches-py`` is a set of pickles and is refused: unpickling a file can run code.
  Official 50000/10000 split. eps: linf 8/255, l2 0.5 (the RobustBench conventions).

Pixels are scaled to [0, 1]; ``n_train``/``n_test`` take class-balanced subsets independent of the run seed.
"""
from __future__ import annotations

import dataclasses
import tarfile
from pathlib import Path

import numpy as np

from bench.data import (
    MNIST_EPSILONS,
    MNIST_FILES,
    MNIST_SWEEP,
    CorruptData,
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

_SUBSETS = {"smoke": {"n_train": 512, "n_test": 256},
            "quick": {"n_train": 20000, "n_test": 1000},
            "full": {"n_train": None, "n_test": None}}


def _root(params) -> Path:
    return Path(params.root).expanduser() if params.root is not None else default_data_root()


class MNIST(Dataset):
    """MNIST, 60000/10000, (1, 28, 28) in [0, 1], from ``ROOT/MNIST/raw``."""

    name = "mnist"
    tracks = (TRACK,)
    input_shape = (1, 28, 28)
    num_classes = 10
    bounds = (0.0, 1.0)
    epsilons = MNIST_EPSILONS
    sweep = MNIST_SWEEP

    @dataclasses.dataclass(frozen=True)
    class Params:
        root: str | None = None  # None: $BENCH_DATA or ~/.cache/bench/data
        download: bool = False  # fetch the IDX files with torchvision's mirrors and checksums
        n_train: int | None = None  # None: all 60000
        n_test: int | None = None  # None: all 10000

    profiles = _SUBSETS

    def _folder(self) -> Path | None:
        root = _root(self.params)
        return find_idx_folder([root / "MNIST" / "raw", root, root / "mnist"])

    def check(self) -> None:
        folder = self._folder()
        if folder is None and not self.params.download:
            raw = _root(self.params) / "MNIST" / "raw"
            raise DataMissing(f"mnist: IDX files not found in {raw}; set download=true to fetch them "
                              f"(needs a network), or put {MNIST_FILES['train_x']}.gz and the other three there")
        if folder is not None:
            check_mnist_folder(folder, tuple(self.input_shape[1:]), self.num_classes)

    def files(self) -> list[Path]:
        folder = self._folder()
        return [] if folder is None else mnist_folder_files(folder)

    def _download(self) -> None:
        # torchvision's own file list, mirrors and MD5s; we keep the .gz files (the reader handles them) and
        # never construct torchvision.datasets.MNIST, whose legacy path may torch.load processed files.
        from torchvision.datasets import MNIST as TVMNIST
        from torchvision.datasets.utils import download_url
        raw = _root(self.params) / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for filename, md5 in TVMNIST.resources:
            errors = []
            for mirror in TVMNIST.mirrors:
                try:
                    download_url(f"{mirror}{filename}", str(raw), filename=filename, md5=md5)
                    break
                except Exception as exc:  # a network error: try the next mirror
                    errors.append(f"{mirror}: {exc}")
            else:
                raise DataMissing(f"mnist: could not download {filename}: {'; '.join(errors)}")

    def load(self) -> Splits:
        self.check()
        if self._folder() is None:
            self._download()
        folder = self._folder()
        if folder is None:
            raise DataMissing(f"mnist: download finished but files are still missing under {_root(self.params)}")
        return to_splits(self.spec(), read_mnist_folder(folder), self.params.n_train, self.params.n_test)


CIFAR_BIN_DIR = "cifar-10-batches-bin"
CIFAR_PY_DIR = "cifar-10-batches-py"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # published on https://www.cs.toronto.edu/~kriz/cifar.html
CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = ("test_batch.bin",)
_RECORD = 1 + 3 * 32 * 32


def read_cifar_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch: (uint8 images (N, 3, 32, 32), uint8 labels (N,))."""
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0 or data.size % _RECORD:
        raise CorruptData(f"corrupt CIFAR-10 batch {path}: {data.size} bytes is not a multiple of {_RECORD}; "
                          "delete it and fetch it again")
    records = data.reshape(-1, _RECORD)
    labels = records[:, 0].copy()
    if labels.max() > 9:
        raise CorruptData(f"corrupt CIFAR-10 batch {path}: label {labels.max()} > 9")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


class CIFAR10(Dataset):
    """CIFAR-10 (binary version), 50000/10000, (3, 32, 32) in [0, 1], from ``ROOT/cifar-10-batches-bin``."""

    name = "cifar10"
    tracks = (TRACK,)
    input_shape = (3, 32, 32)
    num_classes = 10
    bounds = (0.0, 1.0)
    epsilons = {"linf": (8 / 255,), "l2": (0.5,)}
    sweep = {"linf": (0.0, 2 / 255, 4 / 255, 6 / 255, 8 / 255, 12 / 255, 16 / 255),
             "l2": (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)}

    @dataclasses.dataclass(frozen=True)
    class Params:
        root: str | None = None  # None: $BENCH_DATA or ~/.cache/bench/data
        download: bool = False  # fetch cifar-10-binary.tar.gz (MD5-checked) and extract the six batches
        n_train: int | None = None  # None: all 50000
        n_test: int | None = None  # None: all 10000

    profiles = _SUBSETS

    def _folder(self) -> Path | None:
        root = _root(self.params)
        for folder in (root / CIFAR_BIN_DIR, root):
            if all((folder / name).is_file() for name in CIFAR_TRAIN + CIFAR_TEST):
                return folder
        return None

    def files(self) -> list[Path]:
        folder = self._folder()
        return [] if folder is None else [folder / name for name in CIFAR_TRAIN + CIFAR_TEST]

    def check(self) -> None:
        if self._folder() is not None or self.params.download:
            return
        root = _root(self.params)
        get = (f"get the binary version cifar-10-binary.tar.gz ({CIFAR_URL}) and extract it into {root} "
               f"(giving {root / CIFAR_BIN_DIR}), or set download=true")
        if (root / CIFAR_PY_DIR).is_dir():
            raise DataMissing(f"cifar10: only the python version ({root / CIFAR_PY_DIR}) is there, and it is "
                              f"refused for safety (its batches are pickles, and unpickling can run code); {get}")
        raise DataMissing(f"cifar10: binary batches not found in {root / CIFAR_BIN_DIR}; {get}")

    def _download(self) -> None:
        from torchvision.datasets.utils import download_url
        root = _root(self.params)
        root.mkdir(parents=True, exist_ok=True)
        archive = root / "cifar-10-binary.tar.gz"
        download_url(CIFAR_URL, str(root), filename=archive.name, md5=CIFAR_MD5)
        # Extract only the expected regular files, by base name: no path from the archive is trusted.
        wanted = set(CIFAR_TRAIN + CIFAR_TEST + ("batches.meta.txt",))
        out = root / CIFAR_BIN_DIR
        out.mkdir(exist_ok=True)
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                base = Path(member.name).name
                if member.isfile() and base in wanted:
                    (out / base).write_bytes(tar.extractfile(member).read())

    def load(self) -> Splits:
        self.check()
        if self._folder() is None:
            self._download()
        folder = self._folder()
        if folder is None:
            raise DataMissing(f"cifar10: download finished but batches are still missing under {_root(self.params)}")
        train = [read_cifar_bin(folder / name) for name in CIFAR_TRAIN]
        test_x, test_y = read_cifar_bin(folder / CIFAR_TEST[0])
        arrays = {"train_x": np.concatenate([x for x, _ in train]), "train_y": np.concatenate([y for _, y in train]),
                  "test_x": test_x, "test_y": test_y}
        return to_splits(self.spec(), arrays, self.params.n_train, self.params.n_test)
