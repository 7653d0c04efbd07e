"""The unlearning track: scenarios, methods, evaluators and the per-scenario table, on the tiny UCI digits."""
import dataclasses

import pytest
import torch

from bench.context import EvalContext, TrainContext
from bench.hparams import resolve
from bench.registry import Registry
from bench.tracks.unlearning.scenarios import TRAIN_FIELDS, forget_remain
from bench.tracks.unlearning.table import tables

REGISTRY = Registry()


pytestmark = pytest.mark.usefixtures("one_thread")


def plugin(kind, name, profile="smoke", **overrides):
    cls = REGISTRY.load(kind, name)
    params = resolve({name: cls}, profile, [])[name]
    return cls(dataclasses.replace(params, **overrides))


def train(name, data, originals=None, seed=0, **overrides):
    """Fit a defense as the runner would: seeded init, ``model_of("original")`` served from ``originals``."""
    defense = plugin("defense", name, **overrides)
    torch.manual_seed(seed)
    net = defense.build(data.spec)
    model_of = originals if callable(originals) else lambda other, **o: originals[other]
    ctx = TrainContext(device=torch.device("cpu"), seed=seed, generator=torch.Generator().manual_seed(seed),
                       artifacts=None, model_of=model_of)
    defense.fit(net, data, ctx)
    return net.eval()


def frozen(net):
    for p in net.parameters():
        p.requires_grad_(False)
    return net


class Bank:
    """What the runner's ``model_of`` does, in memory: a defense's model on ``data`` (smoke profile plus the
    requested overrides), trained once on first request -- seeded like the runner -- then reused. ``trained``
    lists what was trained, in order."""

    def __init__(self, data, given=None, **defaults):
        self.data, self.given, self.models, self.trained, self.defaults = data, dict(given or {}), {}, [], defaults

    def __call__(self, name, **overrides):
        if name in self.given:  # a fixed model, whatever the overrides
            return self.given[name]
        overrides = {**self.defaults.get(name, {}), **overrides}
        key = (name, tuple(sorted((k, repr(v)) for k, v in overrides.items())))
        if key not in self.models:
            self.trained.append((name, overrides))
            self.models[key] = frozen(train(name, self.data, self, **overrides))
        return self.models[key]


def evaluate(name, net, data, model_of=None, **overrides):
    ctx = EvalContext(device=torch.device("cpu"), batch_size=512, generator=torch.Generator().manual_seed(0),
                      profile="smoke", model_of=model_of if model_of is not None else Bank(data))
    return plugin("attack", name, **overrides).evaluate(net, data, ctx)


def metric(metrics, name, **labels):
    """The metric's value; without a ``split`` label, the point estimate (not its interval's ends)."""
    [m] = [m for m in metrics if m["name"] == name and all(m.get(k) == v for k, v in labels.items())
           and ("split" in labels or "split" not in m)]
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
    kw = {"epochs": 2, "vae_epochs": 1}
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


@pytest.mark.parametrize("method", ["random-label"])
def test_forget_accuracy_drops(method, class_data, class_original):
    """Class removal on tiny data: the method lowers accuracy on the forgotten class, keeps the rest."""
    bank = Bank(class_data, {"original": class_original})
    before = evaluate("unlearning-acc", class_original, class_data, bank)
    overrides = {"epochs": 8}
    net = train(method, class_data, {"original": class_original}, **overrides)
    after = evaluate("unlearning-acc", net, class_data, bank)
    assert metric(before, "acc", split="forget") > 0.8
    assert metric(after, "acc", split="forget") < metric(before, "acc", split="forget") - 0.3
    assert metric(after, "acc", split="remain") > metric(before, "acc", split="remain") - 0.1


