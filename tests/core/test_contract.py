"""One contract, every registered plugin: a new plugin is covered here without writing a test.

Attacks: shapes, finite, the raw perturbation (before the framework's clipping) within eps and bounds,
robust <= clean, same seed -> same output. Defenses: a model whose logits have the right shape, finite,
the same weights under the same seed. Datasets: shapes, bounds and labels (skipped when the files are absent).
Each plugin runs on what its track's ``contract`` names (dataset, defense); a track whose inputs are not
tensors (``"inputs": "own"``: strings, prompts) checks the same properties in its own tests.
"""
import functools

import pytest
import torch

from bench.context import AttackContext, EvalContext, TrainContext
from bench.errors import DataMissing, NotCertifiable, UsageError
from bench.hparams import resolve
from bench.plugins import Certifier, Evaluator
from bench.registry import Registry
from bench.threat import TOLERANCE, norms

REGISTRY = Registry()


def smoke(kind, name):
    cls = REGISTRY.load(kind, name)
    return cls(resolve({name: cls}, "smoke", [])[name])


def _track(kind, name):
    cls = REGISTRY.load(kind, name)
    return REGISTRY.track(cls.tracks[0] if kind == "dataset" else cls.track)


def _skip_own(kind, name):
    track = _track(kind, name)
    if track.contract.get("inputs") != "tensors":
        pytest.skip(f"track {track.name} checks this contract in its own tests (inputs: "
                    f"{track.contract.get('inputs', 'undeclared')})")


@pytest.mark.parametrize("name", REGISTRY.names("track"))
def test_track_declares_its_contract_and_suites(name):
    track = REGISTRY.track(name)
    assert track.contract.get("inputs") in ("tensors", "own"), f"{name}: contract['inputs'] must be declared"
    for kind in ("dataset", "defense"):
        plugin = REGISTRY.load(kind, track.contract[kind])
        assert name in (plugin.tracks if kind == "dataset" else plugin.all_tracks())
    for suite, grid in track.suites.items():
        assert {"defenses", "attacks", "datasets", "seeds", "profile"} <= set(grid), suite
        if grid["profile"] == "full":  # a t interval over seeds: at least 3 seeds in every full row (issue 22)
            assert len(set(grid["seeds"])) >= 3, f"{suite}: a full suite runs seeds (0, 1, 2), not {grid['seeds']}"
        for kind, names in (("defense", grid["defenses"]), ("attack", grid["attacks"]), ("dataset", grid["datasets"])):
            for plugin in names:
                REGISTRY.entry(kind, plugin)  # raises for an unknown name


@functools.cache
def _trained(track):
    """The track's contract dataset and its contract defense's model, trained for a few seconds (smoke), so
    attacks have something to break."""
    data = _of_track("dataset", track).load()
    defense = _of_track("defense", track)
    torch.manual_seed(0)
    net = defense.build(data.spec)
    defense.fit(net, data, _train_ctx(data))
    for p in net.parameters():
        p.requires_grad_(False)
    return data, net.eval()


def _train_ctx(data, seed=0):
    return TrainContext(device=torch.device("cpu"), seed=seed, generator=torch.Generator().manual_seed(seed),
                        artifacts=None, model_of=lambda *a, **k: pytest.skip("needs the runner"),
                        epsilons={"linf": (0.1,), "l2": (1.0,)})


def _attack_ctx(seed=0):
    return AttackContext(bounds=(0.0, 1.0), generator=torch.Generator().manual_seed(seed), registry=REGISTRY,
                         profile="smoke")


@pytest.mark.parametrize("name", REGISTRY.names("attack"))
def test_attack_contract(name):
    _skip_own("attack", name)
    attack = smoke("attack", name)
    if isinstance(attack, Evaluator):
        return _evaluator_contract(attack)
    digits, model = _trained(attack.track)
    if isinstance(attack, Certifier):
        return _certifier_contract(attack, model, digits)
    x, y = digits.test_x[:64], digits.test_y[:64]
    eps = {"linf": 0.1, "l2": 1.0}[attack.norm]
    x_adv = attack.perturb(model, x, y, eps, _attack_ctx())
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert torch.isfinite(x_adv).all()
    assert (norms(x_adv - x, attack.norm) <= eps * (1 + TOLERANCE) + TOLERANCE).all()
    assert x_adv.min() >= -TOLERANCE and x_adv.max() <= 1 + TOLERANCE
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        robust = clean & (model(x_adv).argmax(1) == y)
    assert robust.sum() <= clean.sum()
    again = attack.perturb(model, x, y, eps, _attack_ctx())
    assert torch.equal(x_adv, again), "same seed must give the same adversarial examples"


