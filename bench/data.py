"""Helpers shared by the dataset plugins: seed-independent stratified subsets and numpy-only file readers."""
from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import zlib
from pathlib import Path

import numpy as np

from bench.errors import DataMissing, UsageError

# The subset seed is fixed, never the run seed: every seed and defense must see the same examples.
SUBSET_SEED = 0


class CorruptData(DataMissing):
    """A dataset file exists but cannot be parsed (truncated download, wrong file)."""


def default_data_root() -> Path:
    """``$BENCH_DATA`` or ``~/.cache/bench/data``."""
    return Path(os.environ.get("BENCH_DATA") or Path.home() / ".cache" / "bench" / "data").expanduser()


def stratified_order(y, seed: int = SUBSET_SEED) -> np.ndarray:
    """All indices of ``y``, ordered round-robin over classes (each class shuffled by ``seed``).

    Any prefix of this order is as class-balanced as the data allow, and a smaller prefix is a subset of a
    larger one (so the smoke subset is inside the quick subset).
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    rounds = max((len(p) for p in per_class), default=0)
    # Pad each class to `rounds` with -1 and read column-wise: position i of every class, then i + 1, ...
    grid = np.full((len(per_class), rounds), -1, dtype=np.int64)
    for row, idx in zip(grid, per_class):
        row[:len(idx)] = idx
    order = grid.T.ravel()
    return order[order >= 0]


def subsample_indices(y, n: int | None, seed: int = SUBSET_SEED) -> np.ndarray:
    """Sorted indices of a class-balanced subset of size ``n`` (all when ``n`` is None or too large)."""
    y = np.asarray(y)
    if n is None or n >= len(y):
        return np.arange(len(y))
    if n < 0:
        raise UsageError(f"subset size (n_train/n_test) must be >= 0, got {n}")
    return np.sort(stratified_order(y, seed)[:n])


def subsample(x, y, n: int | None, seed: int = SUBSET_SEED):
    """``(x[idx], y[idx])`` for the class-balanced subset of size ``n``; works on numpy arrays and tensors."""
    idx = subsample_indices(np.asarray(y), n, seed)
    if len(idx) == len(y):
        return x, y
    if not isinstance(x, np.ndarray):  # torch tensors: index with a tensor, not a numpy array
        import torch
        idx = torch.from_numpy(idx)
    return x[idx], y[idx]


def stratified_split(y, n_test: int, seed: int = SUBSET_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices), both sorted: a fixed class-balanced test set of ``n_test``, the rest train."""
    order = stratified_order(y, seed)
    if not 0 < n_test < len(order):
        raise ValueError(f"n_test must be in (0, {len(order)}), got {n_test}")
    return np.sort(order[n_test:]), np.sort(order[:n_test])


# --- IDX (the MNIST file format): magic = 0x00 0x00 <type code> <ndim>, then ndim big-endian uint32 sizes.
IDX_IMAGES = 2051  # 0x0803: unsigned bytes, 3 dims (N, rows, cols); header 16 bytes
IDX_LABELS = 2049  # 0x0801: unsigned bytes, 1 dim (N,); header 8 bytes
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path, expect_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (raw, or gzip when the name ends in .gz) into a numpy array of its shape."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise CorruptData(f"corrupt IDX file {path}: {type(exc).__name__}: {exc}; delete it and fetch it again") from exc
    return parse_idx(data, str(path), expect_magic)


def parse_idx(data: bytes, where: str = "<bytes>", expect_magic: int | None = None) -> np.ndarray:
    def bad(why: str) -> CorruptData:
        return CorruptData(f"corrupt IDX file {where}: {why}; delete it and fetch it again")

    if len(data) < 4:
        raise bad(f"only {len(data)} bytes")
    magic = int.from_bytes(data[:4], "big")
    if expect_magic is not None and magic != expect_magic:
        raise bad(f"magic number {magic}, expected {expect_magic}")
    zero, type_code, ndim = magic >> 16, (magic >> 8) & 0xFF, magic & 0xFF
    if zero != 0 or type_code not in _IDX_TYPES or ndim == 0:
        raise bad(f"magic number {magic} is not an IDX header")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise bad("truncated header")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[type_code])
    expected = math.prod(shape) * dtype.itemsize  # Python ints: a forged header cannot overflow it
    if len(data) - offset != expected:
        raise bad(f"{len(data) - offset} data bytes for shape {shape}, expected {expected}")
    # Native byte order so torch.from_numpy accepts it; copy so the array owns writable memory.
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def find_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists (raw first: it is faster)."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}


def find_idx_folder(candidates) -> Path | None:
    """The first folder holding all four MNIST-style IDX files (each raw or .gz)."""
    for folder in candidates:
        folder = Path(folder)
        if all(find_file(folder, name) for name in MNIST_FILES.values()):
            return folder
    return None


_CHUNK = 1 << 20


def _idx_header(f, path: Path, expect_magic: int) -> tuple[int, ...]:
    """The shape in the header of the open IDX file ``f`` (positioned at its start), checked against
    ``expect_magic`` (unsigned bytes, and the number of dimensions)."""
    def bad(why: str) -> CorruptData:
        return CorruptData(f"corrupt IDX file {path}: {why}; delete it and fetch it again")

    head = f.read(4)
    if len(head) < 4:
        raise bad(f"only {len(head)} bytes")
    magic = int.from_bytes(head, "big")
    if magic != expect_magic:
        kind = {IDX_IMAGES: "an images file", IDX_LABELS: "a labels file"}.get(magic, "not an IDX file")
        raise bad(f"magic number {magic} ({kind}), expected {expect_magic}")
    ndim = magic & 0xFF
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise bad("truncated header")
    return tuple(int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(ndim))


