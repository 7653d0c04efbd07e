"""Defenses that fail in training, for the executors' tests (kept out of plugins_for_tests.EXTRA, whose plugins
the contract tests run in the test process itself)."""
import multiprocessing
import os
import sys

from bench.plugins import Defense


def _in_ray_task() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized() and ray.get_runtime_context().get_task_id() is not None


class DiesInTraining(Defense):
    track = "image-robustness"

    def build(self, spec):
        from bench.tracks.image_robustness.models import build_model

        return build_model("cnn-small", spec.input_shape, spec.num_classes)

    def fit(self, model, data, ctx):
        if multiprocessing.parent_process() is None and not _in_ray_task():  # never take the test process down
            raise RuntimeError("DiesInTraining only dies in a worker process")
        os._exit(3)  # as a segfault or the OOM killer would: no exception, no cleanup


class RaisesInTraining(DiesInTraining):
    def fit(self, model, data, ctx):
        raise ValueError("boom: this defense cannot train")


class OutOfMemoryInLanes(DiesInTraining):
    """Runs out of memory in every worker process, as beside other lanes' peaks, and trains (a no-op) alone."""

    def fit(self, model, data, ctx):
        if multiprocessing.parent_process() is not None:
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 6.12 GiB (a test's)")


EXTRA = {"defense": {"dies": "plugins_for_executors:DiesInTraining",
                     "raises": "plugins_for_executors:RaisesInTraining",
                     "oom-in-lanes": "plugins_for_executors:OutOfMemoryInLanes"}}
