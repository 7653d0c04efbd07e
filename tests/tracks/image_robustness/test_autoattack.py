"""AutoAttack's components (apgd-ce-l2, apgd-t, fab-t, square and their L2 variants), PGD's losses and the worst
case over them, on a small undefended MLP trained for a few seconds on the UCI digits (8x8), at smoke budgets.

The masked models are the two classic ways to fool gradient-based evaluations: an input layer that quantises
(zero gradients everywhere) and logits scaled by 1e4 (a saturated softmax, so the cross-entropy's gradient is
exactly zero). The numbers in the comments were measured on this CPU (clean accuracy ~97 %); the asserts
leave wide margins around them.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench import threat
from bench.context import AttackContext
from bench.hparams import resolve
from bench.records import unpack_mask
from bench.registry import Registry
from bench.runner import Runner, Selection, plan
from bench_attacks.image_robustness.fab import project_on_hyperplane

REGISTRY = Registry()
NEW = ("apgd-ce-l2", "apgd-t", "apgd-t-l2", "fab-t", "fab-t-l2", "square", "square-l2")
EPS = {"linf": 0.2, "l2": 1.5}
BOUNDS = (0.0, 1.0)


def attack(name: str, profile: str = "smoke", sets=()):
    base = name.split(":")[0]
    cls = REGISTRY.load("attack", base)
    plugin = cls(resolve({base: cls}, profile, list(sets))[base])
    plugin.name = base
    return plugin


def ctx(seed: int = 0) -> AttackContext:
    return AttackContext(bounds=BOUNDS, generator=torch.Generator().manual_seed(seed), registry=REGISTRY,
                         profile="smoke")


@pytest.fixture(scope="module")
def digits():
    """A 64-64-10 MLP trained for ~2 s (full-batch Adam) on 512 UCI digits; 256 held-out test images."""
    cls = REGISTRY.load("dataset", "uci-digits")
    data = cls(resolve({"uci-digits": cls}, "smoke", [])["uci-digits"]).load()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = F.cross_entropy(model(data.train_x), data.train_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, data.test_x, data.test_y


class Quantised(nn.Module):
    """(x * 255).round() / 255 before the model: the input gradient is zero everywhere."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model((x * 255).round() / 255)


class Saturated(nn.Module):
    """Logits x 1e4: the softmax saturates and the cross-entropy's gradient is exactly zero."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x) * 1e4


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("this model has no gradient")


class BlackBox(nn.Module):
    """Backward raises; forward records whether it was ever asked to build a graph."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.graph_calls = 0

    def forward(self, x):
        if torch.is_grad_enabled() and x.requires_grad:
            self.graph_calls += 1
        return self.model(_NoBackward.apply(x))


def robust(model, x_adv, y):
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def run(name, model, x, y, eps=None, seed=0, sets=()):
    a = attack(name, sets=sets)
    eps = EPS[a.norm] if eps is None else eps
    x_adv = a.perturb(model, x, y, eps, ctx(seed))
    _, bad = threat.enforce(x, x_adv, a.norm, eps, BOUNDS)
    assert bad == 0, f"{name}: {bad} examples outside the threat model"
    return x_adv, robust(model, x_adv, y)


# --- each component breaks an undefended model ------------------------------------------------------------

@pytest.mark.parametrize("name", NEW)
def test_breaks_an_undefended_model(digits, name):
    """Measured (smoke budgets, linf 0.2 / l2 1.5): clean 95 %; APGD-T, FAB-T 0 %, Square-L2 7-10 %, the others
    <= 1 %. Square at the smoke budget (50 queries) leaves 42-48 % over seeds 0-3, too close to the bound to
    test: it gets 500 queries here."""
    model, x, y = digits
    clean = robust(model, x, y)
    rng = torch.random.get_rng_state()
    x_adv, rob = run(name, model, x, y, sets=["square.queries=500"] if name == "square" else ())
    assert torch.equal(rng, torch.random.get_rng_state()), "the global RNG must be left alone"
    assert clean.float().mean() > 0.9
    assert not (rob & ~clean).any(), "robust but misclassified clean"
    assert rob.float().mean() < 0.5 * clean.float().mean(), f"{name}: {rob.float().mean():.3f}"
    assert torch.equal(x_adv[~clean], x[~clean]), "clean errors are returned unchanged"
    sets = ["square.queries=500"] if name == "square" else ()
    x_again = attack(name, sets=sets).perturb(model, x, y, EPS[attack(name).norm], ctx(0))
    assert torch.equal(x_adv, x_again), "same seed, same adversarial examples"