def test_laf_diagnosis_is_logged_and_the_balanced_variant_moves_the_representation(random_data):
    """Faithful LAF leaves the extractor's representation where it was (cosine distances to the original stay
    near 0; each forget sample weighs ~n_r / (n_f tau) in the alignment loss against 1 per remaining sample);
    laf-balanced, which weighs both sides alike, moves the forget set's representation many times further."""
    original = frozen(train("original", random_data, epochs=4))
    logs = {}
    for name in ("laf", "laf-balanced"):
        defense = plugin("defense", name, epochs=4, vae_epochs=2, unlearn_epochs=5)
        torch.manual_seed(0)
        net = defense.build(random_data.spec)
        ctx = TrainContext(device=torch.device("cpu"), seed=0, generator=torch.Generator().manual_seed(0),
                           artifacts=None, model_of=lambda other, **o: original)
        defense.fit(net, random_data, ctx)
        logs[name] = [h for h in ctx.history if h.get("stage") == "unlearn"]
    laf, balanced = logs["laf"][-1], logs["laf-balanced"][-1]
    assert laf["remain_weight_ra"] == 1.0 and laf["forget_weight_ra"] < 0.5, "1/tau-sized forget weights"
    assert laf["d_forget"] < 1e-3, "faithful LAF: the forget set's representation stays at the original's"
    assert balanced["d_forget"] > 10 * laf["d_forget"]


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


def test_population_mia_sees_membership_on_a_memorising_model(random_data):
    """On a model that memorised exactly its training set, each population attack tells the forget set from
    class-matched non-members (AUC, the share called member at the calibrated threshold, the gate); on one that
    never stored the forget set it cannot."""
    _, remain = forget_remain(random_data)
    original = Memoriser(random_data.train_x, random_data.train_y)
    retrained = Memoriser(random_data.train_x[remain], random_data.train_y[remain])
    bank = Bank(random_data, {"original": original})
    seen, unseen = evaluate("mia", original, random_data, bank), evaluate("mia", retrained, random_data, bank)
    for definition in ("confidence-logreg", "softmax-gbdt"):
        assert metric(seen, "mia_power_auc", definition_id=definition) > 0.95
        assert metric(seen, "mia_signal", definition_id=definition) == 1.0
        assert metric(seen, "mia_auc", definition_id=definition) > 0.95
        assert metric(seen, "mia_forget", definition_id=definition) > 0.9
        assert metric(unseen, "mia_forget", definition_id=definition) < 0.2
        lo, hi = (metric(unseen, "mia_auc", definition_id=definition, split=b) for b in ("lo", "hi"))
        assert lo <= 0.5 <= hi
    assert all(m["definition"] and m["definition_id"] and 0 <= m["value"] <= 1 for m in seen)
    assert seen == evaluate("mia", original, random_data, bank), "same seed, same numbers"


def test_accuracy_splits_and_diagnostics(class_data, class_original):
    bank = Bank(class_data, {"original": class_original})
    metrics = evaluate("unlearning-acc", class_original, class_data, bank)
    assert {m["split"] for m in metrics if "split" in m} == {"remain", "forget", "test-retained", "test-forgotten"}
    forget, _ = forget_remain(class_data)
    assert next(m["n"] for m in metrics if m.get("split") == "forget") == len(forget)
    # The original agrees with itself and has not moved; retrain (trained by the bank) is another model.
    assert metric(metrics, "agree_original") == 1.0 and metric(metrics, "weight_change") == 0.0
    assert metric(metrics, "agree_retrain") < 0.5, "class removal: retrain never predicts the forgotten class"
    retrain = bank("retrain", **{k: v for k, v in class_original.bench_unlearning_origin["params"].items()
                                 if k in TRAIN_FIELDS})
    theirs = evaluate("unlearning-acc", retrain, class_data, bank)
    assert metric(theirs, "agree_retrain") == 1.0 and 0 < metric(theirs, "weight_change") <= 1


# ---- table --------------------------------------------------------------------------------------------------

def _record(defense, attack, seed, metrics, train_s, params=None, dataset="toy-class"):
    return {"status": "ok", "track": "unlearning", "profile": "quick", "seed": seed, "key": f"{defense}{attack}{seed}",
            "created": "2026-01-01", "dataset": {"name": dataset, "params": {"classes": [0], "seed": 0}},
            "defense": {"name": defense, "params": params or {"epochs": 5}},
            "attack": {"name": attack, "params": {}}, "metrics": metrics, "timings": {"train_s": train_s}}


def _mia(definition, auc, gate_lo, gate_hi):
    """An attack's records as the evaluators write them (only what the table reads)."""
    d = {"definition_id": definition, "n": 10, "definition": "d"}
    signal = 0.0 if gate_lo <= 0.5 <= gate_hi else 1.0
    return [{"name": "mia_auc", "value": auc, **d}, {"name": "mia_auc", "split": "lo", "value": auc - 0.05, **d},
            {"name": "mia_auc", "split": "hi", "value": auc + 0.05, **d},
            {"name": "mia_power_auc", "value": (gate_lo + gate_hi) / 2, **d},
            {"name": "mia_power_auc", "split": "lo", "value": gate_lo, **d},
            {"name": "mia_power_auc", "split": "hi", "value": gate_hi, **d},
            {"name": "mia_signal", "value": signal, **d}]


