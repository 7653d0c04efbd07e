"""Population membership inference against an unlearned model (no shadow models): the weaker baselines next to
LiRA, on the same footing -- class-matched non-members, a calibrated threshold, AUC with an interval."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.plugins import Evaluator
from bench.tracks.unlearning import TRACK
from bench.tracks.unlearning.membership import attack_metrics, candidate_parts
from bench.tracks.unlearning.scenarios import TRAIN_FIELDS, membership_sets, origin_of


@dataclass(frozen=True)
class Params:
    max_per_side: int = 2000  # at most this many members (remaining train) and non-members to fit the attack
    member_fpr: float = 0.05  # the stated false-positive rate of the calibrated "member" threshold
    resamples: int = 200  # bootstrap resamples of each interval
    bootstrap_seed: int = 0


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
                          ("population attack: logistic regression on (log p(label|x), entropy) of the softmax, "
                           "fitted on remaining-train members vs test non-members of the same classes")),
    "softmax-gbdt": (sorted_softmax,
                     ("gradient-boosted trees (scikit-learn HistGradientBoosting) on the sorted softmax vector (the "
                      "LAF paper's MIA), fitted on remaining-train members vs test non-members of the same classes")),
}


class MembershipInference(Evaluator):
    """Population membership inference on the forget set, two definitions (every metric names its
    ``definition_id``): ``confidence-logreg`` (logistic regression on the model's confidence in the sample's
    label and the entropy of its output) and ``softmax-gbdt`` (gradient-boosted trees on the sorted softmax
    vector, the LAF paper's MIA). Weaker than LiRA (no shadow models, one decision rule for every example).

    Fitted on the evaluated model's outputs: members = remaining training samples, non-members = test samples
    outside the held-out non-members, class-balanced against each other (``max_per_side`` at most each), so the
    attack learns membership and not class. The attack's score is its member probability; everything reported
    is computed from it exactly as for LiRA (``bench.tracks.unlearning.membership``): AUC and TPR at 1% / 0.1%
    FPR of the forget set vs held-out class-matched non-members with bootstrap intervals, the share of the forget
    set called member at a threshold calibrated on other held-out non-members to ``member_fpr`` (never the
    classifier's 0.5), and the validity gate -- the same attack fitted and scored on the original model.
    Labels: the training labels for train data (the noisy forget set's corrupted ones), the held-out non-members'
    labels corrupted alike in the noisy scenario, true labels for the fit's test samples.
    """

    track = TRACK
    consumes = "classifier"
    Params = Params
    profiles = {"smoke": {"max_per_side": 200, "resamples": 100}, "full": {"max_per_side": 5000}}

    def _scores(self, model, data, ms, ctx, seed):
        probs_train = ctx.logits(model, data.train_x).softmax(1)
        probs_held = ctx.logits(model, data.test_x[ms.nonmember]).softmax(1)
        probs_fit = ctx.logits(model, data.test_x[ms.fit_nonmembers]).softmax(1)
        side = min(self.params.max_per_side, len(ms.fit_members))
        pick = torch.randperm(len(ms.fit_members), generator=torch.Generator().manual_seed(seed))[:side]
        members, outsiders = ms.fit_members[pick], pick
        out = {}
        for definition, (features, _) in DEFINITIONS.items():
            x = np.concatenate([features(probs_train[members], data.train_y[members]),
                                features(probs_fit[outsiders], data.test_y[ms.fit_nonmembers][outsiders])])
            y = np.concatenate([np.ones(side), np.zeros(side)])
            attack = _classifier(definition, seed).fit(x, y)
            forget = attack.predict_proba(features(probs_train[ms.forget], data.train_y[ms.forget]))[:, 1]
            held = attack.predict_proba(features(probs_held, ms.nonmember_y))[:, 1]
            out[definition] = np.concatenate([forget, held])
        return out

    def evaluate(self, model, data, ctx):
        ms = membership_sets(data)
        recipe = {k: v for k, v in origin_of(model).get("params", {}).items() if k in TRAIN_FIELDS}
        seed = self.params.bootstrap_seed
        scores = self._scores(model, data, ms, ctx, seed)
        power = self._scores(ctx.model_of("original", **recipe), data, ms, ctx, seed)
        parts = candidate_parts(ms)
        metrics = []
        for definition, (_, text) in DEFINITIONS.items():
            s, q = scores[definition], power[definition]
            metrics += attack_metrics(definition, text, s[parts[0]], s[parts[1]], s[parts[2]], q[parts[0]],
                                      q[parts[2]], self.params.member_fpr, self.params.resamples, seed)
        return metrics