@pytest.mark.parametrize("name", ("apgd-t", "apgd-t-l2", "fab-t", "fab-t-l2"))
def test_targeted_successes_count_only_when_misclassified(digits, name):
    """An example is returned perturbed only if the model misclassifies it there (as any class); one the
    attack did not break is returned unchanged. At a small eps both kinds occur."""
    model, x, y = digits
    eps = 0.05 if attack(name).norm == "linf" else 0.5
    x_adv, rob = run(name, model, x, y, eps=eps)
    changed = (x_adv != x).flatten(1).any(1)
    assert changed.any() and (~changed & robust(model, x, y)).any()
    assert not (changed & rob).any(), "a perturbed example must be misclassified"
    assert torch.equal(x_adv[~changed], x[~changed])


def test_more_targets_and_steps_break_more(digits):
    """Later targets only attack the survivors of earlier ones: the first target's result stays, per example."""
    model, x, y = digits
    one = run("apgd-t", model, x, y, eps=0.05, sets=["apgd-t.targets=1"])[1]
    three = run("apgd-t", model, x, y, eps=0.05, sets=["apgd-t.targets=3"])[1]
    assert not (three & ~one).any()
    assert three.sum() <= one.sum()


# --- square needs no gradient -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ("square", "square-l2"))
def test_square_needs_no_gradient(digits, name):
    """Breaks the model through a wrapper that refuses gradients as it does the plain model (500 queries for
    Square L-inf, as in ``test_breaks_an_undefended_model``)."""
    model, x, y = digits
    box = BlackBox(model).eval()
    _, rob = run(name, box, x, y, sets=["square.queries=500"] if name == "square" else ())
    assert box.graph_calls == 0
    assert rob.float().mean() < 0.5 * robust(model, x, y).float().mean()
    with pytest.raises(RuntimeError, match="no gradient"):  # the wrapper does refuse gradients
        xg = x[:2].clone().requires_grad_(True)
        box(xg).sum().backward()


# --- masked models ----------------------------------------------------------------------------------------

def test_quantised_input_stops_white_box_attacks_but_not_square(digits):
    """Zero gradients: white-box attacks only keep what their random start breaks (measured at linf 0.2:
    APGD-CE 91 %, APGD-T 90 %, FAB-T 97 % = clean, PGD 91 %; l2 1.5: APGD-CE-L2 88 %, FAB-T-L2 97 %) while
    Square, which only queries, breaks it as it breaks the plain model (35 %; L2 16 %)."""
    model, x, y = digits
    q = Quantised(model)
    clean = robust(q, x, y).float().mean()
    acc = {name: run(name, q, x, y)[1].float().mean() for name in
           ("apgd-ce", "apgd-t", "fab-t", "pgd-linf", "square", "apgd-ce-l2", "fab-t-l2", "square-l2")}
    for name in ("apgd-ce", "apgd-t", "fab-t", "pgd-linf", "apgd-ce-l2", "fab-t-l2"):
        assert acc[name] > clean - 0.2, f"{name} should be stopped by zero gradients: {acc[name]:.3f}"
    assert acc["square"] < 0.5 * clean and acc["square"] < acc["apgd-t"] - 0.3
    assert acc["square-l2"] < 0.5 * clean and acc["square-l2"] < acc["fab-t-l2"] - 0.3


