"""Accuracy of an unlearned model on the scenario's remaining, forget and test data, and how far it moved."""
from __future__ import annotations

import torch

from bench.plugins import Evaluator
from bench.tracks.unlearning import TRACK
from bench.tracks.unlearning.scenarios import TRAIN_FIELDS, forget_remain, origin_of


def weight_change(model, original) -> float:
    """||theta - theta_orig|| / ||theta_orig|| over all parameters (2-norms of the flattened vectors)."""
    diff = sum(float((a.detach().cpu().double() - b.detach().cpu().double()).pow(2).sum())
               for a, b in zip(model.parameters(), original.parameters()))
    base = sum(float(b.detach().cpu().double().pow(2).sum()) for b in original.parameters())
    return (diff / base) ** 0.5 if base > 0 else 0.0


class UnlearningAccuracy(Evaluator):
    """Top-1 accuracy on the remaining training data (``remain``), the forget set (``forget``, against the
    labels the original model was trained with) and the test data (``test``). Class removal splits the test
    data into the retained classes (``test-retained``) and the forgotten ones (``test-forgotten``); noisy-label
    removal adds the forget set against its true labels (``forget-true``). The goal is retrain's numbers.

    Diagnostics (is the model moved at all?): ``agree_original`` / ``agree_retrain``, the share of forget-set
    predictions equal to those of the original model / of retrain (the same training recipe, from the runner's
    cache); ``weight_change``, ||theta - theta_orig|| / ||theta_orig|| (recorded as 1 when larger: records hold
    fractions). A method that leaves the model where it was agrees with the original on about 100% of the
    forget set, more than retrain does, with a weight change near 0.
    """

    track = TRACK
    consumes = "classifier"

    def evaluate(self, model, data, ctx):
        forget, remain = forget_remain(data)
        predicted = ctx.logits(model, data.train_x).argmax(1)
        test_predicted = ctx.logits(model, data.test_x).argmax(1)

        def acc(split, pred, y, what):
            return {"name": "acc", "split": split, "value": float((pred == y).float().mean()), "n": len(y),
                    "definition": f"top-1 accuracy on {what}"}

        metrics = [acc("remain", predicted[remain], data.train_y[remain], "the remaining training data"),
                   acc("forget", predicted[forget], data.train_y[forget],
                       "the forget set, against its training labels")]
        if "clean_train_y" in data.extras:
            metrics.append(acc("forget-true", predicted[forget], data.extras["clean_train_y"][forget],
                               "the forget set, against its true (uncorrupted) labels"))
        classes = data.extras.get("forget_classes")
        if classes:
            gone = torch.isin(data.test_y, torch.tensor(classes))
            metrics += [acc("test-retained", test_predicted[~gone], data.test_y[~gone],
                            "test data of the retained classes"),
                        acc("test-forgotten", test_predicted[gone], data.test_y[gone],
                            f"test data of the forgotten class(es) {list(classes)}")]
        else:
            metrics.append(acc("test", test_predicted, data.test_y, "the test data"))
        return metrics + self.diagnostics(model, data, ctx, predicted[forget], forget)

    def diagnostics(self, model, data, ctx, forget_predicted, forget):
        recipe = {k: v for k, v in origin_of(model).get("params", {}).items() if k in TRAIN_FIELDS}
        metrics = []
        original = None
        for other in ("original", "retrain"):
            reference = ctx.model_of(other, **recipe)
            original = reference if other == "original" else original
            theirs = ctx.logits(reference, data.train_x[forget]).argmax(1)
            metrics.append({"name": f"agree_{other}", "value": float((forget_predicted == theirs).float().mean()),
                            "n": len(forget), "definition": f"share of the forget set's predictions equal to "
                                                            f"{other}'s (same training recipe)"})
        change = weight_change(model, original)
        metrics.append({"name": "weight_change", "value": min(1.0, change), "n": sum(p.numel() for p in
                                                                                     model.parameters()),
                        "definition": "||theta - theta_orig|| / ||theta_orig|| over all parameters"
                                      + (f" (capped: actually {change:.3g})" if change > 1 else "")})
        return metrics
