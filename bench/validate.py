"""Checks of a run's inputs that need the resolved hyperparameters, made in ``plan()`` before any compute."""
from __future__ import annotations


def check_plan(registry, selection, params: dict, *, datasets: dict, defenses: dict, attacks: dict) -> None:
    """Raise ``UsageError`` (one line) on the first problem."""
