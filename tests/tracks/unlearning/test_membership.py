"""Membership inference of the unlearning track: LiRA / U-LiRA with shadow models, the population attacks, the
non-member sets, the calibrated threshold, the validity gate, and that shadows are trained once per scenario."""
import io
import json

import numpy as np
import pytest
import torch
from fake_data import fake_cifar_bin
from test_unlearning import (
    Bank,
    evaluate,
    frozen,
    metric,
    plugin,
    train,
)

from bench.registry import Registry
from bench.runner import Runner, Selection, plan
from bench.tracks.unlearning.membership import auc, threshold_at_fpr, tpr_at_fpr
from bench.tracks.unlearning.scenarios import (
    forget_remain,
    membership_sets,
    shadow_in,
    shadow_pool,
)
from bench.tracks.unlearning.table import tables

pytestmark = pytest.mark.usefixtures("one_thread")


# A recipe that memorises small digit sets in well under a second: an MLP, 80 epochs of Adam 3e-3.
MEMORISE = {"arch": "mlp", "epochs": 80, "lr": 3e-3, "batch_size": 64}


@pytest.fixture(scope="module")
def random_data():
    return plugin("dataset", "uci-digits-random").load()


@pytest.fixture(scope="module")
def noisy_data():
    """uci-digits-noisy (smoke: 512 training images) with 10% of the labels replaced by a wrong class: a small
    random-label forget set that only memorisation can fit."""
    return plugin("dataset", "uci-digits-noisy", fraction=0.1).load()


# ---- the sets ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["uci-digits-random", "uci-digits-class", "uci-digits-uniform", "uci-digits-noisy"])
def test_nonmembers_are_class_matched_held_out_and_split(name):
    data = plugin("dataset", name).load()
    ms = membership_sets(data)
    true_y = data.extras.get("clean_train_y", data.train_y)
    forget_hist = np.bincount(true_y[ms.forget].numpy(), minlength=10) / len(ms.forget)
    held_hist = np.bincount(data.test_y[ms.nonmember].numpy(), minlength=10) / len(ms.nonmember)
    assert set(np.flatnonzero(held_hist)) <= set(np.flatnonzero(forget_hist)), "only the forget set's classes"
    assert np.abs(held_hist - forget_hist).max() < 0.05, "in the forget set's class proportions"
    assert len(set(ms.nonmember.tolist())) == len(ms.nonmember) > 0
    assert sorted(ms.cal.tolist() + ms.eval.tolist()) == list(range(len(ms.nonmember)))
    assert abs(len(ms.cal) - len(ms.eval)) <= 10
    # The population attacks' fit: class-balanced, outside the held-out non-members, members from remaining data.
    assert not set(ms.fit_nonmembers.tolist()) & set(ms.nonmember.tolist())
    assert not set(ms.fit_members.tolist()) & set(ms.forget.tolist())
    assert (np.bincount(data.train_y[ms.fit_members].numpy(), minlength=10)
            == np.bincount(data.test_y[ms.fit_nonmembers].numpy(), minlength=10)).all()
    if "clean_train_y" in data.extras:  # non-members judged on labels corrupted like the forget set's
        assert (ms.nonmember_y != data.test_y[ms.nonmember]).all()
    else:
        assert torch.equal(ms.nonmember_y, data.test_y[ms.nonmember])
    assert membership_sets(plugin("dataset", name).load()).nonmember.tolist() == ms.nonmember.tolist()


def test_every_candidate_is_in_exactly_half_of_the_shadows(random_data):
    x, y, _ = shadow_pool(random_data)
    assert len(x) == len(y) == len(random_data.train_y) + len(membership_sets(random_data).nonmember)
    inside = shadow_in(len(y), 4, 0, 0)
    assert (inside.sum(axis=0) == 2).all() and inside.shape == (4, len(y))
    odd = shadow_in(len(y), 5, 0, 0).sum(axis=0)
    assert set(odd.tolist()) == {2, 3}
    assert not (shadow_in(len(y), 4, 0, 1) == inside).all(), "shadow_seed draws other halves"


def test_statistics_and_the_calibrated_threshold():
    rng = np.random.default_rng(0)
    neg, pos = rng.normal(size=20000), rng.normal(1.0, size=20000)
    assert abs(auc(pos, neg) - 0.760) < 0.01  # Phi(1 / sqrt(2))
    assert auc(np.ones(5), np.ones(5)) == 0.5, "ties count half"
    for fpr in (0.05, 0.01):
        threshold = threshold_at_fpr(neg[:10000], fpr)
        assert abs((neg[10000:] > threshold).mean() - fpr) < 0.006, "held-out non-members pass at ~ the stated FPR"
    assert tpr_at_fpr(pos, neg, 0.01) < tpr_at_fpr(pos, neg, 0.1)