def _check_idx_file(path: Path, expect_magic: int, image_shape=None, num_classes=None) -> int:
    """Check one uint8 IDX file without keeping it in memory; the number of items. Images: the header's shape is
    (N, *image_shape) and the data size matches it (a .gz is read through once, which also checks its CRC);
    labels: N labels, each below ``num_classes``."""
    def bad(why: str) -> CorruptData:
        return CorruptData(f"corrupt IDX file {path}: {why}; delete it and fetch it again")

    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            shape = _idx_header(f, path, expect_magic)
            if image_shape is not None and tuple(shape[1:]) != tuple(image_shape):
                size = "x".join(map(str, shape[1:]))
                raise bad(f"images of {size} pixels, expected {'x'.join(map(str, image_shape))}")
            expected = math.prod(shape)
            if path.suffix != ".gz" and expect_magic == IDX_IMAGES:
                n = path.stat().st_size - f.tell()
            else:
                # In chunks, never f.read(expected): a forged header could ask for gigabytes at once.
                n, top = 0, -1
                while chunk := f.read(_CHUNK):
                    n += len(chunk)
                    if expect_magic == IDX_LABELS:
                        top = max(top, int(np.frombuffer(chunk, dtype=np.uint8).max()))
                    if n > expected:
                        break
                if n == expected and num_classes is not None and top >= num_classes:
                    raise bad(f"label {top} is outside 0..{num_classes - 1}")
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise bad(f"{type(exc).__name__}: {exc}") from exc
    if n != expected:
        raise bad(f"{'more than ' if n > expected else ''}{n} data bytes for shape {shape}, expected {expected}")
    return shape[0]


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=64)
def _check_mnist_files(stamps: tuple, image_shape: tuple[int, ...], num_classes: int) -> None:
    files = {key: Path(stamp[0]) for key, stamp in zip(MNIST_FILES, stamps)}
    for split in ("train", "test"):
        n_x = _check_idx_file(files[f"{split}_x"], IDX_IMAGES, image_shape=image_shape)
        n_y = _check_idx_file(files[f"{split}_y"], IDX_LABELS, num_classes=num_classes)
        if n_x != n_y:
            raise CorruptData(f"{files[f'{split}_x']} has {n_x} images but {files[f'{split}_y']} has {n_y} labels; "
                              f"one of them is from another dataset or damaged: fetch both again")


def check_mnist_folder(folder: Path, image_shape: tuple[int, ...] = (28, 28), num_classes: int = 10) -> None:
    """Raise ``CorruptData`` (one line, naming the file) unless the four MNIST-style IDX files of ``folder`` have
    the right headers, sizes, image shape and labels, and each split as many labels as images. Cheap enough for
    ``Dataset.check()``: the label files are read, the image files streamed once (Fashion-MNIST: ~0.2 s), and
    the result is remembered per (path, size, mtime) in this process."""
    stamps = tuple(_stamp(find_file(folder, name)) for name in MNIST_FILES.values())
    _check_mnist_files(stamps, tuple(image_shape), int(num_classes))


def mnist_folder_files(folder: Path) -> list[Path]:
    """The four IDX files that ``read_mnist_folder(folder)`` reads (each raw or .gz)."""
    return [find_file(folder, name) for name in MNIST_FILES.values()]


def read_mnist_folder(folder: Path) -> dict[str, np.ndarray]:
    """The four MNIST-style arrays of ``folder``: uint8 images (N, 28, 28) and uint8 labels (N,)."""
    out = {}
    for key, name in MNIST_FILES.items():
        magic = IDX_IMAGES if key.endswith("_x") else IDX_LABELS
        out[key] = read_idx(find_file(folder, name), expect_magic=magic)
    for split in ("train", "test"):
        if len(out[f"{split}_x"]) != len(out[f"{split}_y"]):
            raise CorruptData(f"{folder}: {split} has {len(out[f'{split}_x'])} images "
                              f"but {len(out[f'{split}_y'])} labels")
    return out


@functools.lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """The hex SHA-256 of a file's bytes, computed once per (path, size, mtime) in this process."""
    return _sha256(*_stamp(Path(path)))


def images_to_tensor(images: np.ndarray, scale: float = 255.0):
    """uint8-like (N, H, W) or (N, C, H, W) -> float32 tensor (N, C, H, W) in [0, 1]."""
    import torch
    if images.ndim == 3:
        images = images[:, None]
    return torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(scale)


def labels_to_tensor(labels: np.ndarray):
    import torch
    return torch.from_numpy(np.asarray(labels, dtype=np.int64))


def to_splits(spec, arrays: dict[str, np.ndarray], n_train: int | None, n_test: int | None,
              scale: float = 255.0):
    """``bench.plugins.Splits`` from numpy arrays, subsampled (class-balanced, seed-independent) before the
    float conversion so small profiles never materialise the full float tensors."""
    from bench.plugins import Splits
    train_x, train_y = subsample(arrays["train_x"], arrays["train_y"], n_train)
    test_x, test_y = subsample(arrays["test_x"], arrays["test_y"], n_test)
    return Splits(spec=spec,
                  train_x=images_to_tensor(train_x, scale), train_y=labels_to_tensor(train_y),
                  test_x=images_to_tensor(test_x, scale), test_y=labels_to_tensor(test_y))


# MNIST's conventional budgets (Madry et al.: Linf 0.3; L2 2.0), shared by every MNIST-derived dataset.
MNIST_EPSILONS = {"linf": (0.1, 0.3), "l2": (2.0,)}
MNIST_SWEEP = {"linf": (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4), "l2": (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)}
