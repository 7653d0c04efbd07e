"""MTARD and its baselines (trades, ard) and the cw-linf attack: the balance rules, the losses, teachers from
the runner, recorded trajectories, determinism, and robustness on tiny data. (The generic contract tests cover
shapes and the threat model of every plugin.)"""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from bench.context import TrainContext
from bench.errors import DataMissing
from bench.hparams import resolve
from bench.registry import Registry
from bench.runner import Runner, Selection, plan
from bench_attacks.image_robustness.cw_linf import margin
from bench_defenses.image_robustness.mtard import Balance, MTARDParams, entropy, kl_mean

REGISTRY = Registry()


def smoke(kind, name, **overrides):
    cls = REGISTRY.load(kind, name)
    params = resolve({name: cls}, "smoke", [f"{k}={json.dumps(v)}" for k, v in overrides.items()])[name]
    return cls(params)


# ---- the two balance rules ---------------------------------------------------------------------------------
def test_weight_balance_favours_the_teacher_whose_loss_fell_less():
    balance = Balance(MTARDParams(), "cpu")
    balance.update_weights(torch.tensor([2.0, 4.0]), rate=1.0)  # first batch: L(0), ratios 1 and 1
    assert torch.allclose(balance.w, torch.tensor([0.5, 0.5]))
    for _ in range(600):  # the adversarial loss stays put, the natural one has fallen to a quarter
        balance.update_weights(torch.tensor([2.0, 1.0]), rate=1.0)
    w_adv, w_nat = balance.w.tolist()
    assert w_adv > w_nat and math.isclose(w_adv + w_nat, 1.0, rel_tol=1e-6)
    assert math.isclose(w_adv, 1 / (1 + 0.25), rel_tol=1e-3)  # the fixed point r_i / sum_j r_j


def test_weight_balance_rate_scales_the_step():
    fast, slow = Balance(MTARDParams(), "cpu"), Balance(MTARDParams(), "cpu")
    for b, rate in ((fast, 1.0), (slow, 0.1)):
        b.update_weights(torch.tensor([1.0, 1.0]), rate)
        b.update_weights(torch.tensor([1.0, 0.1]), rate)
    assert fast.w[0].item() - 0.5 == pytest.approx(10 * (slow.w[0].item() - 0.5), rel=1e-4)


def test_temperature_balance_pulls_entropies_together_within_bounds():
    p = MTARDParams(eta_tau=0.5)
    balance = Balance(p, "cpu")
    # the robust teacher is the more uncertain one: its temperature falls, the clean teacher's rises
    balance.update_temperatures(torch.tensor([2.0, 1.0]), rate=1.0)
    assert balance.tau.tolist() == [1.0, 1.5]  # tau_adv already at its floor of 1
    for _ in range(40):
        balance.update_temperatures(torch.tensor([2.0, 1.0]), rate=1.0)
    assert balance.tau.tolist() == [p.tau_min, p.tau_max]
    balance.update_temperatures(torch.tensor([1.0, 1.0]), rate=1.0)  # equal entropies: no change
    assert balance.tau.tolist() == [p.tau_min, p.tau_max]


def test_softening_with_the_balanced_temperature_raises_the_sharper_teachers_entropy():
    logits = torch.tensor([[6.0, 0.0, 0.0], [0.0, 5.0, 1.0]])
    assert entropy(F.softmax(logits / 3, 1)) > entropy(F.softmax(logits, 1)) > 0


def test_kl_is_averaged_over_all_elements():
    student, teacher = torch.randn(4, 10), F.softmax(torch.randn(4, 10), 1)
    pointwise = teacher * (teacher.log() - F.log_softmax(student, 1))
    assert kl_mean(student, teacher).item() == pytest.approx(pointwise.mean().item(), rel=1e-5)
    assert kl_mean(torch.log(teacher), teacher).item() == pytest.approx(0.0, abs=1e-6)


# ---- cw-linf -------------------------------------------------------------------------------------------------
def test_cw_margin_is_positive_exactly_on_misclassified_examples():
    logits = torch.tensor([[3.0, 1.0, 0.0], [1.0, 4.0, 2.0], [0.0, 0.5, 0.2]])
    y = torch.tensor([0, 2, 2])
    per_example = torch.stack([margin(logits[i:i + 1], y[i:i + 1]) for i in range(3)])
    assert per_example.tolist() == pytest.approx([-2.0, 2.0, 0.3])
    assert ((per_example > 0) == (logits.argmax(1) != y)).all()


# ---- end to end through the runner: teachers, trajectories, robustness --------------------------------------
@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """standard, pgd-at, trades, ard, mtard and mtard's ECCV variant on uci-digits (smoke), attacked by PGD."""
    results = tmp_path_factory.mktemp("mtard")
    sel = Selection(defenses=("standard", "pgd-at", "trades", "ard", "mtard"), attacks=("pgd-linf", "cw-linf"),
                    datasets=("uci-digits",), profile="smoke")
    runner = Runner(REGISTRY, results, device="cpu")
    assert runner.execute(plan(REGISTRY, sel)) == 0
    eccv = Selection(defenses=("mtard",), attacks=("pgd-linf",), datasets=("uci-digits",), profile="smoke",
                     sets=("mtard.temperature_balance=false",))
    assert runner.execute(plan(REGISTRY, eccv)) == 0
    rows = {(r["defense"], r["attack"]): r for r in runner.summary}
    metas = [json.loads(p.read_text()) for p in (results / "cache").glob("*.json")]
    return results, rows, metas


