"""The original model of an unlearning scenario: what every unlearning method starts from."""
from __future__ import annotations

from bench.tracks.image_robustness.training import train_classifier
from bench.tracks.unlearning.scenarios import UnlearningDefense


class Original(UnlearningDefense):
    """Cross-entropy training on the whole training set, forget set included (with its corrupted labels in the
    noisy-label scenario). The runner caches it; every method asks for it with ``ctx.model_of("original")``.

    Not an unlearning method: its row in the table shows what there is to unlearn. Defaults: bench's ``cnn``
    (256-d embedding), Adam 1e-3 with a cosine schedule, batch 64, 5 epochs (quick); 10 epochs, batch 256
    (full). Departure from the LAF paper (Adam 1e-4, weight decay 1e-4, 20 epochs, batch 32): fewer, larger
    steps, to fit the CPU quick profile and the GPU time budget.
    """

    def fit(self, model, data, ctx) -> None:
        train_classifier(model, data, ctx, self.params, desc=self.name)
