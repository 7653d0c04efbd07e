"""Bad input is caught in plan() or the CLI before any compute: one line "bench: error: ...", exit code 2, and
nothing written under --results. Hyperparameter values, seeds, budgets, eps against the data's range, names of
other plugins inside hyperparameters, an unwritable --results, and damaged dataset files."""
from __future__ import annotations

import dataclasses
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from bench import validate
from bench.data import CorruptData
from bench.errors import UsageError

SMOKE = ["--profile", "smoke", "--dataset", "uci-digits"]
STANDARD = ["--defense", "standard", "--attack", "fgsm", *SMOKE]


def one_line_error(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("bench: error:"), (code, err)
    return lines[0]


def nothing_written(results: Path) -> bool:
    return not results.exists() or not any(results.iterdir())


BAD_RUNS = {
    # 1. non-finite floats (JSON reads NaN, Infinity; 1e999 overflows to Infinity)
    "eps NaN": (["--defense", "pgd-at", "--attack", "fgsm", *SMOKE, "--set", "pgd-at.eps=NaN"],
                "pgd-at.eps: NaN is not a finite number"),
    "lr Infinity": ([*STANDARD, "--set", "lr=Infinity"], "standard.lr: Infinity is not a finite number"),
    "lr 1e999": ([*STANDARD, "--set", "lr=1e999"], "standard.lr: Infinity is not a finite number"),
    "steps NaN (int field)": ([*STANDARD[:3], "pgd-linf", *SMOKE, "--set", "pgd-linf.steps=NaN"],
                              "pgd-linf.steps: NaN is not a finite number"),
    # 2. zero sizes and counts
    "batch_size 0": ([*STANDARD, "--set", "batch_size=0"], "standard.batch_size: 0 is too small"),
    "n_test 0": ([*STANDARD, "--set", "n_test=0"], "uci-digits.n_test: 0 is too small"),
    "n_train 0": ([*STANDARD, "--set", "n_train=0"], "uci-digits.n_train: 0 is too small"),
    "epochs 0": ([*STANDARD, "--set", "standard.epochs=0"], "standard.epochs: 0 is too small"),
    "steps 0": ([*STANDARD[:3], "pgd-linf", *SMOKE, "--set", "pgd-linf.steps=0"], "pgd-linf.steps: 0 is too small"),
    # 3. budgets above the sanity cap (1e20 is a JSON float, integral)
    "steps 1e20": ([*STANDARD[:3], "pgd-linf", *SMOKE, "--set", "pgd-linf.steps=1e20"],
                   "--set pgd-linf.steps=1e+20: above the budget cap of 1,000,000 (pass --no-budget-cap"),
    "epochs 1e7": ([*STANDARD, "--set", "epochs=1e7"], "--set standard.epochs=1e+07: above the budget cap"),
    "no cap with workers": ([*STANDARD, "--no-budget-cap", "--jobs", "2"], "sequential runs only"),
    # 4. eps above the data's range
    "eps 7": (["--defense", "pgd-at", "--attack", "fgsm", *SMOKE, "--set", "pgd-at.eps=7"],
              "--set pgd-at.eps=7: larger than the whole data range of uci-digits"),
    # 5. seeds
    "seed -1": ([*STANDARD, "--seed", "-1"], "seed -1 is outside 0..4294967295"),
    "seed 2**66": ([*STANDARD, "--seed", "99999999999999999999"], "is outside 0..4294967295"),
    "seed twice": ([*STANDARD, "--seed", "0", "1", "0"], "seed 0 is given more than once"),
    # 6. names of other plugins inside hyperparameters
    "worst-case unknown": (["--defense", "standard", "--attack", "worst-case", *SMOKE,
                            "--set", 'worst-case.attacks=["no-such"]'], "worst-case.attacks: unknown attack 'no-such'"),
    "worst-case typo": (["--defense", "standard", "--attack", "worst-case", *SMOKE,
                         "--set", 'worst-case.attacks=["pgd-linf", "pgd-lnf"]'], "did you mean pgd-linf"),
}


@pytest.mark.parametrize("case", sorted(BAD_RUNS))
def test_bad_run_is_one_line_exit_2_nothing_written(cli, tmp_path, case):
    argv, expected = BAD_RUNS[case]
    results = tmp_path / "results"
    line = one_line_error(*cli("--results", results, "run", *argv)[::2])
    assert expected in line
    assert not results.exists()


def test_integral_float_is_an_integer_and_the_cap_can_be_lifted(registry, monkeypatch):
    from bench.runner import Selection, plan

    sel = Selection(defenses=("standard",), attacks=("pgd-linf",), datasets=("uci-digits",), profile="smoke",
                    sets=("pgd-linf.steps=3.0", "standard.epochs=1e1"))
    job = plan(registry, sel).jobs[0]
    assert job.cells[0].attack.params.steps == 3 and type(job.cells[0].attack.params.steps) is int
    assert job.defense.params.epochs == 10
    huge = dataclasses.replace(sel, sets=("pgd-linf.steps=1e20",))
    with pytest.raises(UsageError, match="budget cap"):
        plan(registry, huge)
    monkeypatch.setattr(validate, "BUDGET_CAP", None)
    assert plan(registry, huge).jobs[0].cells[0].attack.params.steps == 10**20


def test_no_budget_cap_flag_lifts_the_cap_for_that_command_only(cli, tmp_path):
    results = tmp_path / "results"
    argv = ["--defense", "pgd-at", "--attack", "pgd-linf", *SMOKE, "--set", "pgd-linf.steps=1e20",
            "--set", "pgd-at.eps=7"]
    # With the flag the cap passes, and the next check (eps) stops the run; without it the cap stops it again.
    assert "data range" in one_line_error(*cli("--results", results, "run", "--no-budget-cap", *argv)[::2])
    assert "budget cap" in one_line_error(*cli("--results", results, "run", *argv)[::2])
    assert not results.exists()


def test_zero_defaults_and_null_stay_allowed():
    from bench.hparams import build_params

    @dataclasses.dataclass(frozen=True)
    class P:
        warmup: int = 0
        n_train: int | None = None
        steps: int = 5
        lr: float = 0.1

    assert build_params(P, "p", {"warmup": 0, "n_train": None, "lr": 0.0}) == P(0, None, 5, 0.0)
    with pytest.raises(UsageError, match=r"p\.steps: 0 is too small"):
        build_params(P, "p", {"steps": 0})
    with pytest.raises(UsageError, match="is negative"):
        build_params(P, "p", {"warmup": -1})
    with pytest.raises(UsageError, match=r"p\.lr: -Infinity is not a finite number"):
        build_params(P, "p", {"lr": float("-inf")})


def test_l2_eps_is_bounded_by_the_data_diameter(registry):
    """For an L2 plugin the bound is sqrt(prod(input_shape)) * (hi - lo): 8 on uci-digits' 64 pixels in [0, 1]."""
    from bench.runner import Selection

    @dataclasses.dataclass(frozen=True)
    class P:
        eps: float | None = None
        inner_eps: float = 0.5

    attack = type("L2Thing", (), {"modality": "image", "norm": "l2", "Params": P})
    linf = type("LinfThing", (), {"modality": "image", "norm": "linf", "Params": P})
    digits = registry.load("dataset", "uci-digits")
    sel = Selection(defenses=(), attacks=("thing",), datasets=("uci-digits",), sets=("thing.eps=7.5",))

    def check(cls, **values):
        validate.check_plan(registry, sel, {"thing": P(**values), "uci-digits": digits.Params()},
                            datasets={"uci-digits": digits}, defenses={}, attacks={"thing": cls})

    check(attack, eps=7.5)  # within the l2 diameter 8
    with pytest.raises(UsageError, match=r"--set thing\.eps=7\.5: larger than the whole data range.*= 1\)"):
        check(linf, eps=7.5)
    with pytest.raises(UsageError, match=r"thing\.inner_eps=9: .*sqrt\(64 inputs\) x 1 = 8"):
        check(attack, inner_eps=9.0)


# --- 7. --results that cannot be written

def _bad_results(tmp_path: Path) -> dict[str, tuple[str, str]]:
    (tmp_path / "a-file").write_text("x")
    return {
        "a file": (str(tmp_path / "a-file"), "is a file, not a folder"),
        "inside a file": (str(tmp_path / "a-file" / "results"), "which is a file"),
        "under /proc": ("/proc/bench-results-test", "cannot write there"),
        "empty": ("", "empty path"),
    }


@pytest.mark.parametrize("case", ["a file", "inside a file", "under /proc", "empty"])
def test_unwritable_results_refused_before_compute(cli, tmp_path, monkeypatch, case):
    path, expected = _bad_results(tmp_path)[case]
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # `--results ''` must not mean the current folder
    line = one_line_error(*cli("--results", path, "run", *STANDARD)[::2])
    assert expected in line
    assert not any(work.iterdir())
    assert (tmp_path / "a-file").read_text() == "x"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write into a read-only folder")
def test_read_only_results_refused(cli, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        for results in (folder, folder / "results"):
            assert "cannot write there" in one_line_error(*cli("--results", results, "run", *STANDARD)[::2])
        assert not any(folder.iterdir())
    finally:
        folder.chmod(0o755)


def test_probe_leaves_nothing_behind(cli, tmp_path):
    """A good --results whose run is refused later (by plan) is left as it was: made for the probe, removed."""
    results = tmp_path / "deep" / "er" / "results"
    one_line_error(*cli("--results", results, "run", *STANDARD, "--seed", "0", "0")[::2])
    assert not (tmp_path / "deep").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    one_line_error(*cli("--results", existing, "run", *STANDARD, "--seed", "0", "0")[::2])
    assert nothing_written(existing)


def test_probe_survives_a_parallel_run_making_and_removing_the_same_new_folder(tmp_path, monkeypatch):
    """Two runs started together on one new --results: the other run makes the folder between this probe's look
    and its mkdir, then removes it again before this probe writes into it; the probe tries again, not refuses."""
    from bench.cli import check_results_writable

    results, real_mkdir, raced = tmp_path / "new", Path.mkdir, []

    def mkdir_as_the_other_run_wins(self, *args, **kwargs):
        if self == results and not raced:
            raced.append("made")
            real_mkdir(self)  # the other run's mkdir came first
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir_as_the_other_run_wins)
    check_results_writable(results)
    assert raced == ["made"] and results.is_dir() and not any(results.iterdir())

    def mkdir_always_raced(self, *args, **kwargs):
        raise FileExistsError(17, "File exists")

    monkeypatch.setattr(Path, "mkdir", mkdir_always_raced)
    with pytest.raises(UsageError, match="cannot write there"):  # a race that never ends is still one clear line
        check_results_writable(tmp_path / "never")


@pytest.mark.parametrize("case", ["a file", "empty"])
def test_leaderboard_bad_results_one_line(cli, tmp_path, monkeypatch, case):
    path, expected = _bad_results(tmp_path)[case]
    monkeypatch.chdir(tmp_path)
    for argv in (["leaderboard"], ["leaderboard", "--check"]):
        assert expected in one_line_error(*cli("--results", path, *argv)[::2])


# --- 8. dataset files whose header or labels are wrong (fake IDX files, written by hand)

def write_idx(path: Path, array: np.ndarray, magic: int | None = None, shape=None) -> None:
    shape = array.shape if shape is None else shape
    magic = (0x08 << 8 | len(shape)) if magic is None else magic
    payload = struct.pack(">I", magic) + struct.pack(f">{len(shape)}I", *shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def fake_idx_folder(folder: Path, gz: bool = True, n: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    ext = ".gz" if gz else ""
    for prefix, count in (n or {"train": 60, "t10k": 30}).items():
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", rng.integers(0, 256, (count, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", np.arange(count) % 10)


def _damage(folder: Path, case: str) -> str:
    """Damage one file of a good fake folder; the name of the damaged file."""
    images, labels = folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz"
    if case == "bad magic":
        write_idx(images, np.zeros((60, 28, 28)), magic=0x12345678)
    elif case == "labels file as images":
        labels_bytes = labels.read_bytes()
        images.write_bytes(labels_bytes)
    elif case == "truncated gz":
        images.write_bytes(images.read_bytes()[:-200])
    elif case == "label 200":
        write_idx(labels, np.r_[np.arange(59) % 10, 200])
        return labels.name
    elif case == "count mismatch":
        write_idx(labels, np.arange(59) % 10)
    elif case == "not 28x28":
        write_idx(images, np.zeros((60, 27, 29)))
    elif case == "header overflows":
        write_idx(images, np.zeros((60, 28, 28)), shape=(2**32 - 1, 28, 28))
    elif case == "raw truncated":
        raw = folder / "t10k-images-idx3-ubyte"
        (folder / "t10k-images-idx3-ubyte.gz").unlink()
        write_idx(raw, np.zeros((30, 28, 28)))
        raw.write_bytes(raw.read_bytes()[:-1])
        return raw.name
    return images.name


DAMAGE = {"bad magic": "magic number", "labels file as images": "magic number 2049 (a labels file)",
          "truncated gz": "corrupt IDX file", "label 200": "label 200 is outside 0..9",
          "count mismatch": "60 images but", "not 28x28": "images of 27x29 pixels, expected 28x28",
          "header overflows": "data bytes for shape (4294967295, 28, 28)", "raw truncated": "data bytes"}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_idx_files_named_by_check(tmp_path, case):
    from bench.tracks.image_robustness.fashion_mnist import FashionMNIST
    from bench.tracks.image_robustness.torchvision_sets import MNIST

    fake_idx_folder(tmp_path / "FashionMNIST" / "raw")
    fake_idx_folder(tmp_path / "MNIST" / "raw")
    for plugin, folder in ((FashionMNIST, "FashionMNIST"), (MNIST, "MNIST")):
        plugin(plugin.Params(root=str(tmp_path))).check()  # the good folder passes (and is remembered)
        name = _damage(tmp_path / folder / "raw", case)
        with pytest.raises(CorruptData) as info:
            plugin(plugin.Params(root=str(tmp_path))).check()
        message = str(info.value)
        assert "\n" not in message and DAMAGE[case] in message and name in message, message


@pytest.mark.parametrize("case", ["label 200", "not 28x28", "truncated gz", "bad magic"])
def test_damaged_data_through_the_cli(cli, tmp_path, case):
    root = tmp_path / "data"
    fake_idx_folder(root)
    name = _damage(root, case)
    results = tmp_path / "results"
    line = one_line_error(*cli("--results", results, "run", "--defense", "standard", "--attack", "fgsm",
                               "--dataset", "fashion-mnist", "--profile", "smoke", "--data-root", root)[::2])
    assert DAMAGE[case] in line and name in line
    assert not results.exists()


def test_check_is_cheap_and_sees_a_replaced_file(tmp_path):
    from bench.data import check_mnist_folder

    fake_idx_folder(tmp_path, gz=False)
    check_mnist_folder(tmp_path)
    check_mnist_folder(tmp_path)  # remembered
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    write_idx(labels, np.full(30, 11))
    with pytest.raises(CorruptData, match="label 11"):
        check_mnist_folder(tmp_path)
    with pytest.raises(CorruptData, match="label 11"):  # an error is not remembered as a pass
        check_mnist_folder(tmp_path)


# --- 9. the files each dataset reads, and their sha256

def test_dataset_files_and_sha256(tmp_path):
    import hashlib

    from bench.data import file_sha256
    from bench.plugins import Dataset
    from bench.tracks.image_robustness.fashion_mnist import FashionMNIST
    from bench.tracks.image_robustness.mnist5k import MNIST5k
    from bench.tracks.image_robustness.torchvision_sets import CIFAR10, MNIST
    from bench.tracks.image_robustness.uci_digits import UCIDigits

    assert Dataset.files(object()) == []  # the base default
    fake_idx_folder(tmp_path / "FashionMNIST" / "raw")
    fake_idx_folder(tmp_path / "MNIST" / "raw", gz=False)
    fm = FashionMNIST(FashionMNIST.Params(root=str(tmp_path))).files()
    assert [p.name for p in fm] == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert all(p.parent == tmp_path / "FashionMNIST" / "raw" for p in fm)
    assert [p.name for p in MNIST(MNIST.Params(root=str(tmp_path))).files()] == [p.name[:-3] for p in fm]
    assert CIFAR10(CIFAR10.Params(root=str(tmp_path))).files() == []  # nothing there
    assert [p.name for p in MNIST5k().files()] == ["mnist_5k.csv.gz"]
    assert [p.name for p in UCIDigits().files()] == ["digits.csv.gz"]
    assert all(p.is_file() for p in MNIST5k().files() + UCIDigits().files())

    path = fm[1]
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest() == file_sha256(str(path))
    write_idx(path, np.arange(61) % 10)  # a different size: computed again
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
