"""Plugins that misbehave on purpose, registered through ``Registry(extra=...)`` by the tests."""
from dataclasses import dataclass

import torch

from bench.plugins import Attack, Defense


class CheatingAttack(Attack):
    """Steps three times outside the Linf ball and out of the [0, 1] box: the framework must clip and flag."""

    track = "image-robustness"
    norm = "linf"

    def perturb(self, model, x, y, eps, ctx):
        signs = torch.randint(0, 2, x.shape, generator=ctx.generator).to(x) * 2 - 1
        return x + 3 * eps * signs + 0.5


class FailingAttack(Attack):
    track = "image-robustness"
    norm = "linf"

    def perturb(self, model, x, y, eps, ctx):
        raise RuntimeError("boom: this attack always fails")


class InterruptingAttack(Attack):
    """Simulates Ctrl-C in the middle of a grid."""

    track = "image-robustness"
    norm = "linf"

    def perturb(self, model, x, y, eps, ctx):
        raise KeyboardInterrupt


class TextDefense(Defense):
    track = "text-robustness"
    modality = "text"

    def build(self, spec):
        raise AssertionError("must be refused before any compute")

    def fit(self, model, data, ctx):
        raise AssertionError("must be refused before any compute")


@dataclass(frozen=True)
class TeacherParams:
    epochs: int = 1


class NeedsTeacher(Defense):
    """Copies the weights of the runner's cached ``standard`` model, as a distillation method would start."""

    track = "image-robustness"
    Params = TeacherParams

    def build(self, spec):
        from bench.tracks.image_robustness.models import build_model

        return build_model("cnn-small", spec.input_shape, spec.num_classes)

    def fit(self, model, data, ctx):
        teacher = ctx.model_of("standard")
        model.load_state_dict(teacher.state_dict())
        ctx.log(teacher_params=sum(p.numel() for p in teacher.parameters()))


EXTRA = {
    "attack": {"cheat": "plugins_for_tests:CheatingAttack", "fail": "plugins_for_tests:FailingAttack",
               "interrupt": "plugins_for_tests:InterruptingAttack"},
    "defense": {"text-only": "plugins_for_tests:TextDefense", "needs-teacher": "plugins_for_tests:NeedsTeacher",
                "broken": "no_such_module_anywhere:Plugin"},
}


from bench.errors import NotCertifiable  # noqa: E402
from bench.plugins import Certifier  # noqa: E402


class ClaimsEverything(Certifier):
    """Unsound on purpose: 'certifies' every example; the framework must catch it."""

    track = "image-robustness"

    def certify(self, model, x, y, eps, ctx):
        return torch.ones(len(x), dtype=torch.bool)


class CertifiesNothing(Certifier):
    """Trivially sound."""

    track = "image-robustness"

    def certify(self, model, x, y, eps, ctx):
        return torch.zeros(len(x), dtype=torch.bool)


class RefusesConv(Certifier):
    track = "image-robustness"

    def certify(self, model, x, y, eps, ctx):
        raise NotCertifiable("Conv2d")


EXTRA["attack"].update({"claims-everything": "plugins_for_tests:ClaimsEverything",
                        "certifies-nothing": "plugins_for_tests:CertifiesNothing",
                        "refuses-conv": "plugins_for_tests:RefusesConv"})

from bench.plugins import Evaluator  # noqa: E402


class PerClassAccuracy(Evaluator):
    """A metric-only evaluator: test accuracy of classes 0 and 1 (exercises the runner's evaluator path)."""

    track = "image-robustness"

    def evaluate(self, model, data, ctx):
        out = []
        for c in (0, 1):
            mask = data.test_y == c
            out.append({"name": "class_acc", "split": f"class {c}", "n": int(mask.sum()),
                        "value": ctx.accuracy(model, data.test_x[mask], data.test_y[mask]),
                        "definition": f"test accuracy on class {c}"})
        return out


class MetricWithoutDefinition(Evaluator):
    track = "image-robustness"

    def evaluate(self, model, data, ctx):
        return [{"name": "x", "value": 1.0, "n": 1}]


EXTRA["attack"].update({"per-class": "plugins_for_tests:PerClassAccuracy",
                        "no-definition": "plugins_for_tests:MetricWithoutDefinition"})


class ClaimsRobustness(Attack):
    """Overrides a ``robust`` method to claim every example survives: the framework never calls it; the number
    comes from the inputs ``perturb`` returns."""

    track = "image-robustness"
    norm = "linf"

    def robust(self, model, x, y, eps, ctx):
        return torch.ones(len(x), dtype=torch.bool)

    def perturb(self, model, x, y, eps, ctx):
        return (x + eps * torch.sign(torch.randn(x.shape, generator=ctx.generator))).clamp(0, 1)