@pytest.mark.parametrize("shift, signal", [(1.0, 1.0), (0.0, 0.0), (-1.0, 0.0)])
def test_the_gate_needs_power_in_the_attack_s_direction(shift, signal):
    """Signal only when the gate's interval lies above 0.5: an attack that ranks the members *lower* than the
    non-members (interval below 0.5) has no power in its stated direction either."""
    from bench.tracks.unlearning.membership import attack_metrics

    rng = np.random.default_rng(1)
    members, held = rng.normal(shift, size=300), rng.normal(size=600)
    out = attack_metrics("probe", "probe", members, held[:300], held[300:], members, held[300:], 0.05, 100, 0)
    (gate,) = [m["value"] for m in out if m["name"] == "mia_signal"]
    assert gate == signal


# ---- LiRA ---------------------------------------------------------------------------------------------------

def test_lira_finds_a_memorised_random_label_set(noisy_data):
    """The original memorised its 51 random labels: LiRA (4 shadows) tells them from class-matched non-members
    with the same kind of wrong labels at AUC >= 0.9, and its gate has signal."""
    bank = Bank(noisy_data)
    original = bank("original", **MEMORISE)
    forget, _ = forget_remain(noisy_data)
    assert (original(noisy_data.train_x[forget]).argmax(1) == noisy_data.train_y[forget]).float().mean() > 0.9
    metrics = evaluate("lira", original, noisy_data, bank, n_shadows=4)
    for definition in ("lira-online", "lira-offline"):
        assert metric(metrics, "mia_auc", definition_id=definition) >= 0.9
        assert metric(metrics, "mia_signal", definition_id=definition) == 1.0
        assert metric(metrics, "mia_forget", definition_id=definition) > 0.5
        lo, hi = (metric(metrics, "mia_auc", definition_id=definition, split=b) for b in ("lo", "hi"))
        assert lo <= metric(metrics, "mia_auc", definition_id=definition) <= hi
    assert all(0 <= m["value"] <= 1 and m["definition"] for m in metrics)
    shadows = [k for k in bank.trained if k[0] == "shadow"]
    assert len(shadows) == 4, "one model per shadow"
    # Retrain never saw the forget set: LiRA on it calls most of it non-member.
    retrain = bank("retrain", **MEMORISE)
    theirs = evaluate("lira", retrain, noisy_data, bank, n_shadows=4)
    assert metric(theirs, "mia_auc", definition_id="lira-online") < 0.75
    assert len([k for k in bank.trained if k[0] == "shadow"]) == 4, "the second evaluation trains no shadow"


class NeverSeen:
    """``model_of`` for a world in which no model saw any candidate: every model it serves (original, shadows)
    is trained on the remaining data only (a different seed per request), so membership of the forget set and
    of the non-members leaves no trace."""

    def __init__(self, data):
        _, remain = forget_remain(data)
        self.data = dataclass_replace(data, remain)
        self.models = {}

    def __call__(self, name, **overrides):
        key = (name, overrides.get("half", -1))
        if key not in self.models:
            self.models[key] = frozen(train("original", self.data, seed=len(self.models), arch="mlp", epochs=30,
                                            lr=3e-3, batch_size=64))
        return self.models[key]


def dataclass_replace(data, keep):
    import dataclasses

    return dataclasses.replace(data, train_x=data.train_x[keep], train_y=data.train_y[keep])


