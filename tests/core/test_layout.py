"""The layout's invariants, read statically from the source (``ast``; only the plugin-folder check imports the
plugins, to read the track their classes declare): the core imports no track or
plugin code, neither modules nor packages (core, each track, each track's attacks and defenses) import each
other in a cycle, every built-in track has its three folders and every built-in plugin sits in its track's
folder, and no module grows past a reviewable size.

The graph covers every module under bench/, attacks/ (imported as ``bench_attacks``) and defenses/
(``bench_defenses``), with every import statement anywhere in a module (also inside functions and
``if TYPE_CHECKING:`` blocks), relative imports resolved, and ``from pkg import name`` read as ``pkg.name``
where that is a module."""
from __future__ import annotations

import ast
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"bench": ROOT / "bench", "bench_attacks": ROOT / "attacks", "bench_defenses": ROOT / "defenses"}
TRACK_CODE = ("bench.tracks", "bench_attacks", "bench_defenses")  # what the core must not import
MAX_LINES = 800
# Modules allowed past MAX_LINES, with why ("path relative to the repository root": "reason"). Empty: keep it so.
KNOWN_LONG: dict[str, str] = {}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@cache
def modules() -> dict[str, Path]:
    """Every module of the three packages: dotted name -> file."""
    found = {}
    for top, folder in FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((top, *parts))] = path
    return found


def is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def parse_imports(source: str, name: str, package: bool, known) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement in ``source`` (module ``name``, a package's
    ``__init__`` when ``package``), resolved to absolute names; ``from pkg import x`` gives ``pkg.x`` when that
    is in ``known`` (a module), else ``pkg``."""
    anchor_parts = name.split(".") if package else name.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if node.level > len(anchor_parts):
                    raise AssertionError(f"{name}:{node.lineno}: relative import beyond the top-level package")
                anchor = ".".join(anchor_parts[:len(anchor_parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.append((full if full in known else base, node.lineno))
    return out


@cache
def raw_imports(name: str) -> tuple[tuple[str, int], ...]:
    return tuple(parse_imports(modules()[name].read_text(encoding="utf-8"), name, is_package(name), modules()))


@cache
def graph() -> dict[str, set[str]]:
    """Module -> the in-repo modules it imports (itself excluded)."""
    mods = modules()
    return {name: {imp for imp, _ in raw_imports(name) if imp in mods and imp != name} for name in mods}


def core_modules() -> list[str]:
    return ["bench", *(n for n, p in modules().items() if n.count(".") == 1 and p.parent == FOLDERS["bench"])]


def group(name: str) -> str:
    """The package a module belongs to for the package-level graph: core, a track, a track's attacks/defenses."""
    if name in core_modules():
        return "core"
    parts = name.split(".")
    if _under(name, "bench.tracks"):
        return ".".join(parts[:3])  # bench.tracks itself, or bench.tracks.<track>
    return ".".join(parts[:2])  # bench_attacks(.<track>), bench_defenses(.<track>)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> ... -> a) per strongly connected component of more than one node (Tarjan)."""
    index, low, stack, on_stack, comps = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    found = []
    for comp in comps:  # a shortest cycle through the component's first node, by breadth-first search
        start = min(comp)
        parent, todo = {start: None}, [start]
        while todo:
            v = todo.pop(0)
            nxt = sorted(w for w in edges.get(v, ()) if w in comp)
            if start in nxt:
                path = [v]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                found.append([*reversed(path), start])
                break
            for w in nxt:
                if w not in parent:
                    parent[w] = v
                    todo.append(w)
    return sorted(found)


def test_the_graph_sees_the_layout():
    """The walker finds the packages, their modules and their imports (guards the tests below against an empty
    graph passing vacuously)."""
    mods = modules()
    assert {"bench", "bench.runner", "bench.plugins", "bench.tracks", "bench_attacks", "bench_defenses"} <= set(mods)
    assert any(n.startswith("bench.tracks.") for n in mods)
    assert "bench.plugins" in graph()["bench.runner"]
    assert "core" == group("bench.runner") == group("bench")


