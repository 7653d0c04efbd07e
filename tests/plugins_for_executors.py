"""A defense whose worker process dies mid-training, for the parallel executor's tests (kept out of
plugins_for_tests.EXTRA, whose plugins the contract tests run in the test process itself)."""
import multiprocessing
import os

from bench.plugins import Defense


class DiesInTraining(Defense):
    track = "image-robustness"

    def build(self, spec):
        from bench.models import build_model

        return build_model("cnn-small", spec.input_shape, spec.num_classes)

    def fit(self, model, data, ctx):
        if multiprocessing.parent_process() is None:  # never take the test process down
            raise RuntimeError("DiesInTraining only dies in a worker process")
        os._exit(3)  # as a segfault or the OOM killer would: no exception, no cleanup


EXTRA = {"defense": {"dies": "plugins_for_executors:DiesInTraining"}}
