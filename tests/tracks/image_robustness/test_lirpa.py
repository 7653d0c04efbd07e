"""auto_LiRPA compatibility patches, soundness of the certifiers, and the ``lirpa`` certified-training defense.

The soundness tests train a tiny certifiably robust model on uci-digits (8x8) for a few seconds, then check,
for IBP and CROWN: no margin sampled in the eps-box (uniformly, at its vertices, at PGD points) falls below the
computed lower bound, and no certified example is broken by PGD with restarts.
"""
from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.context import AttackContext, TrainContext
from bench.errors import NotCertifiable
from bench.hparams import resolve
from bench.registry import Registry
from bench.tracks.image_robustness import lirpa_compat as lc

REGISTRY = Registry()
EPS = 0.1  # uci-digits' first Linf budget; lirpa trains at 1.1x that
BOUNDS = (0.0, 1.0)


def _plugin(kind, name, profile="smoke", sets=()):
    cls = REGISTRY.load(kind, name)
    return cls(resolve({name: cls}, profile, list(sets))[name])


def _train_ctx(seed=0):
    return TrainContext(device=torch.device("cpu"), seed=seed, generator=torch.Generator().manual_seed(seed),
                        artifacts=None, model_of=lambda *a, **k: pytest.skip("needs the runner"),
                        epsilons={"linf": (EPS, 0.2), "l2": (1.0,)})


def _attack_ctx(seed=0):
    return AttackContext(bounds=BOUNDS, generator=torch.Generator().manual_seed(seed), registry=REGISTRY,
                         profile="smoke")


def _train(name, data, sets=(), seed=0):
    defense = _plugin("defense", name, sets=sets)
    torch.manual_seed(seed)
    model = defense.build(data.spec)
    ctx = _train_ctx(seed)
    defense.fit(model, data, ctx)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), ctx


@pytest.fixture(scope="module")
def auto_lirpa():
    try:
        return lc.import_auto_lirpa()
    except ImportError as exc:
        pytest.skip(f"auto_LiRPA unavailable: {exc}")


@pytest.fixture(scope="module")
def digits():
    return _plugin("dataset", "uci-digits").load()


@pytest.fixture(scope="module")
def robust(digits, auto_lirpa):
    """The lirpa defense's smoke model (IBP training, a few seconds) and its training log."""
    return _train("lirpa", digits)


def _margins(model, x, y):
    """(B, K-1) exact margins (e_y - e_j)^T f(x), columns j != y in increasing order, like the bounds."""
    with torch.no_grad():
        z = model(x)
    return torch.einsum("bjk,bk->bj", lc.spec_matrix(y, z.shape[1]), z)


# ---- (a) the four compatibility patches --------------------------------------------------------------------
def _skip_unless_applied(name):
    if name not in lc.APPLIED:
        pytest.skip(f"{name}: not needed by auto_LiRPA {lc.import_auto_lirpa().__version__} with torch "
                    f"{torch.__version__}, numpy {np.__version__} (the operation works without it)")


def test_patch_numpy_arraysetops(auto_lirpa):
    # the import that needed it: auto_LiRPA's operators import isin from numpy.lib.arraysetops
    base = importlib.import_module("auto_LiRPA.operators.base")
    assert base is not None
    _skip_unless_applied("numpy_arraysetops")
    from numpy.lib.arraysetops import isin

    assert isin is np.isin
    assert isin(np.array([1, 2, 3]), [2]).tolist() == [False, True, False]


def test_patch_onnx_set_opset_version(auto_lirpa):
    # conversion runs _set_opset_version(12); a gather must then export as GatherElements (an opset-11
    # symbolic), which auto_LiRPA bounds, not as opset 9's OneHot, which it rejects
    class GatherMargin(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x, y):
            z = self.fc(x)
            return z - z.gather(1, y.unsqueeze(1))

    torch.manual_seed(0)
    net = GatherMargin().eval()
    bounded = auto_lirpa.BoundedModule(net, (torch.zeros(1, 4), torch.zeros(1, dtype=torch.long)), device="cpu")
    assert "BoundGatherElements" in {type(n).__name__ for n in bounded._modules.values()}
    x, y = torch.rand(5, 4), torch.tensor([0, 1, 2, 0, 1])
    ptb = auto_lirpa.PerturbationLpNorm(norm=float("inf"), eps=0.1)
    lower, upper = bounded.compute_bounds(x=(auto_lirpa.BoundedTensor(x, ptb), y), method="IBP")
    exact = net(x, y).detach()
    assert (lower <= exact + 1e-6).all() and (upper >= exact - 1e-6).all()
    _skip_unless_applied("onnx_set_opset_version")
    import torch.onnx.symbolic_helper as helper

    assert helper._set_opset_version.__module__ == "bench.tracks.image_robustness.lirpa_compat"


