"""Leaderboard tables of the tracks whose records are not robust accuracy at an eps (see bench.leaderboard for
the image-robustness track). A track with its own table shape has a module here exposing
``tables(records, reported) -> {path relative to the track's folder: text}``, named in ``TRACK_TABLES``; any
other track gets ``generic.tables``: one row per defense and evaluator, one column per metric."""
from __future__ import annotations

import importlib

TRACK_TABLES: dict[str, str] = {
    "domain-shift": "bench.tables.domain_shift",
    "unlearning": "bench.tables.unlearning",
    "text-robustness": "bench.tables.text",
    "concept-erasure": "bench.tables.concept_erasure",
}


def tables_for(track: str):
    """The ``tables`` function of the track's module, or the generic one."""
    return importlib.import_module(TRACK_TABLES.get(track, "bench.tables.generic")).tables


def figures_for(track: str):
    """The track module's optional ``figures(records, out_dir) -> [paths]`` (PNGs it draws itself), or None."""
    return getattr(importlib.import_module(TRACK_TABLES.get(track, "bench.tables.generic")), "figures", None)