class NaNModel(Defense):
    """A model whose logits are NaN: it must fail its cells, not score as a 10 % classifier."""

    track = "image-robustness"

    def build(self, spec):
        import torch.nn as nn

        class Broken(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(int(torch.tensor(spec.input_shape).prod()), spec.num_classes)

            def forward(self, x):
                return self.fc(x.flatten(1)) * float("nan")

        return Broken()

    def fit(self, model, data, ctx):
        pass


class ExitsOnce(Attack):
    """Kills its own process (``os._exit``) the first time it runs in a results folder, as a crashing native
    extension would; runs like FGSM afterwards."""

    track = "image-robustness"
    norm = "linf"

    def perturb(self, model, x, y, eps, ctx):
        import os
        from pathlib import Path

        marker = Path(os.environ["BENCH_TEST_EXIT_MARKER"])
        if not marker.exists():
            marker.write_text("exited\n")
            os._exit(137)
        x = x.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        return (x + eps * x.grad.sign()).clamp(0, 1).detach()


EXTRA["attack"].update({"claims-robustness": "plugins_for_tests:ClaimsRobustness",
                        "exits-once": "plugins_for_tests:ExitsOnce"})
EXTRA["defense"].update({"nan-model": "plugins_for_tests:NaNModel"})


class CountsCalls(Attack):
    """FGSM that appends a line to ``$BENCH_TEST_CALLS`` per call, to count how often a cell is computed."""

    track = "image-robustness"
    norm = "linf"

    def perturb(self, model, x, y, eps, ctx):
        import os
        import time

        with open(os.environ["BENCH_TEST_CALLS"], "a") as fh:
            fh.write(f"{eps}\n")
        time.sleep(0.2)  # long enough for a second process to reach the same cell
        x = x.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        return (x + eps * x.grad.sign()).clamp(0, 1).detach()


EXTRA["attack"].update({"counts-calls": "plugins_for_tests:CountsCalls"})


class _Quantize(torch.nn.Module):
    def forward(self, x):
        return (x * 255).round() / 255  # no gradient reaches the input


class _Scale(torch.nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x if self.training else x * self.factor  # trained normally, saturated when evaluated


class _Noise(torch.nn.Module):
    def forward(self, x):
        return x + 0.05 * torch.randn_like(x)  # randomness at inference


class MaskedStandard(Defense):
    """The standard smoke CNN behind a gradient-masking layer: ``mask`` = "quantize" (zero input gradients),
    "saturate" (logits scaled by 1e4) or "noise" (random noise at inference)."""

    track = "image-robustness"

    @dataclass(frozen=True)
    class Params:
        mask: str = "quantize"

    def build(self, spec):
        from bench.tracks.image_robustness.models import build_model

        net = build_model("cnn-small", spec.input_shape, spec.num_classes)
        if self.params.mask == "quantize":
            return torch.nn.Sequential(_Quantize(), net)
        if self.params.mask == "saturate":
            return torch.nn.Sequential(net, _Scale(1e4))
        return torch.nn.Sequential(_Noise(), net)

    def fit(self, model, data, ctx):
        from bench.tracks.image_robustness.training import OptimParams, train_classifier

        train_classifier(model, data, ctx, OptimParams(epochs=5, lr=3e-3, batch_size=64), desc=self.name)


EXTRA["defense"].update({"masked": "plugins_for_tests:MaskedStandard"})


class OutOfMemoryOnce(Attack):
    """Raises a CUDA-style out-of-memory error (as auto_LiRPA's TorchScript wraps it: a plain RuntimeError) the
    first ``$BENCH_TEST_OOM_TIMES`` times it runs in a results folder, then runs like FGSM."""

    track = "image-robustness"
    norm = "linf"

    def perturb(self, model, x, y, eps, ctx):
        import os
        from pathlib import Path

        counter = Path(os.environ["BENCH_TEST_OOM_COUNTER"])
        seen = int(counter.read_text()) if counter.exists() else 0
        if seen < int(os.environ.get("BENCH_TEST_OOM_TIMES", "1")):
            counter.write_text(str(seen + 1))
            raise RuntimeError("The following operation failed in the TorchScript interpreter.\n"
                               "RuntimeError: CUDA out of memory. Tried to allocate 6.12 GiB.")
        x = x.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        return (x + eps * x.grad.sign()).clamp(*ctx.bounds).detach()


EXTRA["attack"].update({"oom-once": "plugins_for_tests:OutOfMemoryOnce"})
