"""The text-robustness track on tiny data: a randomly initialised 1-layer BertForMaskedLM saved to a temporary
folder (so the "any local masked LM" path is what runs), the shared constraint checker, query counting and
budgets, MVP's scoring, determinism, and the contract of every registered text plugin."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.context import EvalContext, TrainContext
from bench.hparams import resolve
from bench.plugins import DataSpec, Splits
from bench.registry import Registry
from bench.tracks.text_robustness import constraints
from bench.tracks.text_robustness.attack import BudgetExhausted, Victim, WordAttack
from bench.tracks.text_robustness.data import Texts

REGISTRY = Registry()
SPEC = DataSpec("rotten-tomatoes", (), 2)
TEMPLATES = ("Sentiment of the statement is [MASK] .", "[SEP] [MASK]", "This is a [MASK] statement",
             "[SEP] The statement is [MASK]")
VERBALIZER = (("negative", "bad"), ("positive",))
POS = ["a good and fine film", "truly good acting here", "good fun for everyone", "a fine good story"]
NEG = ["a dull and boring film", "truly awful acting here", "boring mess for everyone", "a bad dull story"]


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    from fake_data import tiny_bert

    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def tiny_data():
    x, y = Texts(POS * 4 + NEG * 4), torch.tensor([1] * 16 + [0] * 16)
    return Splits(SPEC, x, y, Texts(POS + NEG), torch.tensor([1] * 4 + [0] * 4),
                  extras={"val_x": Texts(POS + NEG), "val_y": torch.tensor([1] * 4 + [0] * 4)})


def _ctx(seed=0):
    return TrainContext(device=torch.device("cpu"), seed=seed, generator=torch.Generator().manual_seed(seed),
                        artifacts=None, model_of=None)


def _eval_ctx(tmp_path=None):
    return EvalContext(device=torch.device("cpu"), batch_size=16, generator=torch.Generator().manual_seed(0),
                       profile="smoke", model_of=None, artifacts=tmp_path)


class KeywordModel(nn.Module):
    """Positive iff 'good' occurs: a victim with a known weak spot."""

    def forward(self, texts):
        score = torch.tensor([2.0 if "good" in t.split() else -2.0 for t in texts])
        return torch.stack([-score, score], dim=1)


# ---- data and constraints ---------------------------------------------------------------------------------
def test_texts_index_like_tensors():
    t = Texts(["a", "b", "c", "d"])
    assert t[1] == "b" and t[1:3] == Texts(["b", "c"]) and t[torch.tensor([3, 0])] == Texts(["d", "a"])
    assert t.to("cpu") is t and len(t[torch.tensor([], dtype=torch.long)]) == 0


def test_constraint_checker_rejects_over_budget_texts():
    original = " ".join(f"w{i}" for i in range(11))  # 11 words: ceil(1.1) = 2 may change
    two = original.replace("w1 ", "x ").replace("w5 ", "y ")
    three = two.replace("w7 ", "z ")
    assert constraints.check(original, two).ok and constraints.check(original, two).words_changed == 2
    assert not constraints.check(original, three).ok
    assert not constraints.check(original, original + " extra").ok  # word count changed
    assert constraints.check(original, three, max_word_change=0.3).ok


def test_rotten_tomatoes_split_has_no_leakage():
    dataset = REGISTRY.load("dataset", "rotten-tomatoes")
    try:
        dataset().check()
    except Exception as exc:
        pytest.skip(str(exc))
    data = dataset(dataset.Params(n_train=None, n_val=None, n_test=None)).load()
    train, val, test = set(data.train_x), set(data.extras["val_x"]), set(data.test_x)
    assert not (train & test) and not (val & test) and not (train & val)
    assert len(train) + len(val) + len(test) > 12_000 and set(data.test_y.tolist()) == {0, 1}
    assert not any("&amp;" in t for t in data.test_x)


# ---- queries and attacks --------------------------------------------------------------------------------
def test_victim_counts_distinct_queries_and_enforces_the_budget():
    victim = Victim(KeywordModel(), batch_size=2, max_queries=3)
    victim.probs(["a good one", "a bad one", "a good one"])
    assert victim.queries == 2  # the repeat is cached
    victim.probs(["a bad one"])
    assert victim.queries == 2
    with pytest.raises(BudgetExhausted):
        victim.probs(["x", "y"])
    assert victim.queries == 2  # never exceeds the budget


@pytest.mark.parametrize("name", ["pwws", "textfooler", "bert-attack", "textbugger"])
def test_attack_breaks_a_keyword_model_within_budgets(name, tmp_path):
    cls = REGISTRY.load("attack", name)
    attack = cls(resolve({name: cls}, "smoke", [])[name])
    x = Texts(["this is a really good film with nice actors and a strong script"])
    data = Splits(SPEC, x, torch.tensor([1]), x, torch.tensor([1]))
    metrics = {m["name"]: m for m in attack.evaluate(KeywordModel(), data, _eval_ctx(tmp_path))}
    assert metrics["acc_under_attack"]["value"] == 0.0 and metrics["attack_success_rate"]["value"] == 1.0
    assert metrics["words_perturbed"]["value"] <= 2 / 13  # ceil(10% of 13 words) = 2
    row = (tmp_path / "results.csv").read_text().splitlines()[1]
    assert "Successful" in row and "good" not in row.split(",")[-2].split()
    tight = cls(dataclasses.replace(attack.params, max_queries=3))
    metrics = {m["name"]: m for m in tight.evaluate(KeywordModel(), data, _eval_ctx())}
    assert metrics["query_budget_used"]["value"] * 3 <= 3 and metrics["acc_under_attack"]["value"] == 1.0


def test_framework_rejects_an_attack_that_breaks_the_constraints():
    class Cheater(WordAttack):
        def search(self, victim, words, label, max_changes, ctx):
            return ["bad"] * len(words)  # every word changed: far over 10%

    x = Texts(["a good film"] * 2 + ["one two three four five six seven eight nine ten good eleven"])
    data = Splits(SPEC, x, torch.tensor([1, 1, 1]), x, torch.tensor([1, 1, 1]))
    metrics = {m["name"]: m for m in Cheater().evaluate(KeywordModel(), data, _eval_ctx())}
    assert metrics["rejected_rate"]["value"] == 1.0 and metrics["acc_under_attack"]["value"] == 1.0


# ---- models ---------------------------------------------------------------------------------------------
def test_mvp_has_no_new_head_and_scores_max_over_words_mean_over_templates(tiny_backbone):
    from bench.tracks.text_robustness.models import MLPClassifier, PromptClassifier

    torch.manual_seed(0)
    mvp = PromptClassifier(tiny_backbone, TEMPLATES, VERBALIZER, max_length=24).eval()
    assert {n for n, _ in mvp.named_parameters()} == {f"mlm.{n}" for n, _ in mvp.mlm.named_parameters()}
    mlp = MLPClassifier(tiny_backbone, 2)
    assert any(n.startswith("head.") for n, _ in mlp.named_parameters())
    texts = Texts(["a good film", "the worst movie of the year , by far"])
    tok = mvp.tokenizer
    label_ids = [[tok.convert_tokens_to_ids(w) for w in ws] for ws in VERBALIZER]
    with torch.no_grad():
        expected = torch.zeros(2, 2)
        for j in range(len(TEMPLATES)):  # reference: the full MLM logits, one template at a time
            batch = mvp.prepare(texts, torch.full((2,), j))
            vocab = mvp.mlm(input_ids=batch.ids, attention_mask=batch.mask).logits[torch.arange(2), batch.mask_pos]
            expected += torch.stack([vocab[:, ids].max(dim=1).values for ids in label_ids], dim=1) / len(TEMPLATES)
        assert torch.allclose(mvp(texts), expected, atol=1e-5)
        batch = mvp.prepare(texts)
        assert batch.group == 4 and (batch.ids[torch.arange(8), batch.mask_pos] == tok.mask_token_id).all()


def test_template_is_never_truncated(tiny_backbone):
    from bench.tracks.text_robustness.models import PromptClassifier

    mvp = PromptClassifier(tiny_backbone, TEMPLATES, VERBALIZER, max_length=16)
    batch = mvp.prepare(Texts(["word " * 40]))
    assert batch.ids.shape[1] <= 16 and (batch.ids[torch.arange(4), batch.mask_pos] == mvp.tokenizer.mask_token_id).all()
    assert (batch.ids[:, -1] == mvp.tokenizer.sep_token_id).all()  # each filled to max_length: text cut


@pytest.mark.parametrize("name", ["mlp-ft", "mvp", pytest.param("mvp-adv", marks=pytest.mark.slow),
                                  pytest.param("mlp-ft-adv", marks=pytest.mark.slow)])
def test_text_defense_contract_learns_and_is_deterministic(name, tiny_backbone, tiny_data, tmp_path):
    from bench.cache import ModelCache

    cls = REGISTRY.load("defense", name)
    params = dataclasses.replace(resolve({name: cls}, "smoke", [])[name], backbone=tiny_backbone, epochs=12,
                                 lr=1e-2, batch_size=8, max_length=24)
    if params.adv_eps:  # the tiny model's embeddings have norm ~0.1 per token: a proportionate radius
        params = dataclasses.replace(params, adv_eps=0.05)
    defense, weights, logits = cls(params), [], []
    for _ in range(2):
        torch.manual_seed(0)
        model = defense.build(SPEC)
        defense.fit(model, tiny_data, _ctx())
        with torch.no_grad():
            logits.append(model(tiny_data.test_x))
        weights.append(model.state_dict())
    assert logits[0].shape == (8, 2) and torch.isfinite(logits[0]).all()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]), "same seed, same model"
    if not params.adv_eps:  # adversarial training of the tiny model needs more epochs than a test affords
        assert (logits[0].argmax(1) == tiny_data.test_y).float().mean() >= 0.75, "it should fit separable data"
    cache = ModelCache(tmp_path)  # tied embeddings/decoder survive the safetensors round trip
    torch.manual_seed(0)
    cache.save("k", model, {})
    fresh = defense.build(SPEC)
    cache.load("k", fresh)
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(tiny_data.test_x), logits[1], atol=1e-6)


def test_embedding_pgd_stays_in_the_ball_and_raises_the_loss(tiny_backbone, tiny_data):
    from bench.tracks.text_robustness.models import MLPClassifier
    from bench.tracks.text_robustness.training import TextTrainParams, embedding_pgd

    torch.manual_seed(0)
    model = MLPClassifier(tiny_backbone, 2, max_length=24).eval()
    batch = model.prepare(tiny_data.test_x)
    emb, y = model.embed(batch).detach(), tiny_data.test_y
    delta = embedding_pgd(model, batch, emb, y, TextTrainParams(adv_eps=0.5, adv_ball="sequence"))
    assert (delta.flatten(1).norm(dim=1) <= 0.5 + 1e-5).all() and (delta[batch.mask == 0] == 0).all()
    with torch.no_grad():
        assert F.cross_entropy(model.logits_from(batch, emb + delta), y) > F.cross_entropy(model.logits_from(batch, emb), y)


def test_text_table_flags_a_near_constant_classifier():
    from bench.tracks.text_robustness.attack import summary
    from bench.tracks.text_robustness.table import tables

    def record(defense, outputs):
        rows = [{"result_type": "Failed", "original_output": o, "num_queries": 3, "words_changed": 0,
                 "num_words": 5} for o in outputs]
        return {"defense": {"name": defense}, "attack": {"name": "pwws"}, "dataset": {"name": "toy"},
                "profile": "quick", "seed": 0, "key": defense, "status": "ok", "git_commit": "x", "hardware": {"device": "cpu"},
                "created": "2026-01-01T00:00:00+00:00", "metrics": summary(rows, "pwws()", 100)}

    constant, balanced = record("mvp-adv", [1] * 19 + [0]), record("mvp", [0, 1] * 10)
    assert [m["value"] for m in constant["metrics"] if m["name"] == "majority_prediction_rate"] == [0.95]
    table = tables([constant, balanced])["toy.md"]
    assert "| mvp-adv † |" in table and "| mvp |" in table and "near-constant" in table
    assert "near-constant" not in tables([balanced])["toy.md"]


def test_sentence_encoder_cache_refills_when_full(monkeypatch):
    # A full cache is emptied; texts of the same call that were cached before must be embedded again.
    from bench.tracks.text_robustness import sentence_encoder as se

    monkeypatch.setattr(se, "CACHE_LIMIT", 3)
    se._caches.clear()
    first = se.embed(["a good film", "a bad film"])
    both = se.embed(["a good film", "a dull film", "a fine film"])
    assert both.shape == (3, 384)
    assert torch.allclose(both[0], first[0], atol=1e-6)


def test_text_table_pairs_every_attack_against_mlp_ft_only_with_two_seeds():
    from bench.tracks.text_robustness.attack import summary
    from bench.tracks.text_robustness.table import tables

    def record(defense, attack, seed, broken):
        rows = [{"result_type": "Successful" if i < broken else "Failed", "original_output": i % 2,
                 "ground_truth_output": i % 2, "perturbed_output": 1 - i % 2, "num_queries": 3,
                 "words_changed": 1, "num_words": 5, "index": i, "original_text": "a b c d e",
                 "perturbed_text": "a b c d f"}
                for i in range(10)]
        return {"defense": {"name": defense}, "attack": {"name": attack}, "dataset": {"name": "toy"},
                "profile": "full", "seed": seed, "key": f"{defense}{attack}{seed}", "status": "ok",
                "git_commit": "x", "hardware": {"device": "cpu"}, "created": "2026-01-01T00:00:00+00:00",
                "metrics": summary(rows, f"{attack}()", 100)}

    records = [record("mlp-ft", a, s, 6) for a in ("pwws", "textfooler") for s in (0, 1, 2)]
    records += [record("mvp", "pwws", s, 6 - s) for s in (0, 1, 2)] + [record("mvp", "textfooler", s, 6) for s in (0, 1, 2)]
    table = tables(records)["toy.md"]
    block = table.split("Paired difference from mlp-ft")[1].split("\n\n")[1]
    row = next(line for line in block.splitlines() if line.startswith("| mvp |"))
    assert row.split("|")[3].strip().startswith("+10.0")  # pwws: 0, +10, +20 points over seeds 0-2
    assert row.split("|")[4].strip().startswith("+0.0")  # textfooler: identical
    assert "Paired difference" not in tables([r for r in records if r["seed"] == 0])["toy.md"]


def test_text_table_heads_each_section_with_the_masked_lm_gate():
    from bench.tracks.text_robustness.attack import summary
    from bench.tracks.text_robustness.table import tables

    rows = [{"result_type": "Failed", "original_output": o, "num_queries": 3, "words_changed": 0,
             "num_words": 5} for o in (0, 1)]
    gate = {"backbone": "minilm", "file": "a.safetensors", "sha256": "ab" * 32, "heldout_mlm_loss": 3.06,
            "zero_shot_mvp_acc_rt_val": 0.693, "zero_shot_class_share": [0.6, 0.4], "passes": True,
            "goals": {"heldout_mlm_loss_max": 3.5, "zero_shot_acc_min": 0.65, "class_share_min": 0.2}}
    record = {"defense": {"name": "mvp", "identity": {"masked_lm": gate}}, "attack": {"name": "pwws"},
              "dataset": {"name": "toy"}, "profile": "full", "seed": 0, "key": "k", "status": "ok",
              "git_commit": "x", "hardware": {"device": "cpu"}, "created": "2026-01-01T00:00:00+00:00",
              "metrics": summary(rows, "pwws()", 100)}
    table = tables([record])["toy.md"]
    assert "held-out MLM loss 3.06 nats (goal <= 3.5)" in table and "69.3 % (goal >= 65 %)" in table
    assert "60.0 / 40.0 %" in table and ": passes." in table
    bare = {**record, "defense": {"name": "mvp"}}
    assert "Masked-LM gate: not recorded" in tables([bare])["toy.md"]


def test_cuda_precision_holds_inside_the_attack_only_and_is_checked():
    from bench.errors import UsageError
    from bench.tracks.text_robustness import precision

    seen = []

    class Spy(KeywordModel):
        def forward(self, texts):
            seen.append(precision.current())
            return super().forward(texts)

    cls = REGISTRY.load("attack", "pwws")
    x = Texts(["this is a really good film with nice actors and a strong script"])
    data = Splits(SPEC, x, torch.tensor([1]), x, torch.tensor([1]))
    cls(resolve({"pwws": cls}, "smoke", ['cuda_precision="tf32"'])["pwws"]).evaluate(Spy(), data, _eval_ctx())
    assert seen and set(seen) == {"tf32"}  # the victim and the framework's verdict alike
    assert precision.current() == "float32"  # the process's setting is back
    with pytest.raises(UsageError):
        resolve({"pwws": cls}, "smoke", ['cuda_precision="int8"'])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_float16_queries_stay_within_tolerance_of_float32(tiny_backbone):
    from bench.tracks.text_robustness import precision
    from bench.tracks.text_robustness.models import MLPClassifier

    torch.manual_seed(0)
    model = MLPClassifier(tiny_backbone, 2).cuda().eval()
    texts = Texts([f"{a} {b} film" for a in POS + NEG for b in ("good", "dull", "fine", "boring")])
    with torch.no_grad():
        reference = model(texts).float().softmax(1)
        for name in ("tf32", "float16", "bfloat16"):
            with precision.cuda_queries(name):
                got = model(texts).float().softmax(1)
            assert (got - reference).abs().max() < 2e-2, name
