"""The original model of an unlearning scenario: what every unlearning method starts from."""
from __future__ import annotations

from bench.tracks.image_robustness.training import train_classifier
from bench.tracks.unlearning.scenarios import UnlearningDefense


class Original(UnlearningDefense):
    """Cross-entropy training on the whole training set, forget set included (with its corrupted labels in the
    noisy-label scenario). The runner caches it; every method asks for it with ``ctx.model_of("original")``.

    Not an unlearning method: its row in the table shows what there is to unlearn. Defaults: the LAF paper's
    base training -- its CNN (``laf-cnn``; ``resnet18`` on CIFAR-10), Adam 1e-4, weight decay 1e-4, batch 32,
    constant lr, the scenario's ``train_epochs`` (20 as in the paper; the noisy-label scenarios train until the
    original has fit most of the corrupted labels, no early stopping). quick = the same recipe on 2,000
    Fashion-MNIST images; smoke is a few-second stand-in (cnn-small, 4 epochs, lr 3e-3).
    Departures: the paper's ResNet-18 is torchvision's ImageNet one on 224x224 inputs with a 256-d FC
    embedding; ours is the CIFAR-style ResNet-18 on 32x32 (embedding = its 512-d pooled features), no
    augmentation.
    """

    def fit(self, model, data, ctx) -> None:
        train_classifier(model, data, ctx, self.recipe(data), desc=self.name)
