"""Checks of a run's inputs that need the resolved hyperparameters, made in ``plan()`` before any compute.

What ``bench.hparams`` checks per value (type, finite, not negative, counts at least 1) holds for any use of a
plugin; what is checked here needs the whole selection: the seeds, a budget cap, eps against the selected
datasets' bounds, and hyperparameters that name other plugins.
"""
from __future__ import annotations

import dataclasses
import math
import re

from bench.errors import UsageError

DEFAULT_BUDGET_CAP = 1_000_000
# The largest value an integer budget field (steps, epochs, iterations, restarts, queries, batches...) may take;
# None: no cap. ``bench run --no-budget-cap`` sets it to None for that command (bench.cli); it is process-wide,
# which is why the CLI refuses that flag with worker processes (--jobs > 1, --executor ray): they plan again in
# a fresh interpreter, where the cap is back.
BUDGET_CAP: int | None = DEFAULT_BUDGET_CAP

BUDGET_NAME = re.compile(r"^(\w+_)?(steps|epochs|iterations|restarts|queries|batches|tries)$")
EPS_NAME = re.compile(r"^(\w+_)?eps$")
MAX_SEED = 2**32 - 1  # numpy's and torch's seeds: unsigned 32-bit

# Hyperparameters whose values (a string, or a list of them) are names of other plugins, by registry kind.
NAMES = {"attack": re.compile(r"^(\w+_)?(attacks|companions?)$"),
         "defense": re.compile(r"^(\w+_)?(teachers?|defenses)$")}


def check_plan(registry, selection, params: dict, *, datasets: dict, defenses: dict, attacks: dict) -> None:
    """Raise ``UsageError`` (one line) on the first problem.

    ``params`` maps each selected plugin's name to its resolved ``Params``; ``datasets``, ``defenses`` and
    ``attacks`` map names to plugin classes. The budget cap is the module's ``BUDGET_CAP`` at call time.
    """
    _check_seeds(selection.seeds)
    plugins = {**defenses, **attacks, **datasets}
    for name, cls in plugins.items():
        _check_budgets(selection, name, params[name])
        _check_names(registry, selection, name, cls, params[name])
    for name, cls in {**defenses, **attacks}.items():
        for ds_name, ds in datasets.items():
            _check_eps(selection, name, cls, params[name], ds_name, ds)


def _where(selection, plugin: str, field: str) -> str:
    """``--set plugin.field`` when the value came from the command line, else ``plugin.field`` (a profile)."""
    sets = [item.split("=", 1)[0] for item in getattr(selection, "sets", ())]
    given = f"{plugin}.{field}" in sets or field in sets
    return f"--set {plugin}.{field}" if given else f"{plugin}.{field}"


def _number(value) -> str:
    """1e+20 rather than 21 digits; small integers as they are."""
    return str(value) if isinstance(value, int) and abs(value) < 10**7 else f"{float(value):g}"


def _check_seeds(seeds) -> None:
    listed = " ".join(str(s) for s in seeds)
    for seed in seeds:
        if not 0 <= seed <= MAX_SEED:
            raise UsageError(f"--seed {listed}: seed {seed} is outside 0..{MAX_SEED} (an unsigned 32-bit integer)")
    repeated = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if repeated:
        raise UsageError(f"--seed {listed}: seed {repeated[0]} is given more than once; list each seed once")


def _check_budgets(selection, plugin: str, params) -> None:
    if BUDGET_CAP is None:
        return
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if (BUDGET_NAME.match(f.name) and isinstance(value, int) and not isinstance(value, bool)
                and value > BUDGET_CAP):
            raise UsageError(f"{_where(selection, plugin, f.name)}={_number(value)}: above the budget cap of "
                             f"{BUDGET_CAP:,} (pass --no-budget-cap to run it anyway)")


def _check_names(registry, selection, plugin: str, cls, params) -> None:
    """Hyperparameters that name attacks or defenses (a worst case's components, a teacher) name installed
    ones; and so does a certifier's declared companion attack."""
    for f in dataclasses.fields(params):
        kind = next((k for k, pattern in NAMES.items() if pattern.match(f.name)), None)
        value = getattr(params, f.name)
        if kind is None:
            continue
        names = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else []
        for item in names:
            if isinstance(item, str):
                try:
                    registry.entry(kind, item)
                except UsageError as exc:
                    raise UsageError(f"{_where(selection, plugin, f.name)}: {exc}") from None
    companion = getattr(cls, "companion", None)
    if isinstance(companion, str):
        try:
            registry.entry("attack", companion)
        except UsageError as exc:
            raise UsageError(f"{plugin} declares companion attack {companion!r}: {exc}") from None


def _check_eps(selection, plugin: str, cls, params, ds_name: str, ds) -> None:
    """An eps above what the data's range allows is a typo (7 for 7/255, say): in [lo, hi] every image is
    within linf distance hi - lo of every other, and within l2 distance sqrt(#pixels) * (hi - lo)."""
    if getattr(cls, "modality", None) != "image" or getattr(ds, "modality", None) != "image":
        return  # a text model's eps is in embedding space, not in the data's units
    shape = tuple(getattr(ds, "input_shape", ()) or ())
    lo, hi = ds.bounds
    span = hi - lo
    norm = getattr(cls, "norm", None) or "linf"
    limit = math.sqrt(math.prod(shape)) * span if norm == "l2" else span
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if not EPS_NAME.match(f.name) or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if value > limit * (1 + 1e-9):
            what = f"sqrt({math.prod(shape)} inputs) x {span:g}" if norm == "l2" else f"{hi:g} - {lo:g}"
            raise UsageError(f"{_where(selection, plugin, f.name)}={_number(value)}: larger than the whole data "
                             f"range of {ds_name} ({norm} diameter {what} = {limit:g}); give eps in the data's "
                             f"units, at most {limit:g} (e.g. 8/255 = {8 / 255:.4f}, not 8)")
