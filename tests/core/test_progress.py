"""Progress in logs: plain lines when stderr is not a terminal, bars only on a terminal, BENCH_PROGRESS
forcing (1) or silencing (0) both; TrainContext.log reports each epoch as a line."""
import sys
from pathlib import Path

import pytest
import torch

from bench import progress as progress_module
from bench.context import TrainContext, _summary_line
from bench.progress import line, progress


def tty(monkeypatch, is_tty: bool):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: is_tty, raising=False)


def test_line_prints_one_line_when_not_a_tty(monkeypatch, capsys):
    monkeypatch.delenv("BENCH_PROGRESS", raising=False)
    tty(monkeypatch, False)
    line("cell 3/10 done")
    out, err = capsys.readouterr()
    assert out == "" and err == "cell 3/10 done\n"


def test_line_is_silent_with_bench_progress_0(monkeypatch, capsys):
    monkeypatch.setenv("BENCH_PROGRESS", "0")
    for is_tty in (False, True):
        tty(monkeypatch, is_tty)
        line("hidden")
    assert capsys.readouterr() == ("", "")


def test_line_is_silent_on_a_tty_unless_forced(monkeypatch, capsys):
    monkeypatch.delenv("BENCH_PROGRESS", raising=False)
    tty(monkeypatch, True)
    line("hidden")
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("BENCH_PROGRESS", "1")
    line("shown")
    assert capsys.readouterr().err == "shown\n"


def test_line_goes_to_the_real_stderr_fd(monkeypatch, capfd):
    monkeypatch.delenv("BENCH_PROGRESS", raising=False)
    tty(monkeypatch, False)
    line("to fd 2")
    assert capfd.readouterr().err == "to fd 2\n"


def test_line_survives_a_closed_stderr(monkeypatch):
    monkeypatch.delenv("BENCH_PROGRESS", raising=False)

    class Closed:
        def isatty(self):
            raise ValueError("I/O operation on closed file")

        def write(self, s):
            raise ValueError("I/O operation on closed file")

        def flush(self):
            raise ValueError("I/O operation on closed file")

    monkeypatch.setattr(sys, "stderr", Closed())
    line("nowhere")
    monkeypatch.setattr(sys, "stderr", None)
    line("nowhere")


def test_line_is_reachable_from_the_progress_function():
    assert progress.line is line is progress_module.line


def test_bars_only_on_a_tty(monkeypatch, capsys):
    monkeypatch.delenv("BENCH_PROGRESS", raising=False)
    tty(monkeypatch, False)
    assert progress(range(3), desc="x").disable
    assert list(progress(range(3), desc="x")) == [0, 1, 2]
    assert capsys.readouterr().err == ""  # no bars, and nothing else, in a log
    tty(monkeypatch, True)
    assert not progress(range(3), desc="x").disable
    monkeypatch.setenv("BENCH_PROGRESS", "0")
    assert progress(range(3), desc="x").disable


def make_ctx():
    return TrainContext(device=torch.device("cpu"), seed=0, generator=torch.Generator(), artifacts=Path("."),
                        model_of=lambda *a, **kw: None)


def test_train_context_log_emits_an_epoch_line(monkeypatch, capsys):
    monkeypatch.delenv("BENCH_PROGRESS", raising=False)
    tty(monkeypatch, False)
    ctx = make_ctx()
    ctx.log(epoch=2, loss=0.412345, lr=1e-5, train_acc=0.88125)
    assert ctx.history == [{"epoch": 2.0, "loss": 0.412345, "lr": 1e-5, "train_acc": 0.88125}]
    err = capsys.readouterr().err
    assert err.splitlines() == ["  epoch 2 loss 0.4123 lr 1e-05 train_acc 0.8812"]


def test_train_context_log_is_silent_with_bench_progress_0(monkeypatch, capsys):
    monkeypatch.setenv("BENCH_PROGRESS", "0")
    ctx = make_ctx()
    ctx.log(epoch=1, loss=1.0)
    assert capsys.readouterr().err == "" and len(ctx.history) == 1


@pytest.mark.parametrize("scalars, expected", [
    ({"loss": 0.5, "epoch": 4}, "  epoch 4 loss 0.5"),  # the epoch first
    ({"epoch": 1, "note": "warmup", "kl": torch.tensor(0.123456)}, "  epoch 1 note warmup kl 0.1235"),
    ({"loss": 1234.5678}, "  loss 1235"),
    ({"loss": float("nan")}, "  loss nan"),
])
def test_summary_line(scalars, expected):
    assert _summary_line(scalars) == expected
