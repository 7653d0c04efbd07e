"""Unit tests for the PGD core (bench/tracks/image_robustness/adversarial.py) and the built-in attacks, on a tiny linear model."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench import threat
from bench.context import AttackContext
from bench.registry import Registry
from bench.tracks.image_robustness.adversarial import fgsm, pgd
from bench_attacks.image_robustness.pgd import PGDLinf, PGDParams
from bench_attacks.image_robustness.worst_case import (
    WorstCaseL2,
    WorstCaseL2Params,
    WorstCaseLinf,
    WorstCaseLinfParams,
)

ATTACKS = {
    "fgsm": "bench_attacks.image_robustness.fgsm:FGSM", "pgd-linf": "bench_attacks.image_robustness.pgd:PGDLinf", "pgd-l2": "bench_attacks.image_robustness.pgd:PGDL2",
    "cw-l2": "bench_attacks.image_robustness.cw:CWL2", "deepfool": "bench_attacks.image_robustness.deepfool:DeepFoolLinf", "apgd-ce": "bench_attacks.image_robustness.apgd:APGDCE",
    "apgd-dlr": "bench_attacks.image_robustness.apgd:APGDDLR", "worst-case": "bench_attacks.image_robustness.worst_case:WorstCaseLinf",
    "worst-case-l2": "bench_attacks.image_robustness.worst_case:WorstCaseL2",
    "pgd-no-start": "test_image_attacks:PGDNoStart",
}
BOUNDS = (0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class _NoStartParams(PGDParams):
    random_start: bool = False


class PGDNoStart(PGDLinf):
    """Deterministic per example (no random start): its result does not depend on the batch it runs in."""

    Params = _NoStartParams


@pytest.fixture(scope="module")
def registry():
    return Registry(extra={"attack": ATTACKS})


@pytest.fixture
def data():
    """A linear 'teacher' and its own labels: 100% clean accuracy, so any drop is the attack's doing."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    x = torch.rand(64, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def ctx_for(registry, seed=0, profile="smoke"):
    return AttackContext(bounds=BOUNDS, generator=torch.Generator().manual_seed(seed), registry=registry,
                         profile=profile)


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


# --- the PGD core ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 1.0)])
def test_pgd_stays_in_ball_and_bounds(data, norm, eps):
    model, x, y = data
    x_adv = pgd(model, x, y, eps, step_size=eps / 2, steps=5, norm=norm, generator=torch.Generator().manual_seed(1))
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert x_adv.min() >= BOUNDS[0] and x_adv.max() <= BOUNDS[1]
    assert (threat.norms(x_adv - x, norm) <= eps * (1 + 1e-5)).all()
    assert (threat.norms(x_adv - x, norm) > eps / 4).all()  # it did move


@pytest.mark.parametrize("norm,eps", [("linf", 0.03), ("l2", 1.0)])
def test_pgd_raises_loss_and_lowers_accuracy(data, norm, eps):
    model, x, y = data
    x_adv = pgd(model, x, y, eps, step_size=2.5 * eps / 10, steps=10, norm=norm,
                generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y) + 0.2
    assert accuracy(model, x, y) == 1.0
    assert accuracy(model, x_adv, y) < 0.5


def test_pgd_is_deterministic_under_a_seed(data):
    model, x, y = data

    def run(seed, norm):
        return pgd(model, x, y, 0.1, 0.02, 3, norm=norm, generator=torch.Generator().manual_seed(seed))

    for norm in ("linf", "l2"):
        assert torch.equal(run(7, norm), run(7, norm))
        assert not torch.equal(run(7, norm), run(8, norm))  # the start is random


def test_pgd_leaves_model_alone_and_works_under_no_grad(data):
    model, x, y = data
    with torch.no_grad():  # e.g. called from an evaluation loop
        x_adv = pgd(model, x, y, 0.1, 0.05, 2)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert not torch.equal(x_adv, x)


def test_fgsm_is_one_sign_step(data):
    model, x, y = data
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
    expected = (x + 0.1 * grad.sign()).clamp(*BOUNDS)
    assert torch.allclose(fgsm(model, x, y, 0.1, BOUNDS), expected, atol=1e-6, rtol=0)


def test_fgsm_plugin_matches_core(data, registry):
    """The foolbox FGSM plugin and our one-step core compute the same thing."""
    model, x, y = data
    ctx = ctx_for(registry)
    x_adv = ctx.run(ctx.attack("fgsm"), model, x, y, 0.1)
    assert torch.allclose(x_adv, fgsm(model, x, y, 0.1, BOUNDS), atol=1e-6, rtol=0)
    assert all(p.grad is None for p in model.parameters())  # foolbox's backward did not reach the weights


# --- the plugins ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["fgsm", "pgd-linf", "pgd-l2", "cw-l2", "deepfool", "apgd-ce", "apgd-dlr"])
def test_plugin_contract(data, registry, name):
    """In the threat model, deterministic under the seed, no side effects on the model or global RNG."""
    model, x, y = data
    ctx = ctx_for(registry)
    attack = ctx.attack(name)
    eps = 0.1 if attack.norm == "linf" else 1.0
    rng = torch.random.get_rng_state()
    x_adv = attack.perturb(model, x, y, eps, ctx)
    assert torch.equal(rng, torch.random.get_rng_state())
    assert x_adv.shape == x.shape and x_adv.device == x.device and not x_adv.requires_grad
    _, bad = threat.enforce(x, x_adv, attack.norm, eps, BOUNDS)
    assert bad == 0
    assert not model.training and all(p.requires_grad and p.grad is None for p in model.parameters())
    ctx2 = ctx_for(registry)
    assert torch.equal(x_adv, ctx2.attack(name).perturb(model, x, y, eps, ctx2))
    if name != "cw-l2":  # the smoke C&W (1 x 3 steps from c=1e-3) is too weak to count on
        assert accuracy(model, x_adv, y) < 1.0


