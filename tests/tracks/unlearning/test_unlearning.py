"""The unlearning track: scenarios, methods, evaluators and the per-scenario table, on the tiny UCI digits."""
import dataclasses

import pytest
import torch

from bench.context import EvalContext, TrainContext
from bench.hparams import resolve
from bench.registry import Registry
from bench.tracks.unlearning.scenarios import forget_remain
from bench.tracks.unlearning.table import tables

REGISTRY = Registry()


def plugin(kind, name, profile="smoke", **overrides):
    cls = REGISTRY.load(kind, name)
    params = resolve({name: cls}, profile, [])[name]
    return cls(dataclasses.replace(params, **overrides))


def train(name, data, originals=None, seed=0, **overrides):
    """Fit a defense as the runner would: seeded init, ``model_of("original")`` served from ``originals``."""
    defense = plugin("defense", name, **overrides)
    torch.manual_seed(seed)
    net = defense.build(data.spec)
    ctx = TrainContext(device=torch.device("cpu"), seed=seed, generator=torch.Generator().manual_seed(seed),
                       artifacts=None, model_of=lambda other, **o: originals[other])
    defense.fit(net, data, ctx)
    return net.eval()


def frozen(net):
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def evaluate(name, net, data):
    ctx = EvalContext(device=torch.device("cpu"), batch_size=512, generator=torch.Generator().manual_seed(0),
                      profile="smoke", model_of=None)
    return plugin("attack", name).evaluate(net, data, ctx)


def metric(metrics, name, **labels):
    [m] = [m for m in metrics if m["name"] == name and all(m.get(k) == v for k, v in labels.items())]
    return m["value"]


@pytest.fixture(scope="module")
def random_data():
    return plugin("dataset", "uci-digits-random").load()


@pytest.fixture(scope="module")
def class_data():
    return plugin("dataset", "uci-digits-class").load()


@pytest.fixture(scope="module")
def class_original(class_data):
    return frozen(train("original", class_data, epochs=8))


# ---- scenarios --------------------------------------------------------------------------------------------

def test_scenarios_are_deterministic_and_well_formed():
    for name in ("uci-digits-random", "uci-digits-uniform", "uci-digits-class", "uci-digits-noisy"):
        a, b = plugin("dataset", name).load(), plugin("dataset", name).load()
        assert torch.equal(a.extras["forget_idx"], b.extras["forget_idx"]) and torch.equal(a.train_y, b.train_y)
        forget, remain = forget_remain(a)
        assert sorted(forget.tolist() + remain.tolist()) == list(range(len(a.train_y)))
        assert a.extras["scenario"]["n_forget"] == len(forget) > 0
    default, other = (plugin("dataset", "uci-digits-random", seed=s).load() for s in (0, 1))
    assert not torch.equal(default.extras["forget_idx"], other.extras["forget_idx"]), "the seed draws the set"


def test_scenario_contents(random_data, class_data):
    y = random_data.train_y
    forget, _ = forget_remain(random_data)
    assert set(y[forget].tolist()) <= {5, 6, 7, 8, 9}
    pool = int(torch.isin(y, torch.tensor([5, 6, 7, 8, 9])).sum())
    assert len(forget) == round(0.4 * pool)
    forget, remain = forget_remain(class_data)
    assert (class_data.train_y[forget] == 0).all() and (class_data.train_y[remain] != 0).all()
    noisy = plugin("dataset", "uci-digits-noisy").load()
    forget, remain = forget_remain(noisy)
    clean = noisy.extras["clean_train_y"]
    assert (noisy.train_y[forget] != clean[forget]).all() and torch.equal(noisy.train_y[remain], clean[remain])
    assert abs(len(forget) / len(clean) - 0.2) < 0.01


def test_bad_scenario_is_one_clear_error():
    from bench.errors import UsageError

    with pytest.raises(UsageError, match="fraction"):
        plugin("dataset", "uci-digits-random", fraction=1.5).check()
    with pytest.raises(UsageError, match="classes"):
        plugin("dataset", "uci-digits-class", classes=(12,)).check()


# ---- methods ------------------------------------------------------------------------------------------------

def test_retrain_never_sees_the_forget_set(class_data):
    """Retrain's model depends on the remaining data only: changing every forget image changes nothing."""
    forget, _ = forget_remain(class_data)
    scrambled = dataclasses.replace(class_data, train_x=class_data.train_x.clone())
    scrambled.train_x[forget] = torch.rand(scrambled.train_x[forget].shape, generator=torch.Generator().manual_seed(1))
    a, b = train("retrain", class_data, epochs=2), train("retrain", scrambled, epochs=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_laf_uses_no_labels(random_data):
    """LAF with the training labels shuffled gives the very same model (same original, same seed)."""
    original = frozen(train("original", random_data, epochs=2))
    shuffled = dataclasses.replace(random_data, train_y=random_data.train_y[
        torch.randperm(len(random_data.train_y), generator=torch.Generator().manual_seed(3))])
    assert not torch.equal(shuffled.train_y, random_data.train_y)
    kw = dict(epochs=2, vae_epochs=1)
    a = train("laf", random_data, {"original": original}, **kw)
    b = train("laf", shuffled, {"original": original}, **kw)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), original.parameters())), "LAF changed nothing"


def test_methods_start_from_original_and_do_not_modify_it(class_data, class_original):
    before = [p.clone() for p in class_original.parameters()]
    finetuned = train("finetune", class_data, {"original": class_original}, epochs=8, unlearn_epochs=0)
    assert all(torch.equal(p, q) for p, q in zip(finetuned.parameters(), class_original.parameters()))
    train("neggrad", class_data, {"original": class_original}, epochs=8)
    assert all(torch.equal(p, q) for p, q in zip(before, class_original.parameters()))


