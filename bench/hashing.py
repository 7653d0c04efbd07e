"""Stable keys: sha256 of canonical JSON, and of the source code a result depends on."""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import inspect
import io
import json
import sys
import tokenize
from typing import Any

# Where a result's code lives beyond its plugin's own package: the tracks' packages, the built-in plugin packages,
# and the few core modules that compute numbers. The rest of the core (runner, records, registry, CLI, tables...)
# carries interfaces and bookkeeping: editing it does not invalidate cached models or records.
RESULT_PACKAGES = ("bench.tracks", "bench_attacks", "bench_defenses")
NUMERICAL_CORE = ("bench.data", "bench.evaluate", "bench.stats", "bench.threat")


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def digest(obj: Any) -> str:
    return hashlib.sha256(canonical(obj).encode()).hexdigest()


def _normalised(source: str) -> str:
    """The code without comments, docstrings, import statements and layout: what computes. Imports are followed
    separately (``helper_modules``), so moving a module or renaming its package changes no key. Built from the
    tokens, not by printing the syntax tree again: ``ast.unparse`` writes f-strings differently from Python 3.12
    on, which gave one file two hashes (records made on a 3.11 machine and on a 3.12 GPU host never matched)."""
    lines = source.splitlines(keepends=True)

    def char_col(line: int, byte_col: int) -> int:  # the syntax tree counts UTF-8 bytes, tokenize characters
        return len(lines[line - 1].encode()[:byte_col].decode("utf-8", errors="ignore"))

    skipped = []  # (start, end) positions of imports and docstrings, as (line, column) in characters
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for stmt in body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)) or (
                    isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
                    and isinstance(stmt.value.value, str)):
                skipped.append(((stmt.lineno, char_col(stmt.lineno, stmt.col_offset)),
                                (stmt.end_lineno, char_col(stmt.end_lineno, stmt.end_col_offset))))

    def text(start, end) -> str:
        (l0, c0), (l1, c1) = start, end
        if l0 == l1:
            return lines[l0 - 1][c0:c1]
        return lines[l0 - 1][c0:] + "".join(lines[l0:l1 - 1]) + lines[l1 - 1][:c1]

    out, depth, fstring_start = [], 0, None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        name = tokenize.tok_name[tok.type]
        if name == "FSTRING_START":  # 3.12+ splits an f-string into parts: keep it whole, as 3.11's one token
            depth += 1
            fstring_start = fstring_start or tok.start
            continue
        if depth:
            if name == "FSTRING_END":
                depth -= 1
                if not depth:
                    tok = tok._replace(type=tokenize.STRING, string=text(fstring_start, tok.end), start=fstring_start)
                    fstring_start = None
            if depth:
                continue
        if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER):
            continue
        if any(a <= tok.start < b for a, b in skipped):
            continue
        out.append({tokenize.NEWLINE: "\n", tokenize.INDENT: "<indent>", tokenize.DEDENT: "<dedent>"}.get(
            tok.type, tok.string))
    return " ".join(out)


@functools.cache
def module_source_hash(module_name: str) -> str:
    """Hash of a module's normalised source: results of edited code are not mistaken for cached ones."""
    source = _source(module_name)
    if source is None:
        module = sys.modules.get(module_name)
        if module is None:
            import importlib

            module = importlib.import_module(module_name)
        try:
            source = inspect.getsource(module)
        except (OSError, TypeError):
            return hashlib.sha256(str(getattr(module, "__version__", module_name)).encode()).hexdigest()[:16]
    return hashlib.sha256(_normalised(source).encode()).hexdigest()[:16]


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


def _follows(name: str, home: str) -> bool:
    """Whether an import of ``name`` from a module of top-level package ``home`` enters the code version: the
    same package, a track's or built-in plugin package (a track's ``__init__`` only declares it), or a numerical
    core module."""
    if name in NUMERICAL_CORE:
        return True
    if name.split(".")[0] == home and home != "bench":
        return True
    in_results = any(name == p or name.startswith(p + ".") for p in RESULT_PACKAGES)
    is_track_declaration = name.startswith("bench.tracks") and name.count(".") <= 2
    return in_results and not is_track_declaration


def _imported(module_name: str, source: str, home: str) -> set[str]:
    """Modules that ``module_name`` imports anywhere (also inside functions), absolute or relative, that enter
    the code version of a plugin of top-level package ``home``."""
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
    return {n for n in names if _follows(n, home) and _module_file(n) is not None}


@functools.cache
def helper_modules(module_name: str) -> tuple[str, ...]:
    """The modules ``module_name`` depends on, transitively (see ``_follows``): a cached model or record is
    invalidated when a defense's or attack's helper module changes, not only its own file."""
    home = module_name.split(".")[0]
    seen, todo = set(), [module_name]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        source = _source(name)
        if source is not None:
            todo.extend(_imported(name, source, home) - seen)
    return tuple(sorted(seen - {module_name}))


def code_modules(*module_names: str) -> tuple[str, ...]:
    """The modules whose code a result of these modules depends on (themselves and their helpers)."""
    return tuple(dict.fromkeys(m for name in module_names for m in (name, *helper_modules(name))))


def code_version(*module_names: str) -> dict[str, Any]:
    """``bench``'s version and the normalised-source hashes of ``code_modules``. Hashes only, not names: a key
    depends on what the code computes, not on where its files sit."""
    from bench import __version__

    return {"bench": __version__, "sources": sorted({module_source_hash(m) for m in code_modules(*module_names)})}


def code_hashes(*module_names: str) -> dict[str, str]:
    """{module: normalised-source hash} of ``code_modules``: stored in a record (not in its key) so that
    ``bench leaderboard --check`` can tell whether two records of one table ran the same code."""
    return {m: module_source_hash(m) for m in sorted(code_modules(*module_names))}
