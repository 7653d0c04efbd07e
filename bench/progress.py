"""Progress: tqdm bars on a terminal; plain lines (``line``) in logs.

``BENCH_PROGRESS=0`` silences both; ``BENCH_PROGRESS=1`` forces both (bars and lines) wherever stderr goes.
Otherwise bars show only on a terminal (in a log file they are noise) and lines only off a terminal
(on a terminal the bar already shows the progress)."""
from __future__ import annotations

import os
import sys


def _stderr_is_tty() -> bool:
    try:
        return bool(sys.stderr is not None and sys.stderr.isatty())
    except (AttributeError, ValueError, OSError):  # no stderr, or a closed one
        return False


def progress(iterable, desc: str, total: int | None = None, leave: bool = False):
    from tqdm.auto import tqdm

    setting = os.environ.get("BENCH_PROGRESS")
    disable = setting == "0" or (setting != "1" and not _stderr_is_tty())
    return tqdm(iterable, desc=desc, total=total, leave=leave, disable=disable, dynamic_ncols=True)


def line(message: str) -> None:
    """One plain line of progress on stderr, flushed: printed when stderr is not a terminal (a log file) or
    BENCH_PROGRESS=1; never when BENCH_PROGRESS=0. Never raises."""
    setting = os.environ.get("BENCH_PROGRESS")
    if setting == "0" or (setting != "1" and _stderr_is_tty()):
        return
    stream = sys.stderr
    if stream is None:
        return
    try:
        print(str(message).rstrip("\n"), file=stream, flush=True)
    except (OSError, ValueError):  # a closed or broken stream must not stop a run
        pass


# So that ``from bench.progress import progress`` also gives ``progress.line(...)``.
progress.line = line
