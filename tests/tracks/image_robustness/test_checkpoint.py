"""The checkpoint defense: a model the suite did not train (safetensors or ONNX), evaluated in the same grid.

The key property: a suite-trained model exported from the cache and evaluated as a checkpoint gives exactly the
trained row's numbers, in both formats. Then: normalisation inside the wrapper equals a model that bakes it in
(and survives the runner's cache), a user factory, and every bad input refused in plan() with one line, exit 2
and nothing written -- pickles never opened."""
import hashlib
import json
import pickle
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.cache import ModelCache
from bench.context import TrainContext
from bench.errors import UsageError
from bench.plugins import DataSpec
from bench.tracks.image_robustness.models import build_model
from bench_defenses.image_robustness.checkpoint import Checkpoint, CheckpointParams

SMOKE = ["--attack", "fgsm", "--dataset", "uci-digits", "--profile", "smoke"]
DIGITS = DataSpec("uci-digits", (1, 8, 8), 10)


def _run(*argv) -> int:
    from bench.cli import main

    return main([str(a) for a in argv])


def _records(results: Path, defense: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in
            sorted((results / "records" / "image-robustness" / "uci-digits" / "smoke" / defense).glob("*.json"))]


def _numbers(record: dict) -> dict:
    """(metric, eps) -> value: clean accuracy and fgsm at every eps."""
    assert record["status"] == "ok", record.get("error")
    return {(m["name"], m.get("eps")): m["value"] for m in record["metrics"]}


def save_onnx(model: nn.Module, path: Path, input_shape=(1, 8, 8), dynamic=True) -> Path:
    """torch.onnx.export with the TorchScript exporter (dynamo=False: the default dynamo exporter of torch 2.9+
    needs onnxscript, which the suite does not install)."""
    kwargs = {"dynamic_axes": {"x": {0: "batch"}, "logits": {0: "batch"}}} if dynamic else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(1, *input_shape),), str(path), dynamo=False,
                          input_names=["x"], output_names=["logits"], **kwargs)
    return path


