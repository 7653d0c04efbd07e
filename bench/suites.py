"""Predefined grids for ``bench run --suite NAME``: each track declares its own (``Track.suites``)."""
from __future__ import annotations

from bench.errors import UsageError


def suites(registry) -> dict[str, dict]:
    """Every registered track's suites, by name; a name declared by two tracks is an error."""
    found: dict[str, dict] = {}
    owner: dict[str, str] = {}
    for track in registry.tracks():
        for name, grid in track.suites.items():
            if name in found:
                raise UsageError(f"suite {name!r} is declared by two tracks: {owner[name]} and {track.name}")
            found[name], owner[name] = grid, track.name
    return found
