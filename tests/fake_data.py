"""Tiny stand-ins for datasets users keep on their own disks, written in the real files' formats."""
from pathlib import Path

import numpy as np


def fake_cifar_bin(folder: Path, per_file: int = 20) -> None:
    """A CIFAR-10 binary root: five training batches and a test batch of ``per_file`` random images each."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = np.arange(per_file, dtype=np.uint8) % 10
        pixels = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
        np.concatenate([labels[:, None], pixels], axis=1).tofile(folder / name)