def test_points_no_model_saw_have_no_signal_and_the_table_says_ns(random_data):
    world = NeverSeen(random_data)
    target = world("retrain")
    records = []
    for defense, model in (("original", world("original")), ("retrain", target)):
        metrics = evaluate("lira", model, random_data, world, n_shadows=4)
        for definition in ("lira-online", "lira-offline"):
            lo, hi = (metric(metrics, "mia_auc", definition_id=definition, split=b) for b in ("lo", "hi"))
            assert lo <= 0.5 <= hi, f"{definition}: an AUC interval that excludes 0.5 on unseen points"
            assert metric(metrics, "mia_signal", definition_id=definition) == 0.0
            # The calibrated threshold lets through about the stated 5% of the other held-out non-members (31 of
            # them here: a loose bound; test_statistics_and_the_calibrated_threshold checks it on large samples).
            assert metric(metrics, "mia_fpr_heldout", definition_id=definition) <= 0.25
        records.append({"status": "ok", "track": "unlearning", "profile": "smoke", "seed": 0, "key": defense,
                        "created": "2026-01-01", "dataset": {"name": "uci-digits-random", "params": {"seed": 0}},
                        "defense": {"name": defense, "params": {}}, "attack": {"name": "lira", "params": {}},
                        "metrics": metrics, "timings": {"train_s": 1.0}})
    md = tables(records)["uci-digits-random.md"]
    rows = [line.split(" | ") for line in md.splitlines() if line.startswith(("| original", "| retrain"))]
    head = next(line.split(" | ") for line in md.splitlines() if line.startswith("| Method"))
    for row in rows[:2]:
        assert row[head.index("AUC lira-online")] == "n.s." and row[head.index("AUC lira-offline")] == "n.s."
    assert "**n.s. = no signal**" in md and "`lira-online` (seed 0:" in md
    # 31 held-out non-members: neither 1 % nor 0.1 % FPR is attainable, and the per-attack table says so
    detail = [line.split(" | ") for line in md.splitlines() if line.startswith("| lira-online | original")]
    head = next(line.split(" | ") for line in md.splitlines() if line.startswith("| Attack | Method"))
    for label in ("TPR@1%FPR", "TPR@0.1%FPR"):
        assert detail[0][head.index(label)].endswith("ᶠ")
    assert not detail[0][head.index("AUC")].endswith("ᶠ") and "ᶠ Fewer held-out non-members than 1 / FPR" in md


def test_u_lira_runs_the_method_on_the_shadows(noisy_data):
    """U-LiRA's shadows are the evaluated method run on LiRA's shadows (cached, reused); for `original` they
    are the shadows themselves, and U-LiRA is LiRA online."""
    bank = Bank(noisy_data)
    original = bank("original", **MEMORISE)
    lira = evaluate("lira", original, noisy_data, bank, n_shadows=2)
    ulira = evaluate("u-lira", original, noisy_data, bank, n_shadows=2)
    assert metric(ulira, "mia_auc", definition_id="u-lira") == metric(lira, "mia_auc", definition_id="lira-online")
    assert metric(ulira, "mia_power_auc", definition_id="u-lira") == \
        metric(lira, "mia_power_auc", definition_id="lira-online")
    finetuned = bank("finetune", **MEMORISE)
    evaluate("u-lira", finetuned, noisy_data, bank, n_shadows=2)
    runs = [o for name, o in bank.trained if name == "shadow-unlearn"]
    assert len(runs) == 2 and {r["method"] for r in runs} == {"finetune"} and {r["half"] for r in runs} == {0, 1}
    assert json.loads(runs[0]["method_params"])["epochs"] == MEMORISE["epochs"], "the method's own recipe"
    again = evaluate("u-lira", finetuned, noisy_data, bank, n_shadows=2)
    assert len([k for k in bank.trained if k[0] == "shadow-unlearn"]) == 2, "cached, not run again"
    assert again == evaluate("u-lira", finetuned, noisy_data, bank, n_shadows=2)


# ---- through the runner: the shadows are cached models, trained once --------------------------------------

def test_the_second_method_trains_no_shadow(tmp_path):
    registry = Registry()
    sel = Selection(defenses=("original", "finetune", "neggrad"), attacks=("lira",), datasets=("uci-digits-random",),
                    seeds=(0,), profile="smoke", sets=("lira.n_shadows=2", "lira.resamples=20"))
    out = io.StringIO()
    runner = Runner(registry, tmp_path, device="cpu", out=out)
    assert runner.execute(plan(registry, sel)) == 0
    lines = out.getvalue().splitlines()
    jobs = [i for i, line in enumerate(lines) if line.startswith("uci-digits-random / ")]
    trained = [(i, line) for i, line in enumerate(lines) if line.strip().startswith("training ")]
    shadow_lines = [i for i, line in trained if "training shadow " in line]
    assert len(shadow_lines) == 2, "one training per shadow"
    assert all(jobs[0] < i < jobs[1] for i in shadow_lines), "all of them during the first method's evaluation"
    later = [line for i, line in trained if i > jobs[1]]
    assert all("shadow" not in line for line in later), later
    records = sorted((tmp_path / "records").rglob("lira-*.json"))
    assert len(records) == 3