def test_saturated_softmax_stalls_ce_but_not_margin_losses(digits):
    """Logits x 1e4 (measured at linf 0.2): PGD-CE 91 % and APGD-CE 91 % (only the random start breaks
    some); PGD-CW 0 %, PGD-DLR 2 %, APGD-DLR 6 %, APGD-T 0 %, FAB-T 0 %; L2 1.5: PGD-L2-CE 93 %, -CW 0 %."""
    model, x, y = digits
    s = Saturated(model)
    clean = robust(s, x, y).float().mean()
    acc = {name: run(name, s, x, y, sets=[f'{name.split(":")[0]}.loss="{name.split(":")[1]}"'] if ":" in name
                     else ())[1].float().mean()
           for name in ("pgd-linf", "pgd-linf:cw", "pgd-linf:dlr", "apgd-ce", "apgd-dlr", "apgd-t", "fab-t",
                        "pgd-l2", "pgd-l2:cw", "apgd-t-l2")}
    for name in ("pgd-linf", "apgd-ce", "pgd-l2"):
        assert acc[name] > clean - 0.2, f"{name} (CE) should stall: {acc[name]:.3f}"
    for name in ("pgd-linf:cw", "pgd-linf:dlr", "apgd-dlr", "apgd-t", "fab-t", "pgd-l2:cw", "apgd-t-l2"):
        assert acc[name] < 0.25, f"{name} should break the saturated model: {acc[name]:.3f}"


def test_pgd_loss_defaults_to_ce_with_unchanged_numbers(digits):
    model, x, y = digits
    a = attack("pgd-linf")
    assert a.params.loss == "ce" and "loss=ce" in a.describe()
    from bench.tracks.image_robustness.adversarial import pgd

    p = a.params
    expected = pgd(model, x, y, 0.1, p.rel_step * 0.1 / p.steps, p.steps, norm="linf",
                   generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.perturb(model, x, y, 0.1, ctx(0)), expected)


# --- the FAB projection -----------------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ("linf", "l2"))
def test_projection_onto_hyperplane_in_box_is_optimal(norm):
    """Against scipy's LP (linf) and SLSQP (l2) on random problems; infeasible ones go to the box corner."""
    from scipy.optimize import linprog, minimize

    g = torch.Generator().manual_seed(0)
    n, dim = 60, 6
    p = torch.rand(n, dim, generator=g, dtype=torch.float64)
    w = torch.randn(n, dim, generator=g, dtype=torch.float64)
    w[::4, 0] = 0.0  # coordinates the hyperplane ignores
    r = torch.randn(n, generator=g, dtype=torch.float64) * 0.7
    d = project_on_hyperplane(p, w, r, norm, BOUNDS).numpy()
    infeasible = 0
    for i in range(n):
        pi, wi, ri, di = p[i].numpy(), w[i].numpy(), float(r[i]), d[i]
        lo, hi = -pi, 1 - pi
        assert (di >= lo - 1e-9).all() and (di <= hi + 1e-9).all()
        toward = np.where(np.sign(ri) * wi > 0, hi, np.where(np.sign(ri) * wi < 0, lo, 0.0))
        if abs(wi @ toward) < abs(ri):
            infeasible += 1
            assert np.allclose(di, toward, atol=1e-9)
            continue
        assert abs(wi @ di - ri) < 1e-9
        if norm == "linf":
            res = linprog(np.r_[np.zeros(dim), 1.0],
                          A_ub=np.r_[np.c_[np.eye(dim), -np.ones(dim)], np.c_[-np.eye(dim), -np.ones(dim)]],
                          b_ub=np.zeros(2 * dim), A_eq=np.r_[wi, 0.0][None], b_eq=[ri],
                          bounds=[*zip(lo, hi), (0, None)])
            assert np.abs(di).max() <= res.fun + 1e-7
        else:
            plane = {"type": "eq", "fun": lambda v, wi=wi, ri=ri: wi @ v - ri, "jac": lambda v, wi=wi: wi}
            res = minimize(lambda v: (v ** 2).sum(), np.zeros(dim), jac=lambda v: 2 * v, method="SLSQP",
                           constraints=[plane],
                           bounds=list(zip(lo, hi)), options={"ftol": 1e-14, "maxiter": 500})
            assert np.linalg.norm(di) <= np.sqrt(res.fun) + 1e-6
    assert 0 < infeasible < n


