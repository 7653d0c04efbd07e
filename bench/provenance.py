"""The provenance rule of ``bench leaderboard --check``: every table rests on records that one clean commit of
the code could reproduce.

A *table* is one profile section of one leaderboard file: the newest record of each cell of a (track, dataset,
profile) -- the records that section shows. It violates the rule when

1. a record's ``git_commit`` is missing or ends in ``+dirty`` (no commit holds the code that ran), or
2. its records ran more than one version of the code they depend on: some module (a plugin's own module, its
   helpers, the numerical core; ``bench.hashing.code_hashes``) has two different source hashes among the
   records that carry ``code``, or evaluated two trainings of one model (different ``weights_sha256`` under
   one ``model_key``: GPU training is not bit-reproducible). Records that differ only in commit, with identical
   code hashes, are fine
   (a README edit between two runs invalidates nothing); records without ``code`` (written before it
   existed) must then all share one commit.
"""
from __future__ import annotations

from collections import defaultdict

from bench.tables import RUN_STATUSES, dedupe


def table_name(record: dict) -> str:
    return f"{record['track']}/{record['dataset']['name']}.md ({record['profile']} profile)"


def _short(commit: str | None) -> str:
    return "unknown" if not commit else commit[:7] + ("+dirty" if commit.endswith("+dirty") else "")


def table_problems(records: list[dict]) -> list[str]:
    """Why one table's records break the rule (empty: they keep it)."""
    problems = []
    dirty = sorted({_short(r.get("git_commit")) for r in records
                    if not r.get("git_commit") or r["git_commit"].endswith("+dirty")})
    if dirty:
        n = sum(1 for r in records if not r.get("git_commit") or r["git_commit"].endswith("+dirty"))
        problems.append(f"{n} record(s) from a dirty or unknown commit ({', '.join(dirty)})")
    versions: dict[str, set[str]] = defaultdict(set)
    for r in records:
        for module, digest in (r.get("code") or {}).items():
            versions[module].add(digest)
    mixed = sorted(m for m, digests in versions.items() if len(digests) > 1)
    if mixed:
        problems.append(f"more than one code version of {', '.join(mixed)}")
    weights: dict[str, set[str]] = defaultdict(set)
    for r in records:
        if digest := (r.get("defense") or {}).get("weights_sha256"):
            weights[r["defense"].get("model_key", "")].add(digest)
    if mixed_models := sorted(k for k, digests in weights.items() if len(digests) > 1):
        problems.append(f"cells of {len(mixed_models)} model(s) evaluated on different trainings (weights sha256 "
                        f"differ; model key {', '.join(k[:12] for k in mixed_models)})")
    legacy = {r.get("git_commit") for r in records if not r.get("code")}
    commits = {r.get("git_commit") for r in records}
    if legacy and len(commits) > 1:
        problems.append(f"records without code hashes from {len(commits)} commits "
                        f"({', '.join(sorted(_short(c) for c in commits))})")
    return problems


def violations(records: list[dict]) -> dict[str, list[str]]:
    """{table name: problems} for every table that breaks the rule."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["track"], r["dataset"]["name"], r["profile"])].append(r)
    out = {}
    for key in sorted(groups):
        shown = dedupe(groups[key], statuses=RUN_STATUSES)
        if shown and (problems := table_problems(shown)):
            out[table_name(shown[0])] = problems
    return out