def test_patch_node_getitem(auto_lirpa):
    # conversion reads node attributes (Gemm's transB...) with node[k]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    bounded = lc.build_bounded(net, (3,))
    x = torch.rand(6, 3)
    assert torch.allclose(bounded(x), net(x), atol=1e-6)
    _skip_unless_applied("node_getitem")
    assert hasattr(torch._C.Node, "__getitem__")


def test_patch_named_members_remove_duplicate(auto_lirpa):
    # parameters() (also reached by CROWN with a specification matrix) passes remove_duplicate on torch 2.x
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    bounded = lc.build_bounded(net, (1, 2, 2))
    assert [id(p) for p in bounded.parameters()] == [id(p) for p in net.parameters()]  # shared, not copied
    x, y = torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 2, 0])
    assert lc.margin_lower_bounds(bounded, x, y, 0.05, "CROWN").shape == (4, 2)
    _skip_unless_applied("named_members_remove_duplicate")


def test_import_is_idempotent(auto_lirpa):
    applied = list(lc.APPLIED)
    assert lc.import_auto_lirpa() is auto_lirpa
    assert lc.APPLIED == applied and len(set(applied)) == len(applied)
    assert set(applied) <= {"numpy_arraysetops", "onnx_set_opset_version", "node_getitem",
                            "named_members_remove_duplicate", "no_legacy_gpu_fusion"}


def test_no_legacy_gpu_fusion(auto_lirpa):
    # auto_LiRPA 0.3 leaves TorchScript on the legacy executor, whose GPU fuser compiles its ReLU helpers with
    # NVRTC (failed on an H200); after the import that fuser must be off whenever the legacy executor is on
    profiling = torch._C._jit_set_profiling_executor(False)
    torch._C._jit_set_profiling_executor(profiling)
    assert profiling or not torch._C._jit_can_fuse_on_gpu()
    if not profiling:
        assert "no_legacy_gpu_fusion" in lc.APPLIED


# ---- helpers -------------------------------------------------------------------------------------------------
def test_spec_matrix():
    c = lc.spec_matrix(torch.tensor([0, 2]), 3)
    assert c.shape == (2, 2, 3)
    assert c[0].tolist() == [[1, -1, 0], [1, 0, -1]]
    assert c[1].tolist() == [[-1, 0, 1], [0, -1, 1]]


def test_bounds_exact_at_eps_zero_and_ibp_nested(robust, digits):
    model, _ = robust
    x, y = digits.test_x[:32], digits.test_y[:32]
    bounded = lc.build_bounded(model, digits.spec.input_shape)
    exact = _margins(model, x, y)
    with torch.no_grad():
        for method in lc.METHODS:
            assert torch.allclose(lc.margin_lower_bounds(bounded, x, y, 0.0, method), exact, atol=1e-4)
        # IBP is inclusion-monotone: a larger eps, or no data box, can only loosen it
        small, large = (lc.margin_lower_bounds(bounded, x, y, e, "IBP") for e in (0.05, 0.1))
        unboxed = lc.margin_lower_bounds(bounded, x, y, 0.1, "IBP", bounds=(-math.inf, math.inf))
    assert (large <= small + 1e-5).all() and (unboxed <= large + 1e-5).all()