def _certifier_contract(certifier, model, digits):
    """Certified examples are correctly classified and survive the companion attack; same seed, same mask."""
    x, y = digits.test_x[:64], digits.test_y[:64]
    eps = {"linf": 0.1, "l2": 1.0}[certifier.norm]
    try:
        verified = certifier.certify(model, x, y, eps, _attack_ctx())
    except NotCertifiable as exc:
        pytest.skip(f"not certifiable: {exc}")
    assert verified.dtype == torch.bool and verified.shape == (len(x),)
    companion = smoke("attack", certifier.companion)
    x_adv = companion.perturb(model, x, y, eps, _attack_ctx())  # attacks need gradients: not under no_grad
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        empirical = clean & (model(x_adv).argmax(1) == y)
    assert not (verified.cpu() & ~empirical).any(), "certified but broken: unsound"
    assert torch.equal(verified, certifier.certify(model, x, y, eps, _attack_ctx()))


def _of_track(kind, track):
    """The plugin of ``kind`` that ``track``'s contract names, in the smoke profile."""
    plugin = smoke(kind, REGISTRY.track(track).contract[kind])
    if kind == "dataset":
        try:
            plugin.check()
        except DataMissing as exc:
            pytest.skip(str(exc))
    return plugin


def _evaluator_contract(evaluator):
    """On an untrained model of its track's first defense and dataset: well-formed, finite metrics in [0, 1]
    for fractions, and the same numbers under the same seed."""
    data = _of_track("dataset", evaluator.track).load()
    torch.manual_seed(0)
    net = _of_track("defense", evaluator.track).build(data.spec).eval()
    runs = []
    for _ in range(2):
        ctx = EvalContext(device=torch.device("cpu"), batch_size=256, generator=torch.Generator().manual_seed(0),
                          profile="smoke", model_of=lambda *a, **k: pytest.skip("needs the runner"))
        runs.append(evaluator.evaluate(net, data, ctx))
    assert runs[0], "an evaluator must return metrics"
    for m in runs[0]:
        assert {"name", "value", "n", "definition"} <= set(m)
        assert m["value"] == m["value"] and abs(float(m["value"])) != float("inf")
    assert runs[0] == runs[1], "same seed must give the same metrics"


@pytest.mark.parametrize("name", REGISTRY.names("defense"))
def test_defense_contract(name):
    _skip_own("defense", name)
    defense = smoke("defense", name)
    try:
        defense.check()
    except UsageError as exc:  # e.g. `checkpoint` without a file: it evaluates the user's model, tested apart
        pytest.skip(f"needs the user's input: {exc}")
    digits = _of_track("dataset", defense.track).load()  # e.g. an unlearning scenario with its forget set
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        net = defense.build(digits.spec)
        defense.fit(net, digits, _train_ctx(digits))
        net.eval()
        with torch.no_grad():
            logits = net(digits.test_x[:32])
        assert logits.shape == (32, digits.spec.num_classes)
        assert torch.isfinite(logits).all()
        weights.append([p.detach().clone() for p in net.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights)), "same seed must give the same model"


@pytest.mark.parametrize("name", REGISTRY.names("dataset"))
def test_dataset_contract(name):
    _skip_own("dataset", name)
    dataset = smoke("dataset", name)
    try:
        dataset.check()
    except DataMissing as exc:
        pytest.skip(str(exc))
    data = dataset.load()
    lo, hi = dataset.bounds
    for x, y in ((data.train_x, data.train_y), (data.test_x, data.test_y)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == tuple(dataset.input_shape) and len(x) == len(y) > 0
        assert x.min() >= lo and x.max() <= hi
        assert 0 <= y.min() and y.max() < dataset.num_classes
    assert set(dataset.epsilons) and all(e > 0 for eps in dataset.epsilons.values() for e in eps)