def _meta(metas, name, **params):
    found = [m for m in metas if m["defense"]["name"] == name
             and all(m["defense"]["params"][k] == v for k, v in params.items())]
    assert len(found) == 1, (name, params, [m["defense"] for m in metas])
    return found[0]


def test_teachers_come_from_the_runner_once(grid):
    _, _, metas = grid
    # standard and pgd-at at width 1 (their own rows) plus the width-2 teachers shared by ard and mtard
    assert sorted(m["defense"]["name"] for m in metas) == ["ard", "mtard", "mtard", "pgd-at", "pgd-at-teacher",
                                                           "standard", "standard-teacher", "trades"]
    student = _meta(metas, "mtard", temperature_balance=True)["defense"]["params"]
    for teacher in ("pgd-at-teacher", "standard-teacher"):
        params = _meta(metas, teacher, width=2)["defense"]["params"]
        assert params["arch"] == student["arch"] and params["width"] > student["width"]
        assert params["epochs"] >= student["epochs"]  # trained at (at least) the students' budget


def test_every_mtard_table_row_trains_the_same_budget():
    """standard, pgd-at, trades, ard and mtard: the same epochs, architecture and batch size in each profile."""
    from bench.tracks.image_robustness import MTARD_DEFENSES

    students = [d for d in MTARD_DEFENSES if not d.endswith("-teacher")]
    for profile in ("smoke", "quick", "full"):
        budgets = {}
        for name in students:
            cls = REGISTRY.load("defense", name)
            p = resolve({name: cls}, profile, [])[name]
            budgets[name] = (p.epochs, p.arch, p.width, p.batch_size)
        assert len(set(budgets.values())) == 1, (profile, budgets)


def test_trajectories_recorded_in_history_and_artifacts(grid):
    results, _, metas = grid
    meta = _meta(metas, "mtard", temperature_balance=True)
    traj = [h for h in meta["history"] if "w_adv" in h]
    epochs = meta["defense"]["params"]["epochs"]
    assert [h["epoch"] for h in traj] == list(range(epochs + 1))
    for h in traj:
        assert h["w_adv"] + h["w_nat"] == pytest.approx(1.0, abs=1e-5) and min(h["w_adv"], h["w_nat"]) >= 0
        assert 1.0 <= h["tau_adv"] <= 10.0 and 1.0 <= h["tau_nat"] <= 10.0
    assert traj[-1]["w_adv"] != 0.5 and (traj[-1]["tau_adv"], traj[-1]["tau_nat"]) != (1.0, 1.0)
    files = sorted(p.name for p in (results / "artifacts").rglob("mtard_balance.*"))
    assert files == ["mtard_balance.json", "mtard_balance.json", "mtard_balance.png", "mtard_balance.png"]
    eccv = _meta(metas, "mtard", temperature_balance=False)
    assert all(h["tau_adv"] == h["tau_nat"] == 1.0 for h in eccv["history"] if "tau_adv" in h)


def test_the_student_learns_from_both_teachers(grid):
    _, rows, metas = grid
    epochs = [h for h in _meta(metas, "mtard", temperature_balance=True)["history"] if "loss_adv" in h]
    assert epochs[-1]["loss_adv"] < 0.7 * epochs[0]["loss_adv"]
    assert epochs[-1]["loss_nat"] < 0.7 * epochs[0]["loss_nat"]
    assert rows[("mtard", "pgd-linf")]["clean"] > 0.5  # 10 classes: chance is 0.1


@pytest.mark.parametrize("name", ["mtard", "ard"])
def test_distillation_is_deterministic_under_the_seed(name, digits_small):
    torch.manual_seed(1)
    teachers = {name: smoke("defense", "standard").build(digits_small.spec).eval() for name in ("a", "b")}

    def fit():
        torch.manual_seed(0)
        defense = smoke("defense", name, epochs=1)
        net = defense.build(digits_small.spec)
        ctx = TrainContext(device=torch.device("cpu"), seed=0, generator=torch.Generator().manual_seed(0),
                           artifacts=None, epsilons={"linf": (0.1,)},
                           model_of=lambda name, **o: teachers["a" if name == "standard" else "b"])
        defense.fit(net, digits_small, ctx)
        return [p.detach().clone() for p in net.parameters()], ctx.history

    (w1, h1), (w2, h2) = fit(), fit()
    assert all(torch.equal(a, b) for a, b in zip(w1, w2)) and h1 == h2


@pytest.fixture(scope="module")
def digits_small():
    return smoke("dataset", "uci-digits").load()


def test_unknown_teacher_is_a_usage_error(cli):
    code, _, err = cli("run", "--defense", "mtard", "--attack", "fgsm", "--dataset", "uci-digits",
                       "--profile", "smoke", "--set", "mtard.robust_teacher=lirpa")
    assert code == 2 and "robust_teacher" in err and len(err.strip().splitlines()) == 1


def test_cifar10_through_a_local_root(tmp_path):
    dataset = smoke("dataset", "cifar10")
    try:
        dataset.check()
    except DataMissing as exc:
        pytest.skip(str(exc))
    sel = Selection(defenses=("mtard",), attacks=("cw-linf",), datasets=("cifar10",), profile="smoke",
                    sets=("mtard.epochs=1", "cifar10.n_train=256", "cifar10.n_test=64"))
    runner = Runner(REGISTRY, tmp_path, device="cpu")
    assert runner.execute(plan(REGISTRY, sel)) == 0