# ---- (b) soundness ---------------------------------------------------------------------------------------------
def _box_samples(x, eps, n, generator):
    """n points per example in the eps-box intersected with [0, 1]: half uniform, half at random vertices."""
    lo, hi = lc.linf_box(x, eps, BOUNDS)
    shape = (n, *x.shape)
    u = torch.rand(shape, generator=generator)
    u[n // 2:] = u[n // 2:].round()  # vertices: the margins of a piecewise-linear net are extreme there
    return lo + u * (hi - lo)


@pytest.mark.parametrize("method", ["IBP", "CROWN"])
def test_sampled_margins_never_below_bounds(robust, digits, method):
    model, _ = robust
    x, y = digits.test_x[:64], digits.test_y[:64]
    bounded = lc.build_bounded(model, digits.spec.input_shape)
    with torch.no_grad():
        lb = lc.margin_lower_bounds(bounded, x, y, EPS, method)
    samples = _box_samples(x, EPS, 200, torch.Generator().manual_seed(1))
    worst = torch.stack([_margins(model, s, y) for s in samples]).amin(dim=0)
    assert (worst >= lb - 1e-4).all(), f"{method}: a sampled margin fell below its lower bound"
    pgd = _plugin("attack", "pgd-linf", sets=["steps=20", "restarts=3"])
    x_adv = pgd.perturb(model, x, y, EPS, _attack_ctx())
    assert (_margins(model, x_adv, y) >= lb - 1e-4).all()


@pytest.mark.parametrize("name", ["certified-ibp", "certified-crown"])
def test_certified_examples_survive_pgd_and_sampling(robust, digits, name):
    model, _ = robust
    x, y = digits.test_x, digits.test_y
    certifier = _plugin("attack", name)
    verified = certifier.certify(model, x, y, EPS, _attack_ctx())
    assert verified.dtype == torch.bool and verified.shape == (len(y),)
    assert verified.float().mean() > 0.1, "the smoke model should certify some examples"
    with torch.no_grad():
        assert (model(x[verified]).argmax(1) == y[verified]).all()
    xs, ys = x[verified], y[verified]
    pgd = _plugin("attack", "pgd-linf", sets=["steps=40", "restarts=5"])
    x_adv = pgd.perturb(model, xs, ys, EPS, _attack_ctx(seed=3))
    with torch.no_grad():
        assert (model(x_adv).argmax(1) == ys).all(), f"{name}: a certified example was broken by PGD"
    samples = _box_samples(xs, EPS, 100, torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert all((model(s).argmax(1) == ys).all() for s in samples)
    # the mask is exactly "correct and every margin bound positive", batch size notwithstanding
    bounded = lc.build_bounded(model, digits.spec.input_shape)
    with torch.no_grad():
        lb = lc.margin_lower_bounds(bounded, x, y, EPS, certifier._method())
        clean = model(x).argmax(1) == y
    assert torch.equal(verified, clean & (lb > 0).all(dim=1))


def test_stale_batchnorm_statistics_are_refreshed(digits, auto_lirpa):
    """auto_LiRPA copies buffers: a cached BoundedModule must follow the model's running statistics."""
    from bench.tracks.image_robustness.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn-bn", digits.spec.input_shape, 10).eval()
    cache = lc.BoundedCache()
    x, y = digits.test_x[:16], digits.test_y[:16]
    cache.get(model, digits.spec.input_shape, "cpu")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        cached = lc.margin_lower_bounds(cache.get(model, digits.spec.input_shape, "cpu"), x, y, 0.0, "IBP")
    assert torch.allclose(cached, _margins(model, x, y), atol=1e-4)


def test_failed_bound_is_retried_with_dense_intermediate_bounds(robust, digits, monkeypatch):
    """auto_LiRPA 0.3's sparse intermediate-bound path once failed on a GPU: the certifier retries a failing batch
    with dense intermediate bounds, and reports the cause when that fails too."""
    model, _ = robust
    x, y = digits.test_x[:40], digits.test_y[:40]
    real, seen = lc.margin_lower_bounds, []

    def sparse_fails(bounded, *args, **kwargs):
        sparse = bounded.bound_opts.get("sparse_intermediate_bounds", True)
        seen.append(sparse)
        if sparse:
            raise RuntimeError("The following operation failed in the TorchScript interpreter.\nTraceback ...\n"
                               "RuntimeError: The size of tensor a (3) must match the size of tensor b (5)")
        return real(bounded, *args, **kwargs)

    certifier = _plugin("attack", "certified-crown")
    monkeypatch.setattr(lc, "margin_lower_bounds", sparse_fails)
    verified = certifier.certify(model, x, y, EPS, _attack_ctx())
    assert seen[:2] == [True, False]
    dense = lc.build_bounded(model, digits.spec.input_shape, bound_opts=lc.DENSE_BOUND_OPTS)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        expected = clean & (real(dense, x, y, EPS, "CROWN") > 0).all(dim=1)
    assert torch.equal(verified, expected)

    monkeypatch.setattr(lc, "margin_lower_bounds", lambda *a, **k: sparse_fails(_Sparse()))  # dense fails too
    with pytest.raises(NotCertifiable, match="must match the size"):
        certifier.certify(model, x, y, EPS, _attack_ctx())


class _Sparse:
    bound_opts = {"sparse_intermediate_bounds": True}


_TORCHSCRIPT_OOM = ("The following operation failed in the TorchScript interpreter.\nTraceback ...\n"
                    "RuntimeError: CUDA out of memory. Tried to allocate 6.12 GiB.")


def test_a_batch_out_of_memory_is_halved_with_the_same_result(robust, digits, monkeypatch):
    """On a GPU shared with other lanes CROWN's batch can run out of memory (auto_LiRPA's TorchScript wraps the
    error in a plain RuntimeError): the batch is halved, not sent down the dense path, and the verified mask is
    the one a single batch gives."""
    model, _ = robust
    x, y = digits.test_x[:40], digits.test_y[:40]
    real, sizes = lc.margin_lower_bounds, []

    def fits_three(bounded, xb, *args, **kwargs):
        sizes.append((len(xb), bounded.bound_opts.get("sparse_intermediate_bounds", True)))
        if len(xb) > 3:
            raise RuntimeError(_TORCHSCRIPT_OOM)
        return real(bounded, xb, *args, **kwargs)

    whole = _plugin("attack", "certified-crown", sets=["batch_size=64"]).certify(model, x, y, EPS, _attack_ctx())
    monkeypatch.setattr(lc, "margin_lower_bounds", fits_three)
    halved = _plugin("attack", "certified-crown", sets=["batch_size=12"]).certify(model, x, y, EPS, _attack_ctx())
    assert torch.equal(halved, whole) and whole.any()
    assert [n for n, _ in sizes[:3]] == [12, 6, 3] and all(n <= 3 for n, _ in sizes[3:])
    assert all(sparse for _, sparse in sizes), "an out-of-memory batch must not be retried on the dense path"
    assert sum(n for n, _ in sizes if n <= 3) == int((model(x).argmax(1) == y).sum())

    def never_fits(*args, **kwargs):
        raise RuntimeError(_TORCHSCRIPT_OOM)

    monkeypatch.setattr(lc, "margin_lower_bounds", never_fits)
    with pytest.raises(RuntimeError, match="out of memory"):  # not NotCertifiable: it says nothing of the model
        _plugin("attack", "certified-crown").certify(model, x, y, EPS, _attack_ctx())


# ---- (c) unsupported layers ----------------------------------------------------------------------------------
class SortLayer(nn.Module):
    """torch.sort exports as onnx::TopK, which auto_LiRPA 0.3 cannot bound."""

    def forward(self, x):
        return torch.sort(x, dim=1).values


class CubeLayer(nn.Module):
    """Converts and IBP-bounds, but auto_LiRPA 0.3 has no linear relaxation of x**3: CROWN fails when bounding."""

    def forward(self, x):
        return x ** 3


@pytest.mark.parametrize("layer, name", [(SortLayer, "certified-ibp"), (SortLayer, "certified-crown"),
                                         (CubeLayer, "certified-crown")])
def test_unsupported_layer_is_not_certifiable(digits, auto_lirpa, name, layer):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), layer(), nn.Linear(16, 10)).eval()
    with pytest.raises(NotCertifiable, match=f"^{layer.__name__}"):
        _plugin("attack", name).certify(model, digits.test_x[:8], digits.test_y[:8], EPS, _attack_ctx())