def test_table_two_gaps_gate_and_notes():
    acc = lambda r, f, agree=None: [{"name": "acc", "split": "remain", "value": r, "n": 10},
                                    {"name": "acc", "split": "forget", "value": f, "n": 10}] + (
        [{"name": "agree_original", "value": agree, "n": 10}] if agree is not None else [])
    # "strong" has signal (gate interval above 0.5); "weak" has none (its interval contains 0.5).
    mia = lambda a, b: _mia("strong", a, 0.8, 0.95) + _mia("weak", b, 0.4, 0.6)
    records = []
    for seed in (0, 1):
        records += [_record("laf", "unlearning-acc", seed, acc(0.9, 0.5, 0.99), 2.0, {"epochs": 5, "tau": 5}),
                    _record("laf", "lira", seed, mia(0.8, 0.9), 2.0, {"epochs": 5, "tau": 5}),
                    _record("retrain", "unlearning-acc", seed, acc(0.9, 0.2 + 0.1 * seed, 0.8), 10.0),
                    _record("retrain", "lira", seed, mia(0.5, 0.1), 10.0),
                    _record("original", "unlearning-acc", seed, acc(1.0, 1.0, 1.0), 8.0),
                    _record("original", "lira", seed, mia(0.9, 0.5), 8.0)]
    out = tables(records)
    assert set(out) == {"toy-class.md", "toy-class.csv"}
    md = out["toy-class.md"]
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    head = lines[0].split(" | ")
    assert head[1:6] == ["acc remain", "acc forget", "AUC strong", "AUC weak", "Agree orig."]
    assert [line.split(" | ")[0] for line in lines[2:5]] == ["| original", "| retrain", "| laf"]
    laf = lines[4].split(" | ")
    # Acc gap: seed 0 (0, 30) -> 15, seed 1 (0, 20) -> 10; privacy gap: |80 - 50| = 30 on "strong" only (the
    # "weak" attack has no signal and is left out); time 2 / 10 = 20%.
    assert laf[-6] == "12.5 ± 3.5" and laf[-5] == "30.0 ± 0.0" and laf[-7] == "20 ± 0" and laf[-1] == "2 |"
    # acc forget minus retrain's per seed: 30, 20 -> paired t on 1 df: 25 +- 12.706 * 7.07 / sqrt(2), p = 0.13
    assert laf[-4] == "[50.0, 50.0] t" and laf[-3] == "+25.0 [-38.5, 88.5] p=0.13" and laf[-2] == "5 ep"
    assert laf[head.index("AUC weak")] == "n.s." and laf[head.index("AUC strong")] == "80.0 ± 0.0"
    assert "n.s. = no signal" in md and "`weak` (seed 0: 50.0 [40.0, 60.0], seed 1: 50.0 [40.0, 60.0])" in md
    assert "laf does not forget" in md and "1/tau" in md, "the unmoved-model note and LAF's diagnosis"
    assert "`strong` original 90.0 [90.0, 90.0] vs retrain 50.0 [50.0, 50.0]: told apart" in md
    assert "`weak` original" not in md, "an attack without signal compares nothing"
    assert "### Membership inference, per attack" in md
    csv_rows = out["toy-class.csv"].splitlines()
    assert csv_rows[0] == "profile,method,column,mean,std,seeds,ci95_lo,ci95_hi"
    assert any(r.startswith("quick,laf,acc_gap,12.5000,3.5355,2,") for r in csv_rows)


def test_table_states_the_noisy_memorisation_rate():
    records = [_record(name, "unlearning-acc", 0, [{"name": "acc", "split": "forget", "value": v, "n": 10}], 1.0,
                       dataset="toy-noisy") for name, v in (("original", 0.93), ("retrain", 0.02))]
    md = tables(records)["toy-noisy.md"]
    assert "fits 93.0% of the noisy forget set" in md and "retrain, which never saw them, 2.0%" in md
    records[0]["metrics"][0]["value"] = 0.05
    assert "cannot rank methods" in tables(records)["toy-noisy.md"]
