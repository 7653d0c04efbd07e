"""The GPU fast path (CUDA graphs of whole attack loops) gives the eager path's results; where it cannot run
(CPU, train-mode models, uncapturable models) the eager path runs. The CPU tests check the fixed-shape APGD
form that the graphs capture; the ``gpu`` tests compare graphed and eager runs on a CUDA device."""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from bench.tracks.image_robustness import cuda_graphs
from bench.tracks.image_robustness.adversarial import pgd
from bench.tracks.image_robustness.models import build_model
from bench_attacks.image_robustness._apgd import apgd, apgd_run, apgd_run_fixed
from bench_attacks.image_robustness._common import random_start

pytestmark = pytest.mark.usefixtures("one_thread")


@functools.lru_cache(maxsize=4)
def _fitted_cnn(device="cpu", arch="cnn", shape=(1, 12, 12), n=256, seed=0):
    """A CNN fit for a few steps on separable random data: some examples break under attack, some do not."""
    torch.manual_seed(seed)
    x = torch.rand(n, *shape)
    y = (x.flatten(1) @ torch.randn(x[0].numel(), 10)).argmax(1)  # linearly separable classes
    x, y = x.to(device), y.to(device)
    model = build_model(arch, shape, 10).to(device)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), x, y


@pytest.mark.parametrize("norm,eps,loss", [("linf", 0.02, "ce"), ("l2", 0.3, "dlr-targeted"), ("linf", 0.02, "dlr")])
def test_fixed_shape_apgd_has_the_early_exit_run_s_outcome(norm, eps, loss):
    model, x, y = _fitted_cnn()
    keep = model(x).argmax(1) == y
    x, y = x[keep], y[keep]
    target = model(x).argsort(1, descending=True)[:, 1] if loss == "dlr-targeted" else None
    x0 = random_start(x, eps, norm, torch.Generator().manual_seed(3), (0.0, 1.0))
    adv_a, fooled_a = apgd_run(model, x, y, eps, norm, 12, loss, x0, (0.0, 1.0), target=target)
    adv_b, fooled_b = apgd_run_fixed(model, x, y, eps, norm, 12, loss, x0, (0.0, 1.0), target=target)
    assert 0 < int(fooled_a.sum()) < len(x), "the probe needs both outcomes"
    assert torch.equal(fooled_a, fooled_b)
    assert torch.allclose(adv_a, adv_b, atol=1e-5)


def test_no_graph_on_the_cpu_or_for_a_model_in_train_mode():
    model, x, _ = _fitted_cnn()
    assert not cuda_graphs.usable(model, x)
    model.train()
    assert not cuda_graphs.usable(model, x)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _eager_and_graphed(monkeypatch, fn):
    monkeypatch.setenv("BENCH_CUDA_GRAPHS", "0")
    eager = fn()
    monkeypatch.setenv("BENCH_CUDA_GRAPHS", "1")
    first, second = fn(), fn()  # the capture, then a replay of the cached graph
    return eager, first, second


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("arch,shape", [("cnn", (1, 28, 28)), ("resnet18", (3, 32, 32))])
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_graphed_pgd_equals_eager(monkeypatch, arch, shape, norm, eps):
    model, x, y = _fitted_cnn("cuda", arch, shape)

    def run():
        return pgd(model, x, y, eps, eps / 4, 10, norm=norm, generator=torch.Generator().manual_seed(1))

    eager, first, second = _eager_and_graphed(monkeypatch, run)
    assert cuda_graphs._GRAPHS.get(model), "the graphed path did not run"
    with torch.no_grad():
        for got in (first, second):
            same = (model(got).argmax(1) == model(eager).argmax(1)).float().mean()
            if norm == "linf":  # signed steps absorb the last-bit differences of the gradients: identical
                assert torch.equal(got, eager)
            else:  # normalised steps carry them (cuBLAS may pick other kernels under capture): a tolerance
                assert same >= 0.98 and (got - eager).abs().max() < 0.05, (float(same), float((got - eager).abs().max()))


@pytest.mark.gpu
@needs_cuda
def test_graphed_apgd_equals_eager(monkeypatch):
    model, x, y = _fitted_cnn("cuda", "cnn", (1, 28, 28))
    x0 = random_start(x, 0.1, "linf", torch.Generator().manual_seed(2), (0.0, 1.0))

    def run():
        return apgd(model, x, y, 0.1, "linf", 20, "ce", x0, (0.0, 1.0))

    (_, eager), (_, first), (_, second) = _eager_and_graphed(monkeypatch, run)
    assert torch.equal(first, eager) and torch.equal(second, eager)


@pytest.mark.gpu
@needs_cuda
def test_graphed_cw_l2_equals_eager(monkeypatch):
    from bench_attacks.image_robustness.cw import CWParams, cw_l2

    model, x, y = _fitted_cnn("cuda", "cnn", (1, 28, 28))
    params = CWParams(binary_search_steps=3, steps=40, initial_const=0.1)

    def run():
        return cw_l2(model, x, y, 1.0, params, (0.0, 1.0))

    eager, first, second = _eager_and_graphed(monkeypatch, run)
    assert cuda_graphs._GRAPHS.get(model), "the graphed path did not run"
    with torch.no_grad():
        fooled = model(eager).argmax(1) != y
        assert 0 < int(fooled.sum()) < len(x), "the probe needs both outcomes"
        for got in (first, second):  # Adam's normalised steps carry last-bit differences, as L2 PGD's
            same = (model(got).argmax(1) == model(eager).argmax(1)).float().mean()
            assert same >= 0.98, float(same)


class _HostSync(nn.Module):
    """A model that reads a value on the host inside its forward: cannot be captured."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if float(x.sum()) < -1:  # never true; a host sync all the same
            return x
        return self.inner(x)


@pytest.mark.gpu
@needs_cuda
def test_an_uncapturable_model_falls_back_to_eager(monkeypatch):
    inner, x, y = _fitted_cnn("cuda", "cnn", (1, 28, 28))
    model = _HostSync(inner).eval()
    monkeypatch.setenv("BENCH_CUDA_GRAPHS", "0")
    eager = pgd(model, x, y, 0.1, 0.025, 5, generator=torch.Generator().manual_seed(1))
    monkeypatch.setenv("BENCH_CUDA_GRAPHS", "1")
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed"):
        got = pgd(model, x, y, 0.1, 0.025, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(got, eager)
    assert not cuda_graphs.usable(model, x)
