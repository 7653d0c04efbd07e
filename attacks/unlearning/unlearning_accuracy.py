"""Accuracy of an unlearned model on the scenario's remaining, forget and test data."""
from __future__ import annotations

from bench.plugins import Evaluator
from bench.tracks.unlearning import TRACK
from bench.tracks.unlearning.scenarios import forget_remain


class UnlearningAccuracy(Evaluator):
    """Top-1 accuracy on the remaining training data (``remain``), the forget set (``forget``, against the
    labels the original model was trained with) and the test data (``test``). Class removal splits the test
    data into the retained classes (``test-retained``) and the forgotten ones (``test-forgotten``); noisy-label
    removal adds the forget set against its true labels (``forget-true``). The goal is retrain's numbers.
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
            import torch

            gone = torch.isin(data.test_y, torch.tensor(classes))
            metrics += [acc("test-retained", test_predicted[~gone], data.test_y[~gone],
                            "test data of the retained classes"),
                        acc("test-forgotten", test_predicted[gone], data.test_y[gone],
                            f"test data of the forgotten class(es) {list(classes)}")]
        else:
            metrics.append(acc("test", test_predicted, data.test_y, "the test data"))
        return metrics