def test_pgd_restarts_only_add_successes(data, registry):
    model, x, y = data
    eps = 0.01  # weak enough that some examples survive one run

    def robust(restarts):
        attack = PGDLinf(PGDParams(steps=1, rel_step=0.1, restarts=restarts))  # the start matters
        x_adv = attack.perturb(model, x, y, eps, ctx_for(registry, seed=3))
        with torch.no_grad():
            return model(x_adv).argmax(1) == y

    one, many = robust(1), robust(4)
    assert 0 < one.sum() < len(y)
    assert not (many & ~one).any()  # the first run is the same; later restarts can only fool more...
    assert many.sum() < one.sum()  # ...and here they do


# --- worst case -----------------------------------------------------------------------------------------

def test_worst_case_is_below_every_sub_attack(data, registry):
    model, x, y = data
    y = y.clone()
    y[:4] = (y[:4] + 1) % 10  # four clean errors: returned unchanged, never attacked
    names = ("pgd-no-start", "fgsm", "deepfool")
    eps = 0.01
    worst = WorstCaseLinf(WorstCaseLinfParams(attacks=names))
    ctx = ctx_for(registry)
    x_worst = ctx.run(worst, model, x, y, eps)
    assert torch.equal(x_worst[:4], x[:4])
    with torch.no_grad():
        robust_worst = model(x_worst).argmax(1) == y
    assert not robust_worst[:4].any()
    robust_all = torch.ones_like(robust_worst)
    for name in names:
        sub_ctx = ctx_for(registry)
        x_sub = sub_ctx.run(sub_ctx.attack(name), model, x, y, eps)
        with torch.no_grad():
            robust_sub = model(x_sub).argmax(1) == y
        assert not (robust_worst & ~robust_sub).any(), f"robust under worst case but fooled by {name}"
        robust_all &= robust_sub
    # These sub-attacks are deterministic per example, so the worst case is exactly the intersection.
    assert torch.equal(robust_worst, robust_all) and 0 < robust_worst.sum() < len(y) - 4
    assert ctx.violations == 0


def test_worst_case_registered_defaults_run(data, registry):
    model, x, y = data
    for name, eps in (("worst-case", 0.05), ("worst-case-l2", 1.0)):
        ctx = ctx_for(registry)
        x_adv = ctx.run(ctx.attack(name), model, x, y, eps)
        assert accuracy(model, x_adv, y) < 1.0 and ctx.violations == 0


@pytest.mark.parametrize("cls,params", [(WorstCaseLinf, WorstCaseLinfParams(attacks=("fgsm", "pgd-l2"))),
                                        (WorstCaseL2, WorstCaseL2Params(attacks=("cw-l2", "pgd-linf")))])
def test_worst_case_refuses_other_norms(data, registry, cls, params):
    model, x, y = data
    with pytest.raises(ValueError, match="sub-attack"):
        cls(params).perturb(model, x, y, 0.1, ctx_for(registry))


@pytest.mark.parametrize("eps,const", [(0.5, 0.1), (1.0, 1e-3)])
def test_cw_l2_has_foolbox_s_outcome(data, eps, const):
    """The suite's C&W L2 is the paper's algorithm as foolbox implements it (same Adam, binary search and early
    abort): the same per-example outcome on the same model (measured: identical on a trained CNN too)."""
    import foolbox

    from bench_attacks.image_robustness.cw import CWParams, cw_l2

    model, x, y = data
    for p in model.parameters():
        p.requires_grad_(False)
    params = CWParams(binary_search_steps=3, steps=30, initial_const=const, stop_at_eps=False)
    reference = foolbox.attacks.L2CarliniWagnerAttack(binary_search_steps=3, steps=30, stepsize=0.01,
                                                      confidence=0.0, initial_const=const)
    _, (theirs,), _ = reference(foolbox.PyTorchModel(model, bounds=BOUNDS), x, y, epsilons=[eps])
    ours = cw_l2(model, x, y, eps, params, BOUNDS)
    with torch.no_grad():
        fooled_theirs, fooled_ours = model(theirs).argmax(1) != y, model(ours).argmax(1) != y
    assert 0 < int(fooled_ours.sum()) < len(x), "the probe needs both outcomes"
    assert torch.equal(fooled_ours, fooled_theirs)
    found = fooled_ours  # foolbox returns a point eps away from x where it found nothing; the suite returns x
    assert torch.allclose(ours[found], theirs[found], atol=1e-4)


def test_cw_l2_stopping_at_eps_keeps_the_outcomes(data):
    """Examples leave the search once adversarial within eps: the per-example outcome at eps is the full
    search's up to the early abort's timing, which now sums over fewer examples (measured: identical here)."""
    from bench_attacks.image_robustness.cw import CWParams, cw_l2

    model, x, y = data
    for p in model.parameters():
        p.requires_grad_(False)
    outcome = {}
    for stop in (False, True):
        adv = cw_l2(model, x, y, 0.5, CWParams(binary_search_steps=5, steps=40, initial_const=1e-3,
                                               stop_at_eps=stop), BOUNDS)
        assert (adv - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-5
        with torch.no_grad():
            outcome[stop] = model(adv).argmax(1) != y
    assert 0 < int(outcome[True].sum()) < len(x), "the probe needs both outcomes"
    assert (outcome[True] == outcome[False]).float().mean() >= 0.95