def test_shadows_are_shared_by_seeds_and_lanes_train_different_ones(tmp_path):
    """Every run seed's LiRA uses the same shadows (trained once, with seed 0), and a shadow another lane is
    training is taken after the others rather than waited for."""
    registry = Registry()
    sel = Selection(defenses=("original",), attacks=("lira",), datasets=("uci-digits-random",), seeds=(0, 1),
                    profile="smoke", sets=("lira.n_shadows=3", "lira.resamples=20"))
    out = io.StringIO()
    runner = Runner(registry, tmp_path, device="cpu", out=out)
    asked = []

    def another_lane_trains_the_first(key):
        asked.append(key)
        return key == asked[0]

    runner.cache.busy = another_lane_trains_the_first
    calls, real = [], runner.model

    def spy(defense, dataset, seed, profile):
        if defense.name == "shadow":
            calls.append((defense.params.half, seed))
        return real(defense, dataset, seed, profile)

    runner.model = spy
    assert runner.execute(plan(registry, sel)) == 0
    assert out.getvalue().count("training shadow ") == 3, "one training per shadow for both seeds"
    assert calls[:3] == [(1, 0), (2, 0), (0, 0)], "the busy shadow last"
    assert {seed for _, seed in calls} == {0}
    assert len(sorted((tmp_path / "records").rglob("lira-*.json"))) == 2


# ---- CIFAR-10 scenarios from a local root, resnet18 ---------------------------------------------------------

def test_cifar10_scenarios_from_a_local_root_use_resnet18(tmp_path):
    fake_cifar_bin(tmp_path / "cifar-10-batches-bin", per_file=20)
    root = {"root": str(tmp_path), "n_train": None, "n_test": None}
    for name in ("cifar10-random", "cifar10-uniform", "cifar10-class", "cifar10-noisy"):
        data = plugin("dataset", name, **root).load()
        assert data.train_x.shape[1:] == (3, 32, 32) and len(data.extras["forget_idx"]) > 0
        assert len(membership_sets(data).nonmember) > 0
    from bench.tracks.image_robustness.models import ResNet18
    from bench.tracks.unlearning.scenarios import split_head

    net = plugin("defense", "original", arch=None).build(data.spec)  # None: the scenario's architecture
    assert isinstance(net, ResNet18)
    g, h = split_head(net)
    assert h(g(data.train_x[:2])).shape == (2, 10)
    assert json.loads(json.dumps(net.bench_unlearning_origin))["defense"] == "original"


@pytest.mark.slow
def test_cifar10_resnet18_trains_unlearns_and_is_diagnosed(tmp_path):
    fake_cifar_bin(tmp_path / "cifar-10-batches-bin", per_file=30)
    data = plugin("dataset", "cifar10-random", root=str(tmp_path), n_train=None, n_test=None).load()
    recipe = {"arch": None, "epochs": 1, "batch_size": 64}
    bank = Bank(data)
    original = bank("original", **recipe)
    laf = bank("laf", **recipe, vae_epochs=1, unlearn_epochs=1)
    assert not all(torch.equal(p, q) for p, q in zip(laf.parameters(), original.parameters()))
    assert all(torch.equal(p, q) for p, q in zip(laf.fc.parameters(), original.fc.parameters())), "head unchanged"
    metrics = evaluate("unlearning-acc", laf, data, bank)
    assert {"agree_original", "agree_retrain", "weight_change"} <= {m["name"] for m in metrics}
    assert 0 < metric(metrics, "weight_change") < 1
    lira = evaluate("lira", laf, data, bank, n_shadows=2, resamples=20)
    assert all(0 <= m["value"] <= 1 for m in lira)


@pytest.mark.parametrize("name", ["unlearning-acc", "mia", "lira", "u-lira"])
def test_evaluator_contract_with_the_models_it_needs(name, random_data):
    """The core contract test skips these (they ask the runner for other models: the original, retrain,
    shadows); here they get them from an in-memory bank: well-formed metrics, fractions in [0, 1], same seed ->
    same numbers."""
    bank = Bank(random_data)
    net = bank("original", epochs=2)
    runs = [evaluate(name, net, random_data, bank, **({"n_shadows": 2} if "lira" in name else {})) for _ in range(2)]
    assert runs[0] and runs[0] == runs[1]
    for m in runs[0]:
        assert {"name", "value", "n", "definition"} <= set(m) and 0 <= m["value"] <= 1 and m["n"] > 0
