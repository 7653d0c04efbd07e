"""Plugin discovery through entry points, lazily: listing reads metadata only; a plugin module is imported
the first time its class is asked for."""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points

from bench.errors import PluginImportError, UsageError

GROUPS = {"track": "bench.tracks", "defense": "bench.defenses", "attack": "bench.attacks", "dataset": "bench.datasets"}


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    target: str  # "module:attr"
    origin: str  # "distribution version"


class Registry:
    """All plugins of the four kinds. ``extra`` adds entries as {kind: {name: "module:attr"}} (tests)."""

    def __init__(self, extra: dict[str, dict[str, str]] | None = None):
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in GROUPS}
        for kind, group in GROUPS.items():
            for ep in entry_points(group=group):
                dist = getattr(ep, "dist", None)
                origin = f"{dist.name} {dist.version}" if dist else "unknown"
                self._add(Entry(kind, ep.name, ep.value, origin))
        for kind, items in (extra or {}).items():
            for name, target in items.items():
                self._add(Entry(kind, name, target, "extra"))
        self._loaded: dict[tuple[str, str], type] = {}

    def _add(self, entry: Entry) -> None:
        existing = self._entries[entry.kind].get(entry.name)
        if existing is not None and existing.target != entry.target:
            raise UsageError(
                f"duplicate {entry.kind} name {entry.name!r}: {existing.target} ({existing.origin}) "
                f"and {entry.target} ({entry.origin})")
        self._entries[entry.kind][entry.name] = entry

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def entries(self, kind: str) -> list[Entry]:
        return [self._entries[kind][n] for n in self.names(kind)]

    def entry(self, kind: str, name: str) -> Entry:
        try:
            return self._entries[kind][name]
        except KeyError:
            close = difflib.get_close_matches(name, self.names(kind), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(self.names(kind))}"
            raise UsageError(f"unknown {kind} {name!r}{hint}") from None

    def load(self, kind: str, name: str) -> type:
        """The plugin class, imported on first use, with its entry-point name attached."""
        key = (kind, name)
        if key not in self._loaded:
            entry = self.entry(kind, name)
            module_name, _, attr = entry.target.partition(":")
            try:
                obj = importlib.import_module(module_name)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except Exception as exc:  # any failure to import is the plugin's, and is named
                raise PluginImportError(
                    f"{kind} plugin {name!r} ({entry.target}, from {entry.origin}) failed to import: "
                    f"{type(exc).__name__}: {exc}") from exc
            # A subclass per name, so that one class registered under two names keeps both.
            self._loaded[key] = type(obj.__name__, (obj,), {"name": name, "__module__": obj.__module__,
                                                             "__doc__": obj.__doc__})
        return self._loaded[key]

    def create(self, kind: str, name: str, params=None):
        return self.load(kind, name)(params)

    def track(self, name: str):
        """The track registered under ``name`` (an instance), or None when no installed package registers it
        (its records still tabulate, with the generic table)."""
        if name not in self._entries["track"]:
            return None
        return self.load("track", name)()

    def tracks(self) -> list:
        return [self.track(name) for name in self.names("track")]
