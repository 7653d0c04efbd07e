"""Progress bars: tqdm on a terminal, silent otherwise (and when BENCH_PROGRESS=0)."""
from __future__ import annotations

import os
import sys


def progress(iterable, desc: str, total: int | None = None, leave: bool = False):
    from tqdm.auto import tqdm

    setting = os.environ.get("BENCH_PROGRESS")
    disable = setting == "0" or (setting != "1" and not sys.stderr.isatty())
    return tqdm(iterable, desc=desc, total=total, leave=leave, disable=disable, dynamic_ncols=True)
