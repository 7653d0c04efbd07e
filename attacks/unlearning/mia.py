"""Membership inference against an unlearned model: how much of the forget set still looks like training data."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.plugins import Evaluator
from bench.tracks.unlearning import TRACK
from bench.tracks.unlearning.scenarios import forget_remain


@dataclass(frozen=True)
class Params:
    max_per_side: int = 2000  # members (remaining train) and non-members (test) each, drawn at random
    holdout: float = 0.3  # fraction of them held out to measure the attack's own accuracy


def confidence_features(probs: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """log p(label | x) and the entropy of p(. | x): the population attack's view of the output."""
    p = probs.clamp_min(1e-12)
    log_label = p.gather(1, labels[:, None]).log()
    entropy = -(p * p.log()).sum(1, keepdim=True)
    return torch.cat([log_label, entropy], 1).numpy()


def sorted_softmax(probs: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """The softmax vector sorted in decreasing order (label-free)."""
    return probs.sort(dim=1, descending=True).values.numpy()


def _classifier(definition: str, seed: int):
    if definition == "confidence-logreg":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=100, random_state=seed)


DEFINITIONS = {
    "confidence-logreg": (confidence_features,
                          "population attack: logistic regression on (log p(label|x), entropy) of the softmax, "
                          "members = remaining train, non-members = test"),
    "softmax-gbdt": (sorted_softmax,
                     "gradient-boosted trees (scikit-learn HistGradientBoosting) on the sorted softmax vector, "
                     "members = remaining train, non-members = test (as in the LAF paper)"),
}


class MembershipInference(Evaluator):
    """Membership inference on the forget set, two definitions (every metric names its ``definition_id``):

    - ``confidence-logreg``: a population attack (no shadow models) on the model's confidence in the sample's
      label and the entropy of its output, logistic regression;
    - ``softmax-gbdt``: gradient-boosted trees on the sorted softmax vector (the LAF paper's MIA).

    Each is trained on ``max_per_side`` remaining-training samples (members) and as many test samples
    (non-members), minus a held-out ``holdout`` fraction. ``mia_forget`` = fraction of the forget set the
    attack calls members (the goal: retrain's value); ``mia_attack_acc`` = the attack's balanced accuracy on
    the held-out members/non-members (near 0.5: the model leaks little membership at all).
    Labels: the training labels for train data (the corrupted ones for the noisy forget set), test labels.
    """

    track = TRACK
    consumes = "classifier"
    Params = Params
    profiles = {"smoke": {"max_per_side": 200}, "full": {"max_per_side": 5000}}

    def evaluate(self, model, data, ctx):
        forget, remain = forget_remain(data)
        probs_train = ctx.logits(model, data.train_x).softmax(1)
        probs_test = ctx.logits(model, data.test_x).softmax(1)
        side = min(self.params.max_per_side, len(remain), len(data.test_y))
        members = remain[torch.randperm(len(remain), generator=ctx.generator)[:side]]
        outsiders = torch.randperm(len(data.test_y), generator=ctx.generator)[:side]
        held = int(round(self.params.holdout * side))
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator))
        metrics = []
        for definition, (features, text) in DEFINITIONS.items():
            fm = features(probs_train[members], data.train_y[members])
            fo = features(probs_test[outsiders], data.test_y[outsiders])
            x = np.concatenate([fm[held:], fo[held:]])
            y = np.concatenate([np.ones(side - held), np.zeros(side - held)])
            attack = _classifier(definition, seed).fit(x, y)
            forget_rate = attack.predict(features(probs_train[forget], data.train_y[forget])).mean()
            held_acc = 0.5 * (attack.predict(fm[:held]).mean() + 1 - attack.predict(fo[:held]).mean())
            base = {"definition_id": definition, "definition": text}
            metrics += [{"name": "mia_forget", "value": float(forget_rate), "n": len(forget), **base},
                        {"name": "mia_attack_acc", "value": float(held_acc), "n": 2 * held, **base}]
        return metrics