def test_the_walker_resolves_imports_and_finds_cycles():
    """The helpers on made-up input: relative and function-level imports, ``from pkg import module``, cycles."""
    source = ("import os\nfrom . import b\nfrom .b import f\nfrom .. import c\nfrom ..c import d, g\n"
              "def h():\n    import p.q.r\n")
    known = {"p", "p.q", "p.q.a", "p.q.b", "p.c", "p.c.d"}
    got = [imp for imp, _ in parse_imports(source, "p.q.a", False, known)]
    assert got == ["os", "p.q.b", "p.q.b", "p.c", "p.c.d", "p.c", "p.q.r"]
    assert [imp for imp, _ in parse_imports("from . import a\n", "p.q", True, known)] == ["p.q.a"]
    with pytest.raises(AssertionError, match="beyond"):
        parse_imports("from ... import x\n", "p.q", False, known)
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}}
    assert cycles(edges) == [["a", "b", "c", "a"], ["e", "f", "e"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_core_imports_no_track_or_plugin_code():
    offenders = [f"{name}:{line} imports {imp}" for name in core_modules() for imp, line in raw_imports(name)
                 if any(_under(imp, prefix) for prefix in TRACK_CODE)]
    assert not offenders, "core modules import track/plugin code:\n" + "\n".join(offenders)


def test_no_import_cycles_between_modules():
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_no_import_cycles_between_packages():
    edges: dict[str, set[str]] = {}
    witness: dict[tuple[str, str], str] = {}
    for name, imported in graph().items():
        for imp in imported:
            a, b = group(name), group(imp)
            if a != b:
                edges.setdefault(a, set()).add(b)
                witness.setdefault((a, b), f"{name} imports {imp}")
    found = cycles(edges)
    report = [" -> ".join(c) + "\n    " + "\n    ".join(witness[(a, b)] for a, b in zip(c, c[1:])) for c in found]
    assert not found, "package-level import cycles:\n" + "\n".join(report)


def builtin_entries(group_name: str, prefix: str) -> list:
    return sorted((ep for ep in entry_points(group=group_name) if ep.value.startswith(prefix)), key=lambda e: e.name)


def test_every_builtin_track_has_its_three_folders():
    tracks = builtin_entries("bench.tracks", "bench.tracks.")
    assert tracks, "no built-in track registered (is bench installed?)"
    problems = []
    for ep in tracks:
        pkg = ep.name.replace("-", "_")
        for folder in (ROOT / "bench" / "tracks" / pkg, ROOT / "attacks" / pkg, ROOT / "defenses" / pkg):
            if not (folder / "__init__.py").is_file():
                problems.append(f"track {ep.name}: no package {folder.relative_to(ROOT)}/")
        if not _under(ep.value.partition(":")[0], f"bench.tracks.{pkg}"):
            problems.append(f"track {ep.name}: registered as {ep.value}, outside bench.tracks.{pkg}")
    assert not problems, "\n".join(problems)


def test_every_builtin_plugin_lives_in_its_tracks_folder():
    """Imports the plugin modules (torch and the tracks' libraries): a few seconds."""
    from bench.registry import Registry

    registry = Registry()
    problems = []
    for kind, group_name, prefix in (("attack", "bench.attacks", "bench_attacks."),
                                     ("defense", "bench.defenses", "bench_defenses.")):
        entries = builtin_entries(group_name, prefix)
        assert entries, f"no built-in {kind} registered"
        for ep in entries:
            folder = ep.value.partition(":")[0].split(".")[1]
            cls = registry.load(kind, ep.name)
            if cls.track.replace("-", "_") != folder:
                problems.append(f"{kind} {ep.name} ({ep.value}) declares track {cls.track!r} but lives in "
                                f"{prefix}{folder}")
    assert not problems, "\n".join(problems)


def test_no_module_is_too_long():
    lengths = {path.relative_to(ROOT).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
               for path in modules().values()}
    offenders = [f"{rel}: {n} lines" for rel, n in sorted(lengths.items()) if n > MAX_LINES and rel not in KNOWN_LONG]
    assert not offenders, f"modules over {MAX_LINES} lines (split them):\n" + "\n".join(offenders)
    stale = [rel for rel in KNOWN_LONG if lengths.get(rel, 0) <= MAX_LINES]
    assert not stale, f"no longer over {MAX_LINES} lines (or gone), drop from KNOWN_LONG: {stale}"
