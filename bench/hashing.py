"""Stable keys: sha256 of canonical JSON, and of the source code a result depends on."""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import inspect
import json
import sys
from typing import Any

# Packages whose modules can change a result; a plugin's helper modules in them enter its code version.
RESULT_PACKAGES = ("bench", "defenses", "attacks")
# Framework modules that carry interfaces and bookkeeping, not numbers: left out so that editing them does not
# invalidate every cached model (the runner names the shared numerical ones explicitly: TRAIN_CODE, EVAL_CODE).
FRAMEWORK = ("bench", "bench.plugins", "bench.context", "bench.errors", "bench.progress", "bench.hparams",
             "bench.registry", "bench.records", "bench.hashing", "bench.environment", "bench.cache", "bench.runner",
             "bench.cli", "bench.leaderboard", "bench.leaderboard_io", "bench.suites", "bench.tables")


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def digest(obj: Any) -> str:
    return hashlib.sha256(canonical(obj).encode()).hexdigest()


@functools.cache
def module_source_hash(module_name: str) -> str:
    """Hash of a module's source: results of edited code are not mistaken for cached ones."""
    module = sys.modules.get(module_name)
    if module is None:
        import importlib

        module = importlib.import_module(module_name)
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        source = getattr(module, "__version__", module_name)
    return hashlib.sha256(source.encode()).hexdigest()[:16]


@functools.cache
def _module_file(module_name: str) -> str | None:
    """The .py file of an in-repo module, found on disk without importing it (or None: not a module)."""
    from pathlib import Path

    top, _, rest = module_name.partition(".")
    spec = importlib.util.find_spec(top)  # a top-level lookup imports nothing
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        base = Path(root, *rest.split(".")) if rest else Path(root)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if rest and candidate.is_file() or not rest and candidate.name == "__init__.py" and candidate.is_file():
                return str(candidate)
    return None


def _source(module_name: str) -> str | None:
    path = _module_file(module_name)
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        return f.read()


def _imported(module_name: str, source: str) -> set[str]:
    """In-repo modules that ``module_name`` imports anywhere (also inside functions), absolute or relative."""
    names: set[str] = set()
    package = module_name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(p for p in (*parts, base) if p)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    return {n for n in names if n.split(".")[0] in RESULT_PACKAGES and n not in FRAMEWORK
            and not n.startswith("bench.tables.") and _module_file(n) is not None}


@functools.cache
def helper_modules(module_name: str) -> tuple[str, ...]:
    """The in-repo modules ``module_name`` depends on, transitively, framework modules excepted: a cached model
    or record is invalidated when a defense's or attack's helper module changes, not only its own file."""
    seen, todo = set(), [module_name]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        source = _source(name)
        if source is not None:
            todo.extend(_imported(name, source) - seen)
    return tuple(sorted(seen - {module_name}))


def code_version(*module_names: str) -> dict[str, str]:
    """``bench``'s version and the source hash of each module and of the helper modules it imports."""
    from bench import __version__

    names = dict.fromkeys(m for name in module_names for m in (name, *helper_modules(name)))
    return {"bench": __version__, **{m: module_source_hash(m) for m in names}}