# ---- (d) the lirpa defense ---------------------------------------------------------------------------------------
def test_lirpa_verifies_where_standard_training_does_not(robust, digits):
    model, ctx = robust
    standard, _ = _train("standard", digits)
    assert ctx.history[0] == {"train_eps": pytest.approx(1.1 * EPS), "test_eps": EPS, "epochs": 20,
                              "batches_per_epoch": 8}
    train_eps = ctx.history[0]["train_eps"]
    ibp = _plugin("attack", "certified-ibp")
    x, y = digits.test_x, digits.test_y
    ours = ibp.certify(model, x, y, train_eps, _attack_ctx()).float().mean().item()
    theirs = ibp.certify(standard, x, y, train_eps, _attack_ctx()).float().mean().item()
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    assert ours > 0.15 and clean > 0.3  # well above a constant classifier's 0.1
    assert theirs < 0.02


def test_lirpa_deterministic_and_options_run(digits, auto_lirpa):
    """Same seed, same weights; CROWN-IBP with BatchNorm, the warm-up regulariser and loss fusion all run, and
    BatchNorm running statistics reach the model."""
    sets = ["epochs=3", "max_train_batches=3", "bound=\"crown-ibp\"", "arch=\"cnn-bn\"", "sched_start=0.0"]
    a, ctx = _train("lirpa", digits, sets)
    b, _ = _train("lirpa", digits, sets)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert "beta" in ctx.history[-1] and "reg" in ctx.history[-1]
    assert 0 <= ctx.history[-1]["beta"] < 1
    bn = next(m for m in a.modules() if isinstance(m, nn.BatchNorm2d))
    assert bn.running_mean.abs().sum() > 0  # copied back from auto_LiRPA's buffers
    fused, ctx = _train("lirpa", digits, ["epochs=2", "max_train_batches=3", "loss_fusion=true", "sched_start=0.0"])
    assert all(math.isfinite(h["loss"]) for h in ctx.history[1:])


