"""The domain-shift track: deterministic target domains, style layers, AdvStyle's gradient reversal, model
selection on source data, and the DomainBed-shaped table."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.context import TrainContext
from bench.tracks.domain_shift.digits_dg import DigitsDG
from bench.tracks.domain_shift.style import (
    DSU,
    AdvStyle,
    MixStyle,
    channel_stats,
    insert_style_layers,
    seed_style_layers,
)
from bench.tracks.domain_shift.table import figures, tables
from bench.tracks.domain_shift.training import DGParams, train_with_source_validation
from bench.tracks.image_robustness.models import build_model


@pytest.fixture(scope="module")
def digits_domains(tmp_path_factory):
    """digits-dg (smoke size) built twice in two empty data roots, and once with another domain seed."""
    mp = pytest.MonkeyPatch()
    out = []
    for root, seed in (("a", 0), ("b", 0), ("c", 1)):
        mp.setenv("BENCH_DATA", str(tmp_path_factory.mktemp(root)))
        out.append(DigitsDG(DigitsDG.Params(n_train=64, n_test=64, n_target=60, domain_seed=seed)).load())
    mp.undo()
    return out


def test_domains_are_deterministic_and_distinct(digits_domains):
    first, again, other_seed = digits_domains
    assert list(first.extras["domains"]) == ["uci-digits", "mnist-m", "syn"]
    for name, (x, y) in first.extras["domains"].items():
        assert x.shape == (60, 3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        assert torch.equal(x, again.extras["domains"][name][0]) and torch.equal(y, again.extras["domains"][name][1])
        if name != "uci-digits":  # the UCI digits are real images, not generated
            assert not torch.equal(x, other_seed.extras["domains"][name][0]), f"{name} ignores domain_seed"
    means = [x.mean(0) for x, _ in first.extras["domains"].values()] + [first.test_x.mean(0)]
    for i in range(len(means)):
        for j in range(i + 1, len(means)):
            assert (means[i] - means[j]).abs().mean() > 0.05, "two domains look alike"


def test_cached_domains_equal_a_fresh_build(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA", str(tmp_path))
    ds = DigitsDG(DigitsDG.Params(n_train=32, n_test=32, n_target=20))
    fresh = ds.load().extras["domains"]
    assert len(list((tmp_path / "domains").glob("*.npz"))) == 1
    cached = ds.load().extras["domains"]
    assert all(torch.equal(fresh[k][0], cached[k][0]) for k in fresh)


def _layers():
    return [MixStyle(8, p=1.0), DSU(8, p=1.0), AdvStyle(8), AdvStyle(8, reverse=False)]


@pytest.mark.parametrize("layer", _layers(), ids=lambda m: type(m).__name__)
def test_style_layers_are_identity_in_eval(layer):
    x = torch.randn(16, 8, 5, 5) * 3 + 1
    layer.train()
    changed = any(not torch.equal(layer(x), x) for _ in range(6))  # AdvStyle keeps x in its identity branch
    assert changed
    layer.eval()
    assert torch.equal(layer(x), x)


@pytest.mark.parametrize("layer", [MixStyle(8, p=1.0), DSU(8, p=1.0)], ids=lambda m: type(m).__name__)
def test_mixstyle_and_dsu_change_statistics_not_content(layer):
    x = torch.randn(16, 8, 6, 6) * torch.rand(16, 8, 1, 1) * 4 + torch.randn(16, 8, 1, 1)
    out = layer.train()(x)
    (mu, sigma), (mu_out, sigma_out) = channel_stats(x), channel_stats(out)
    assert (mu - mu_out).abs().max() > 0.1 and (sigma - sigma_out).abs().max() > 0.1
    # The normalised feature map (the "content") is unchanged (up to the 1e-6 in the std) where neither std is tiny.
    ok = (sigma > 0.2) & (sigma_out > 0.2)
    x_hat, out_hat = (x - mu) / sigma, (out - mu_out) / sigma_out
    flip = torch.sign((x_hat * out_hat).sum(dim=(2, 3), keepdim=True))  # DSU's gamma may be negative
    assert torch.allclose((x_hat * flip)[ok.expand_as(x)], out_hat[ok.expand_as(x)], atol=1e-3)


def _adv_loss(layer, x, y, head):
    layer.rng = np.random.default_rng(6)  # same branch draw and noise every time
    return F.cross_entropy(head(layer(x).mean(dim=(2, 3))), y)


@pytest.mark.parametrize("reverse", [True, False])
def test_advstyle_gradient_reversal_makes_magnitudes_ascend_the_loss(reverse):
    torch.manual_seed(0)
    x, y, head = torch.randn(32, 8, 4, 4), torch.randint(0, 3, (32,)), nn.Linear(8, 3)
    layer = AdvStyle(8, reverse=reverse).train()
    layer.rng = np.random.default_rng(0)
    layer(x)  # the first batch initialises the magnitudes
    assert layer.initialised and (layer.s_mu > 0).all() and (layer.s_sigma > 0).all()
    layer.rng = np.random.default_rng(6)
    assert layer.rng.integers(3) == 1, "seed 6 must pick the adversarial branch"
    before = _adv_loss(layer, x, y, head)
    before.backward()
    with torch.no_grad():  # one plain gradient step on the magnitudes only
        for p in (layer.s_mu, layer.s_sigma):
            p -= 0.05 * p.grad / p.grad.norm()
    after = _adv_loss(layer, x, y, head)
    assert (after > before) if reverse else (after < before)


def test_reversal_multiplies_the_magnitudes_gradient_by_minus_the_factor():
    torch.manual_seed(0)
    x, y, head = torch.randn(32, 8, 4, 4), torch.randint(0, 3, (32,)), nn.Linear(8, 3)
    grads = []
    for layer in (AdvStyle(8, reverse=True, factor=10.0).train(), AdvStyle(8, reverse=False).train()):
        layer.rng = np.random.default_rng(0)
        layer(x)
        _adv_loss(layer, x, y, head).backward()
        grads.append(layer.s_sigma.grad)
    assert grads[1].abs().sum() > 0 and torch.allclose(grads[0], -10 * grads[1])


def test_style_layers_go_after_early_conv_blocks():
    net = insert_style_layers(build_model("cnn-bn", (3, 16, 16), 10), lambda c: DSU(c))
    kinds = [type(m).__name__ for m in net]
    assert kinds[:9] == ["Conv2d", "BatchNorm2d", "ReLU", "DSU", "Conv2d", "BatchNorm2d", "ReLU", "DSU", "Conv2d"]
    assert kinds.count("DSU") == 2 and [m.channels for m in net if isinstance(m, DSU)] == [32, 64]
    with pytest.raises(ValueError):
        insert_style_layers(build_model("resnet18", (3, 16, 16), 10), lambda c: DSU(c))


def test_model_selection_keeps_the_best_source_validation_epoch(digits_domains):
    data = digits_domains[0]
    torch.manual_seed(0)
    net = insert_style_layers(build_model("cnn-small", data.spec.input_shape, 10), lambda c: AdvStyle(c))
    ctx = TrainContext(device=torch.device("cpu"), seed=0, generator=torch.Generator().manual_seed(0),
                       artifacts=None, model_of=None)
    seed_style_layers(net, ctx.generator)
    train_with_source_validation(net, data, ctx, DGParams(epochs=4, lr=3e-2, batch_size=16))
    epochs = [h for h in ctx.history if "val_acc" in h]
    chosen = ctx.history[-1]
    assert len(epochs) == 4 and chosen["selected_val_acc"] == max(h["val_acc"] for h in epochs)
    assert epochs[int(chosen["selected_epoch"]) - 1]["val_acc"] == chosen["selected_val_acc"]
    from bench.data import stratified_split
    _, val = stratified_split(data.train_y.numpy(), round(0.2 * len(data.train_y)))
    with torch.no_grad():
        acc = (net(data.train_x[val]).argmax(1) == data.train_y[val]).float().mean().item()
    assert acc == pytest.approx(chosen["selected_val_acc"])  # the weights are the selected epoch's


def _record(defense, seed, values, profile="quick"):
    metrics = [{"name": "clean_acc", "value": values[0], "n": 100}]
    metrics += [{"name": "accuracy", "domain": d, "value": v, "n": 100, "definition": f"about {d}"}
                for d, v in zip(("a", "b", "average"), values[1:])]
    return {"status": "ok", "key": f"{defense}{seed}{profile}", "track": "domain-shift", "profile": profile,
            "seed": seed, "created": "2026-01-01", "dataset": {"name": "digits-dg", "params": {}},
            "defense": {"name": defense, "params": {}}, "attack": {"name": "domain-accuracy", "params": {}},
            "metrics": metrics, "timings": {"train_s": 10.0}}


def test_table_is_domainbed_shaped_with_sample_std():
    records = [_record("advstyle", 0, (0.9, 0.5, 0.3, 0.4)), _record("advstyle", 1, (0.8, 0.7, 0.3, 0.5)),
               _record("erm", 0, (0.9, 0.2, 0.2, 0.2))]
    other = _record("erm", 0, (0.5, 0.1, 0.1, 0.1))  # same method and seed, another dataset: its own table
    other["dataset"]["name"], other["key"], other["created"] = "fashion-dg", "other", "2027-01-01"
    out = tables(records + [other])
    assert set(out) == {"digits-dg.md", "digits-dg.csv", "fashion-dg.md", "fashion-dg.csv"}
    lines = out["digits-dg.md"].splitlines()
    header = next(line for line in lines if line.startswith("| Method"))
    assert header == "| Method | Seeds | Source | a | b | Avg | 95 % CI (Avg) | vs erm (Avg) | Budget | Train (s) |"
    rows = [line for line in lines if line.startswith("| erm") or line.startswith("| advstyle")]
    assert rows[0].startswith("| erm | 1 | 90.0 | 20.0 | 20.0 | 20.0 |")  # ERM first
    # advstyle, two seeds: a = 60 ± sample std 14.1 (the framework's ±, not a standard error); the average's
    # 95 % t interval 45 ± 12.706 * 7.07 / sqrt(2) = 45 ± 63.5, clipped to [0, 100]; one common seed with ERM:
    # no paired comparison
    assert rows[1].startswith("| advstyle | 2 | 85.0 ± 7.1 | 60.0 ± 14.1 | 30.0 ± 0.0 | 45.0 ± 7.1 | [0.0, 100.0] t | - |")
    assert "Statistics: mean ± sample standard deviation over seeds" in out["digits-dg.md"]
    assert "- `a`: about a" in lines and "![samples per domain](digits-dg-domains.png)" in lines
    assert out["digits-dg.csv"].splitlines()[0].startswith("profile,method,seeds,source,source_std,a,a_std")


def test_figure_grid_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "data"))
    record = _record("erm", 0, (0.9, 0.2, 0.2, 0.2), profile="smoke")
    record["dataset"]["params"] = {"n_train": 32, "n_test": 32, "n_target": 20, "domain_seed": 0}
    from bench.leaderboard import facts
    from bench.registry import Registry

    paths = figures([record], tmp_path / "out", facts(Registry(), [record]))
    assert paths == [tmp_path / "out" / "digits-dg-domains.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