@pytest.mark.parametrize("method", ["random-label", "laf-r"])
def test_forget_accuracy_drops(method, class_data, class_original):
    """Class removal on tiny data: the method lowers accuracy on the forgotten class, keeps the rest."""
    before = evaluate("unlearning-acc", class_original, class_data)
    overrides = {"epochs": 8, "unlearn_epochs": 2} if method == "laf-r" else {"epochs": 8}
    net = train(method, class_data, {"original": class_original}, **overrides)
    after = evaluate("unlearning-acc", net, class_data)
    assert metric(before, "acc", split="forget") > 0.8
    assert metric(after, "acc", split="forget") < metric(before, "acc", split="forget") - 0.3
    assert metric(after, "acc", split="remain") > metric(before, "acc", split="remain") - 0.1


# ---- evaluators ---------------------------------------------------------------------------------------------

class Memoriser(torch.nn.Module):
    """A lookup table: confident on its training label for the images it stores, unsure on anything else."""

    def __init__(self, x, y, num_classes=10):
        super().__init__()
        self.keys, self.labels, self.k = x.flatten(1), y, num_classes
        self.unsure = torch.nn.Linear(x[0].numel(), num_classes)
        torch.nn.init.normal_(self.unsure.weight, std=0.05, generator=torch.Generator().manual_seed(0))

    def forward(self, x):
        distance, nearest = torch.cdist(x.flatten(1), self.keys).min(1)
        known = torch.nn.functional.one_hot(self.labels[nearest], self.k).float() * 12
        return torch.where((distance < 1e-6)[:, None], known, self.unsure(x.flatten(1)))


def test_mia_sees_membership_on_a_memorising_model(random_data):
    """On a model that memorised exactly its training set, each definition tells members from test data, calls
    the forget set members when it was trained on (original) and non-members when it was not (retrain)."""
    forget, remain = forget_remain(random_data)
    original = Memoriser(random_data.train_x, random_data.train_y)
    retrained = Memoriser(random_data.train_x[remain], random_data.train_y[remain])
    seen, unseen = evaluate("mia", original, random_data), evaluate("mia", retrained, random_data)
    for definition in ("confidence-logreg", "softmax-gbdt"):
        assert metric(seen, "mia_attack_acc", definition_id=definition) > 0.95
        assert metric(seen, "mia_forget", definition_id=definition) > 0.95
        assert metric(unseen, "mia_forget", definition_id=definition) < 0.05
    assert all(m["definition"] and m["definition_id"] for m in seen)
    assert seen == evaluate("mia", original, random_data), "same seed, same numbers"


def test_accuracy_splits(class_data, class_original):
    metrics = evaluate("unlearning-acc", class_original, class_data)
    assert {m["split"] for m in metrics} == {"remain", "forget", "test-retained", "test-forgotten"}
    forget, _ = forget_remain(class_data)
    assert next(m["n"] for m in metrics if m["split"] == "forget") == len(forget)


# ---- table --------------------------------------------------------------------------------------------------

def _record(defense, attack, seed, metrics, train_s, params=None):
    return {"status": "ok", "track": "unlearning", "profile": "quick", "seed": seed, "key": f"{defense}{attack}{seed}",
            "created": "2026-01-01", "dataset": {"name": "toy-class", "params": {"classes": [0], "seed": 0}},
            "defense": {"name": defense, "params": params or {"epochs": 5}},
            "attack": {"name": attack, "params": {}}, "metrics": metrics, "timings": {"train_s": train_s}}


def test_table_rows_columns_and_gap():
    acc = lambda r, f: [{"name": "acc", "split": "remain", "value": r, "n": 10},  # noqa: E731
                        {"name": "acc", "split": "forget", "value": f, "n": 10}]
    mia = lambda v: [{"name": "mia_forget", "definition_id": "d1", "value": v, "n": 10}]  # noqa: E731
    records = []
    for seed in (0, 1):
        records += [_record("laf", "unlearning-acc", seed, acc(0.9, 0.5), 2.0, {"epochs": 5, "tau": 5}),
                    _record("laf", "mia", seed, mia(0.5), 2.0, {"epochs": 5, "tau": 5}),
                    _record("retrain", "unlearning-acc", seed, acc(0.9, 0.2 + 0.1 * seed), 10.0),
                    _record("retrain", "mia", seed, mia(0.2), 10.0),
                    _record("original", "unlearning-acc", seed, acc(1.0, 1.0), 8.0),
                    _record("original", "mia", seed, mia(0.9), 8.0)]
    out = tables(records)
    assert set(out) == {"toy-class.md", "toy-class.csv"}
    lines = [line for line in out["toy-class.md"].splitlines() if line.startswith("| ")]
    assert lines[0].split(" | ")[1:4] == ["acc remain", "acc forget", "MIA d1"]
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| original", "| retrain", "| laf"]
    # laf vs retrain: seed 0 gaps (0, 30, 30) -> 20; seed 1 (0, 20, 30) -> 16.67; time 2 / 10 = 20%.
    laf = lines[4].split(" | ")
    assert laf[-2] == "18.3 ± 2.4" and laf[-3] == "20 ± 0" and laf[-1] == "2 |"
    assert lines[3].split(" | ")[-2] == "0.0 ± 0.0"
    csv_rows = out["toy-class.csv"].splitlines()
    assert "quick,laf,gap,18.3333,2.3570,2" in csv_rows