# --- the worst case ---------------------------------------------------------------------------------------

def test_worst_case_defaults_are_autoattack_then_the_suite():
    full = attack("worst-case", "full").params.attacks
    assert full[:4] == ("apgd-ce", "apgd-t", "fab-t", "square")
    assert set(full[4:]) == {"apgd-dlr", "pgd-linf", "fgsm", "deepfool"}
    assert attack("worst-case-l2", "full").params.attacks == ("apgd-ce-l2", "apgd-t-l2", "fab-t-l2", "square-l2",
                                                              "pgd-l2", "cw-l2")
    # The CPU profiles keep the suite's own attacks (the committed quick tables); see worst_case.py.
    assert attack("worst-case", "quick").params.attacks == ("apgd-ce", "apgd-dlr", "pgd-linf", "fgsm", "deepfool")
    for profile in ("smoke", "quick", "full"):
        for wc in ("worst-case", "worst-case-l2"):
            w = attack(wc, profile)
            assert all(attack(c, profile).norm == w.norm for c in w.params.attacks)
    full = {n: attack(n, "full").params for n in ("apgd-t", "fab-t", "square")}
    assert (full["apgd-t"].steps, full["apgd-t"].targets, full["apgd-t"].restarts) == (100, 9, 1)
    assert (full["fab-t"].steps, full["fab-t"].targets, full["fab-t"].restarts) == (100, 9, 1)
    assert (full["square"].queries, full["square"].p_init) == (5000, 0.8)


def test_worst_case_in_the_runner_is_the_per_example_and(tmp_path):
    """Through the runner (uci-digits, the smoke standard model): the worst case's per-example outcome is the
    AND of its components', so at most each of them, example by example."""
    attacks = ("worst-case-l2", "apgd-ce-l2", "apgd-t-l2", "fab-t-l2", "square-l2", "pgd-l2", "cw-l2")
    components = json.dumps(list(attacks[1:]))  # the full profile's list, at the smoke budgets
    sel = Selection(defenses=("standard",), attacks=attacks, datasets=("uci-digits",), profile="smoke",
                    sets=(f"worst-case-l2.attacks={components}",))
    runner = Runner(REGISTRY, tmp_path, device="cpu")
    assert runner.execute(plan(REGISTRY, sel)) == 0
    recs = {p.name.split("-s0")[0]: json.loads(p.read_text()) for p in (tmp_path / "records").rglob("*.json")}
    masks = {name: unpack_mask(recs[name]["per_example"][0]) for name in attacks}
    worst = masks.pop("worst-case-l2")
    assert torch.equal(worst, torch.stack(list(masks.values())).all(0))
    for name, mask in masks.items():
        assert not (worst & ~mask).any(), f"robust under the worst case but broken by {name}"
        assert recs[name]["threat_model"]["violations"] == 0
    clean = recs["worst-case-l2"]["metrics"][0]["value"]
    assert 0 <= worst.float().mean() < clean


def test_certifier_soundness_is_checked_against_the_worst_case_not_pgd_alone(digits):
    """A certifier that 'verifies' what PGD cannot break passes a PGD-only soundness check on a model with zero
    input gradients; the worst case (Square among its components) breaks some of those examples, so checked
    against it, as the runner checks every image certifier, the claim fails."""
    assert REGISTRY.load("attack", "certified-ibp").companion == "worst-case"
    assert REGISTRY.load("attack", "certified-crown").companion == "worst-case"
    model, x, y = digits
    q = Quantised(model)
    claimed = run("pgd-linf", q, x, y)[1]  # the unsound certifier's answer
    worst = robust(q, attack("worst-case").perturb(q, x, y, EPS["linf"], ctx()), y)
    assert not (claimed & ~run("pgd-linf", q, x, y)[1]).any()  # PGD sees nothing wrong
    assert int((claimed & ~worst).sum()) > 10  # the worst case does
