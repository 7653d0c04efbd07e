"""Stable keys: sha256 of canonical JSON, and of the source code a result depends on."""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import sys
from typing import Any


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


def code_version(*module_names: str) -> dict[str, str]:
    from bench import __version__

    return {"bench": __version__, **{m: module_source_hash(m) for m in module_names}}
