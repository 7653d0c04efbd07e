"""fashion-dg: single-source clothing recognition, trained on Fashion-MNIST, tested on seven shifted domains.

Source: Fashion-MNIST (the ``fashion-mnist`` plugin's files), replicated to 3 channels, 28x28. Targets
(``Splits.extras["domains"]``) are built from the same ``n_target`` test images (paired: every domain shows the
same garments), from ``domain_seed``, and cached (see ``bench.tracks.domain_shift.domains``):

- ``m-blend``: |patch - x| with random crops of scikit-learn's two photographs (MNIST-M's recipe);
- ``colour``: random foreground and background colours (luminance gap >= 0.35, either polarity);
- ``inverted``: 1 - x;
- ``noise``, ``blur``, ``contrast``, ``fog``: corruptions in the spirit of MNIST-C / ImageNet-C at severities
  1..5, one severity per image (image i: 1 + i % 5), so each domain's accuracy averages the five levels.

There is no published Fashion-MNIST domain-generalisation protocol; this one is ours. eps follow the
``fashion-mnist`` conventions (linf 0.1 and 0.2, l2 1.5) so the image-robustness attacks apply too.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from bench.data import read_mnist_folder, subsample, to_splits
from bench.plugins import Dataset, Splits
from bench.tracks import domain_shift, image_robustness
from bench.tracks.domain_shift import domains as dom
from bench.tracks.image_robustness.fashion_mnist import FashionMNIST

NOTES = {
    "m-blend": "test images blended with random crops of 2 photographs, |patch - x| (MNIST-M recipe)",
    "colour": "random foreground/background colours, luminance gap >= 0.35, either polarity",
    "inverted": "1 - x",
    "noise": "Gaussian noise, sigma 0.08..0.38 (severities 1-5, ImageNet-C values)",
    "blur": "Gaussian blur, sigma 0.5..1.5 px (severities 1-5)",
    "contrast": "contrast scaled by 0.4..0.05 around the mean (severities 1-5, ImageNet-C values)",
    "fog": "ImageNet-C fog formula with a smooth random field, c 0.2..1.5 (severities 1-5)",
}
CORRUPTIONS = {"noise": dom.gaussian_noise, "blur": dom.gaussian_blur, "contrast": dom.contrast, "fog": dom.fog}


class FashionDG(Dataset):
    """Fashion-MNIST -> {M-blend, colour, inverted, noise, blur, contrast, fog}, (3, 28, 28) in [0, 1]."""

    name = "fashion-dg"
    tracks = (domain_shift.TRACK, image_robustness.TRACK)
    input_shape = (3, 28, 28)
    num_classes = 10
    bounds = (0.0, 1.0)
    epsilons = FashionMNIST.epsilons
    sweep = FashionMNIST.sweep

    @dataclasses.dataclass(frozen=True)
    class Params:
        root: str | None = None  # as fashion-mnist: None = the Debian location, then $BENCH_DATA
        n_train: int | None = None  # None: all 60000 (a fifth is held out for model selection)
        n_test: int | None = None  # source test images; None: all 10000
        n_target: int | None = 2000  # test images each target domain is built from; None: all 10000
        domain_seed: int = 0  # builds the target domains; independent of the run seed

    profiles = {"smoke": {"n_train": 512, "n_test": 256, "n_target": 200},
                "quick": {"n_train": 6000, "n_test": 1000, "n_target": 1000}}

    def _files(self) -> FashionMNIST:
        return FashionMNIST(FashionMNIST.Params(root=self.params.root))

    def check(self) -> None:
        self._files().check()

    def _targets(self, test_x: np.ndarray, test_y: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(self.params.domain_seed)
        grey, y = subsample(test_x, test_y, self.params.n_target)
        fg, bg = dom.contrasting_colours(rng, len(grey))
        out = {"m-blend": (dom.m_blend(grey, rng), y),
               "colour": (dom.colourise(grey, fg, bg), y),
               "inverted": (dom.to_rgb(1 - grey), y)}
        for name, corrupt in CORRUPTIONS.items():
            out[name] = (dom.to_rgb(corrupt(grey, rng)), y)
        return out

    def load(self) -> Splits:
        p = self.params
        arrays = read_mnist_folder(self._files()._folder())
        test_x = arrays["test_x"].astype(np.float32) / 255.0
        config = {"n_target": p.n_target, "domain_seed": p.domain_seed}
        targets = dom.cached_domains(self.name, config, lambda: self._targets(test_x, arrays["test_y"]))
        train_x, train_y = subsample(arrays["train_x"], arrays["train_y"], p.n_train)
        source_x, source_y = subsample(test_x, arrays["test_y"], p.n_test)
        rgb = {"train_x": dom.to_rgb(train_x.astype(np.float32) / 255.0), "train_y": train_y,
               "test_x": dom.to_rgb(source_x), "test_y": source_y}
        splits = to_splits(self.spec(), rgb, None, None, scale=1.0)
        splits.extras["domains"] = dom.as_tensors(targets)
        splits.extras["domain_notes"] = dict(NOTES)
        return splits