def save_safetensors(model: nn.Module, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The suite's ``standard`` on uci-digits (smoke), its record, and its cached model exported to both formats
    (loaded through bench's own checksummed safetensors loader, as the README shows)."""
    root = tmp_path_factory.mktemp("trained")
    results = root / "results"
    assert _run("--results", results, "run", "--defense", "standard", *SMOKE) == 0
    [record] = _records(results, "standard")
    model = build_model(record["defense"]["params"]["arch"], (1, 8, 8), 10).eval()
    ModelCache(results / "cache").load(record["defense"]["model_key"], model)
    return {"record": record, "numbers": _numbers(record), "model": model,
            "safetensors": save_safetensors(model, root / "standard.safetensors"),
            "onnx": save_onnx(model, root / "standard.onnx")}


def _checkpoint(tmp_path, *sets, name="results"):
    """Run checkpoint with ``--set checkpoint.<k>=<v>`` for each (k, v); its one record."""
    results = tmp_path / name
    argv = [a for k, v in sets for a in ("--set", f"checkpoint.{k}={json.dumps(v)}")]
    assert _run("--results", results, "run", "--defense", "checkpoint", *SMOKE, *argv) == 0
    [record] = _records(results, "checkpoint")
    return record


# ---- the key property: a suite-trained model, exported, gives the trained row's numbers --------------------------
def test_exported_suite_model_gives_the_trained_rows_numbers_in_both_formats(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    st = _checkpoint(tmp_path, ("path", str(trained["safetensors"])), ("arch", "cnn-small"),
                     ("label", "my-standard"), name="st")
    ox = _checkpoint(tmp_path, ("path", str(trained["onnx"])), ("label", "my-standard-onnx"), name="onnx")
    assert _numbers(st) == trained["numbers"]
    assert _numbers(ox) == trained["numbers"]
    assert len(trained["numbers"]) == 3  # clean and fgsm at the two headline eps
    for record, path in ((st, trained["safetensors"]), (ox, trained["onnx"])):
        assert record["defense"]["identity"] == {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        assert record["timings"]["train_s"] < 5
    # The row is named by the label, beside the trained row, in the same table.
    assert _run("--results", tmp_path / "st", "leaderboard") == 0
    table = (tmp_path / "st" / "image-robustness" / "uci-digits.md").read_text()
    clean = f"{100 * trained['numbers'][('clean_acc', None)]:.1f}"
    assert any(line.startswith(f"| my-standard | {clean} |") for line in table.splitlines()), table


def test_the_model_key_is_the_files_content(trained, tmp_path):
    """Same bytes at another path: the same identity; other bytes at the same path: another model key."""
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(trained["safetensors"].read_bytes())
    a = Checkpoint(CheckpointParams(path=str(trained["safetensors"]), arch="cnn-small"))
    b = Checkpoint(CheckpointParams(path=str(copy), arch="cnn-small"))
    assert a.identity() == b.identity()
    first = b.identity()
    save_safetensors(build_model("cnn-small", (1, 8, 8), 10), copy)
    assert Checkpoint(CheckpointParams(path=str(copy), arch="cnn-small")).identity() != first


# ---- normalisation inside the wrapper ---------------------------------------------------------------------------
class Baked(nn.Module):
    def __init__(self, net, mean, std):
        super().__init__()
        self.net, self.mean, self.std = net, mean, std

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def test_normalisation_equals_a_model_that_bakes_it_in_and_survives_the_cache(trained, tmp_path):
    sets = [("path", str(trained["safetensors"])), ("arch", "cnn-small"), ("mean", [0.25]), ("std", [0.5])]
    inside = _checkpoint(tmp_path, *sets, name="inside")
    baked = save_onnx(Baked(trained["model"], 0.25, 0.5), tmp_path / "baked.onnx")
    outside = _checkpoint(tmp_path, ("path", str(baked)), name="baked")
    assert _numbers(inside) == _numbers(outside)
    assert _numbers(inside) != trained["numbers"]  # the normalisation was applied
    # Second run from the runner's cache (the state dict holds mean and std as buffers): same numbers.
    for record in (tmp_path / "inside" / "records").rglob("*.json"):
        record.unlink()
    again = _checkpoint(tmp_path, *sets, name="inside")
    assert again["timings"]["train_cached"] is True
    assert _numbers(again) == _numbers(inside)


def test_normalisation_round_trips_through_the_state_dict(trained):
    p = CheckpointParams(path=str(trained["safetensors"]), arch="cnn-small", mean=(0.25,), std=(0.5,))
    model = Checkpoint(p).build(DIGITS)
    state = model.state_dict()
    assert {"mean", "std"} <= set(state)
    fresh = Checkpoint(p).build(DIGITS)
    fresh.load_state_dict(state, strict=True)
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(fresh(x), trained["model"]((x - 0.25) / 0.5))


# ---- a user factory -------------------------------------------------------------------------------------------
FACTORY = '''
from bench.tracks.image_robustness.models import build_model


def build(input_shape, num_classes):
    return build_model("cnn-small", input_shape, num_classes)


def loaded(input_shape, num_classes):
    from safetensors.torch import load_file

    model = build_model("cnn-small", input_shape, num_classes)
    model.load_state_dict(load_file(WEIGHTS))
    return model


def three_classes(input_shape, num_classes):
    return build_model("cnn-small", input_shape, 3)


def not_a_model(input_shape, num_classes):
    return "model"
'''


@pytest.fixture
def factory_module(tmp_path, monkeypatch, trained, request):
    name = f"user_models_{request.node.name.replace('[', '_').replace(']', '').replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(FACTORY + f"\nWEIGHTS = {str(trained['safetensors'])!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_factory_with_weights_and_as_is(trained, tmp_path, factory_module):
    with_path = _checkpoint(tmp_path, ("path", str(trained["safetensors"])), ("factory", f"{factory_module}:build"),
                            name="with-path")
    as_is = _checkpoint(tmp_path, ("factory", f"{factory_module}:loaded"), name="as-is")
    assert _numbers(with_path) == trained["numbers"]
    assert _numbers(as_is) == trained["numbers"]
    assert set(with_path["defense"]["identity"]) == {"sha256", "factory_code"}
    assert set(as_is["defense"]["identity"]) == {"factory_code"}


# ---- the plugin API directly ------------------------------------------------------------------------------------
def test_build_is_deterministic_check_data_leaves_the_rng_and_fit_is_silent(trained):
    defense = Checkpoint(CheckpointParams(path=str(trained["onnx"])))
    defense.check()
    state = torch.random.get_rng_state()
    defense.check_data(DIGITS)
    assert torch.equal(state, torch.random.get_rng_state())
    x = torch.rand(8, 1, 8, 8)
    logged = []
    ctx = TrainContext(device=torch.device("cpu"), seed=0, generator=torch.Generator(), artifacts=None,
                       model_of=lambda *a, **k: None)
    ctx.log = lambda **k: logged.append(k)
    outs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = defense.build(DIGITS)
        defense.fit(model, None, ctx)
        with torch.no_grad():
            outs.append(model(x))
    assert torch.equal(outs[0], outs[1]) and outs[0].shape == (8, 10)
    assert torch.allclose(outs[0], trained["model"](x), atol=1e-5)
    assert not logged and not ctx.history


def test_a_fixed_batch_onnx_export_still_runs_when_its_graph_allows_any_batch(trained, tmp_path):
    path = save_onnx(trained["model"], tmp_path / "fixed.onnx", dynamic=False)
    model = Checkpoint(CheckpointParams(path=str(path))).build(DIGITS)
    x = torch.rand(5, 1, 8, 8)
    assert torch.allclose(model(x), trained["model"](x), atol=1e-5)


# ---- bad input: one line, exit 2, nothing written, nothing unpickled ------------------------------------------
class _Unpickled:
    """Unpickling this creates MARKER: a stand-in for code a malicious checkpoint would run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _bad_cases(tmp_path: Path, trained, factory: str) -> dict:
    marker = tmp_path / "MARKER"
    pt = tmp_path / "model.pt"
    pt.write_bytes(pickle.dumps(_Unpickled(marker)))
    zipped = tmp_path / "zipped.safetensors"
    torch.save(trained["model"].state_dict(), zipped)  # a torch.save archive under a safetensors name
    three = build_model("cnn-small", (1, 8, 8), 3)
    big = build_model("cnn-small", (1, 28, 28), 10)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 not an onnx graph \xff" * 8)
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"\x89HDF")
    st = str(trained["safetensors"])
    return {
        "missing file": ([("path", str(tmp_path / "nope.safetensors")), ("arch", "cnn-small")], "no such file"),
        "pickled .pt": ([("path", str(pt))], "never opened"),
        "torch.save zip named safetensors": ([("path", str(zipped)), ("arch", "cnn-small")], "not opened"),
        "unsupported suffix": ([("path", str(h5))], "unsupported format"),
        "nothing given": ([], "give the model file"),
        "no arch": ([("path", st)], "needs its architecture"),
        "unknown arch": ([("path", st), ("arch", "cnn-huge")], "unknown architecture"),
        "arch and factory": ([("path", st), ("arch", "cnn-small"), ("factory", f"{factory}:build")], "not both"),
        "arch with onnx": ([("path", str(trained["onnx"])), ("arch", "cnn-small")], "its own architecture"),
        "class count (safetensors)": ([("path", str(save_safetensors(three, tmp_path / "three.safetensors"))),
                                       ("arch", "cnn-small")], "has shape (3, 100)"),
        "class count (onnx)": ([("path", str(save_onnx(three, tmp_path / "three.onnx")))], "needs (2, 10)"),
        "class count (factory)": ([("factory", f"{factory}:three_classes")], "needs (2, 10)"),
        "input shape (safetensors)": ([("path", str(save_safetensors(big, tmp_path / "big.safetensors"))),
                                       ("arch", "cnn-small")], "has shape (100, 1568)"),
        "input shape (onnx)": ([("path", str(save_onnx(big, tmp_path / "big.onnx", (1, 28, 28))))],
                               "takes inputs of shape (?, 1, 28, 28)"),
        "unconvertible onnx": ([("path", str(garbage))], "not an ONNX graph"),
        "factory not importable": ([("factory", "no_such_module_anywhere:build")], "cannot import"),
        "factory without the function": ([("factory", f"{factory}:nothing")], "has no nothing"),
        "factory not a model": ([("factory", f"{factory}:not_a_model")], "not a torch.nn.Module"),
        "factory spelled wrong": ([("factory", "just_a_module")], "expected module:function"),
        "mean without std": ([("path", st), ("arch", "cnn-small"), ("mean", [0.5])], "both"),
        "zero std": ([("path", st), ("arch", "cnn-small"), ("mean", [0.5]), ("std", [0])], "positive"),
        "channels": ([("path", st), ("arch", "cnn-small"), ("mean", [0.5, 0.5, 0.5]), ("std", [1, 1, 1])],
                     "1 channel"),
        "width without arch": ([("path", str(trained["onnx"])), ("width", 2)], "applies to checkpoint.arch"),
    }


BAD = ["missing file", "pickled .pt", "torch.save zip named safetensors", "unsupported suffix", "nothing given",
       "no arch", "unknown arch", "arch and factory", "arch with onnx", "class count (safetensors)",
       "class count (onnx)", "class count (factory)", "input shape (safetensors)", "input shape (onnx)",
       "unconvertible onnx", "factory not importable", "factory without the function", "factory not a model",
       "factory spelled wrong", "mean without std", "zero std", "channels", "width without arch"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_nothing_written(cli, tmp_path, trained, factory_module, monkeypatch, case):
    cases = _bad_cases(tmp_path, trained, factory_module)
    assert sorted(cases) == sorted(BAD)
    sets, expected = cases[case]

    def refuse(*a, **k):
        raise AssertionError("a checkpoint was unpickled")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(module, name, refuse)
    results = tmp_path / "results"
    argv = [a for k, v in sets for a in ("--set", f"checkpoint.{k}={json.dumps(v)}")]
    code, out, err = cli("--results", results, "run", "--defense", "checkpoint", *SMOKE, *argv)
    assert code == 2, out + err
    assert len(err.strip().splitlines()) == 1, err
    assert expected in err, err
    assert not results.exists()
    assert not (tmp_path / "MARKER").exists()


def test_a_refused_checkpoint_is_refused_before_compute_by_the_api_too(tmp_path):
    """check() reads no weights: a pickle is refused by its name alone, even unreadable."""
    pt = tmp_path / "model.pth"
    pt.write_bytes(b"")
    pt.chmod(0)
    with pytest.raises(UsageError, match="export it to safetensors"):
        Checkpoint(CheckpointParams(path=str(pt))).check()