def test_fused_ce_bound_is_sound(robust, digits, auto_lirpa):
    from bench_defenses.image_robustness.lirpa import _FusedCE

    model, _ = robust
    x, y = digits.test_x[:32], digits.test_y[:32]
    bounded = auto_lirpa.BoundedModule(_FusedCE(model).eval(), (x[:1], y[:1]), device="cpu")
    lo, hi = lc.linf_box(x, EPS)
    ptb = auto_lirpa.PerturbationLpNorm(norm=float("inf"), eps=EPS, x_L=lo, x_U=hi)
    with torch.no_grad():
        for method in ("IBP", "CROWN-IBP"):
            _, ub = bounded.compute_bounds(x=(auto_lirpa.BoundedTensor(x, ptb), y), method=method,
                                           bound_lower=False, bound_upper=True)
            for s in _box_samples(x, EPS, 50, torch.Generator().manual_seed(4)):
                ce = F.cross_entropy(model(s), y, reduction="none")
                assert (torch.log(ub).squeeze(1) >= ce - 1e-4).all()


def test_eps_schedule_by_hand():
    from bench_defenses.image_robustness.lirpa import smoothed_eps

    def eps(step):
        return smoothed_eps(step, start=10, length=100, eps_max=1.0)

    v = 0.4 / (4 - 3 * 0.4)  # the junction value: 1/7
    assert eps(0) == eps(10) == 0.0
    assert eps(30) == pytest.approx(v * 0.5 ** 4)  # t = 0.2: the power-4 part
    assert eps(50) == pytest.approx(v) == pytest.approx(1 / 7)  # t = mid = 0.4
    assert eps(80) == pytest.approx(v + (1 - v) * 0.5)  # t = 0.7: halfway along the linear part
    assert eps(110) == eps(500) == 1.0
    values = [eps(s) for s in range(0, 130)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    left, right = eps(50) - eps(49), eps(51) - eps(50)  # C1 at the junction
    assert left == pytest.approx(right, rel=0.05)
    assert smoothed_eps(5, 0, 10, 0.0) == 0.0


def test_beta_schedule():
    from bench_defenses.image_robustness.lirpa import LiRPA, LiRPAParams

    crown = LiRPA(LiRPAParams(bound="crown-ibp"))
    assert [crown._beta(e, 0.2) for e in (0.0, 0.1, 0.2)] == pytest.approx([1.0, 0.5, 0.0])
    assert LiRPA(LiRPAParams(bound="ibp"))._beta(0.1, 0.2) == 0.0
    assert LiRPA(LiRPAParams(beta_schedule=(1.0, 1.0)))._beta(0.2, 0.2) == 1.0


def test_ibp_init_std():
    from bench.tracks.image_robustness.models import build_model
    from bench_defenses.image_robustness.lirpa import ibp_initialise

    torch.manual_seed(0)
    model = build_model("cnn", (1, 28, 28), 10)
    last = model[-1].weight.clone()
    ibp_initialise(model)
    conv = model[0]
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 * math.pi) / fan_in, rel=0.2)
    fc = model[-3]
    assert fc.weight.std().item() == pytest.approx(math.sqrt(2 * math.pi) / fc.in_features, rel=0.05)
    assert torch.equal(model[-1].weight, last)  # the classification layer keeps its initialisation



def test_min_train_batches_gives_a_small_dataset_more_epochs(digits, auto_lirpa):
    # uci-digits smoke: 512 images = 8 batches of 64 per epoch; at least 200 batches -> 25 epochs, not 20
    _, ctx = _train("lirpa", digits, sets=("min_train_batches=200",))
    assert ctx.history[0]["epochs"] == 25 and len(ctx.history) == 1 + 25


def test_a_cpu_run_that_certifies_prints_no_cuda_warning(tmp_path):
    """auto_LiRPA's import pulls in torch's extension loader, which warns about a missing CUDA runtime on every
    CPU host: that noise stays out of bench's output."""
    import os
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "bench.cli", "--results", str(tmp_path), "run", "--defense",
                             "lirpa", "--attack", "certified-ibp", "--dataset", "uci-digits", "--profile", "smoke",
                             "--set", "epochs=1", "--device", "cpu"], capture_output=True, text=True,
                            env={**os.environ, "BENCH_PROGRESS": "0", "CUDA_VISIBLE_DEVICES": ""}, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "CUDA" not in result.stdout + result.stderr
