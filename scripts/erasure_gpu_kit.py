"""Everything the concept-erasure track's full profile needs on a GPU host with no network and a 64 MiB upload,
in one ignored folder (~52 MB), for scripts/gpu_erasure.sh:

    python scripts/erasure_gpu_kit.py .data/gpu_erasure

- minilm.tar.xz: the float16 MiniLM copy (bench.tracks.text_robustness.minilm_copy), xz-compressed (41 MB instead of 45);
- diffusers.tar.xz: the installed diffusers package (the host lacks it; 2 MB instead of a 6 MB wheel);
- fashion.tar.xz: Fashion-MNIST's IDX files with only the images the profiles read kept (the class-balanced
  training and test subsets of fashion-erase-* in every profile: the judge's data, and the base model's), every other
  image zeroed. The labels are complete, and the subsets are chosen from the labels alone, so the selection
  (and every number computed from it) is the same as with the real files; zeros compress to nothing (8 MB).
"""
from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.data import subsample_indices  # noqa: E402
from bench.tracks.concept_erasure.datasets import FashionErase  # noqa: E402
from bench.tracks.image_robustness.fashion_mnist import FashionMNIST  # noqa: E402


def xz_tar(out: Path, folder: Path, *names: str) -> None:
    subprocess.run(f"tar cf - --exclude=__pycache__ {' '.join(names)} | xz -T0 -9 > {out}", shell=True,
                   check=True, cwd=folder)


def fashion_subset(dest: Path) -> None:
    """Every profile's images kept (the quick and smoke subsets are not inside the full one)."""
    params = [FashionErase.Params(**FashionErase.profiles.get(p, {})) for p in ("smoke", "quick", "full")]
    keep = {"train": [p.n_train for p in params], "t10k": [p.n_test for p in params]}
    src = FashionMNIST(FashionMNIST.Params())._folder()
    read = lambda name: (gzip.open(src / f"{name}.gz").read() if (src / f"{name}.gz").is_file()  # noqa: E731
                         else (src / name).read_bytes())
    raw = dest / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for split, sizes in keep.items():
        labels, images = read(f"{split}-labels-idx1-ubyte"), read(f"{split}-images-idx3-ubyte")
        y = np.frombuffer(labels, np.uint8, offset=8)
        x = np.frombuffer(images, np.uint8, offset=16).reshape(len(y), -1).copy()
        drop = np.ones(len(y), bool)
        for n in sizes:
            drop[subsample_indices(y, n)] = False
        x[drop] = 0
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(labels)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(images[:16] + x.tobytes())
        print(f"{split}: kept {len(y) - drop.sum()} of {len(y)} images")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    out = parser.parse_args().out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    import diffusers

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "bench.tracks.text_robustness.minilm_copy", str(tmp / "minilm")], check=True)
        xz_tar(out / "minilm.tar.xz", tmp / "minilm", ".")
        xz_tar(out / "diffusers.tar.xz", Path(diffusers.__file__).parents[1], "diffusers")
        fashion_subset(tmp / "data")
        xz_tar(out / "fashion.tar.xz", tmp / "data", "FashionMNIST")
    for f in sorted(out.iterdir()):
        print(f"{f}: {f.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
