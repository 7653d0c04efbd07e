"""Leaderboard files as a pure function of result records.

Layout: ``<results>/<track>/<file>``, where each registered track decides its files (``Track.tables`` and
``Track.figures``); records of a track that no installed package registers get the generic table. The records
are read once; what tables may know beyond them (headline eps, reported paper numbers, the data for figures)
comes from the installed plugins, as ``Facts``. Identical records give byte-identical md and csv.

The writer removes only files that it wrote itself before (listed in ``<results>/written-by-bench.json``), so
nothing else in the results folder is ever touched.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from bench.errors import UsageError
from bench.plugins import Facts
from bench.records import scan_records
from bench.tables import RUN_STATUSES, dedupe, generic_tables, md_row, profile_key

MANIFEST = "written-by-bench.json"  # the files the last `bench leaderboard` wrote, relative to the results root
CHECKED_SUFFIXES = (".md", ".csv")  # PNG bytes vary across matplotlib versions: not compared by --check


def read_records(results: Path) -> tuple[list[dict], list[str]]:
    """(valid records, one line per damaged or tampered record: excluded from every table). Each record's
    ``artifacts`` is resolved against ``results`` here, so that tables find the files from any working folder."""
    records = results / "records"
    if not records.is_dir():
        raise UsageError(f"no records under {records}; run `bench run` first")
    valid, damaged = scan_records(records)
    valid = [{**r, "artifacts": (results / r["artifacts"]).as_posix()} if r.get("artifacts") else r for r in valid]
    return valid, [f"{path.relative_to(results).as_posix()} (damaged record, left out: {why})"
                   for path, why in damaged]


def _newest_per_profile(records: list[dict], statuses: tuple[str, ...]) -> list[dict]:
    """``dedupe`` within each profile: a quick and a full record of one cell are two cells."""
    profiles = sorted({r["profile"] for r in records}, key=profile_key)
    return [r for p in profiles for r in dedupe([r for r in records if r["profile"] == p], statuses=statuses)]


def failures(records: list[dict]) -> list[str]:
    """A section naming the cells whose newest record failed (never a silent "-" in a table)."""
    failed = [r for r in _newest_per_profile(records, ("ok", "failed")) if r["status"] == "failed"]
    if not failed:
        return []
    lines = ["## Failed cells", "", "Cells whose last run failed; their numbers are missing from the tables above.",
             "", md_row(["Profile", "Defense", "Attack", "Seed", "Error", "Log"]), md_row(["---"] * 6)]
    for r in sorted(failed, key=lambda r: (r["profile"], r["defense"]["name"], r["attack"]["name"], r["seed"])):
        error = r.get("error") or {}
        message = f"{error.get('type', '?')}: {error.get('message', '')}".strip()
        lines.append(md_row([r["profile"], r["defense"]["name"], r["attack"]["name"], str(r["seed"]),
                             message[:200].replace("\n", " "), f"`{error.get('log', '')}`"]))
    return ["", *lines, ""]


def not_run(records: list[dict], suites: dict[str, dict], every_track: list[dict] | None = None) -> list[str]:
    """A section naming the cells of the track's suites that have no record (a run cut short, a suite never run
    in full), so a missing row, column or seed is never read as a result. ``records``: the track's records of
    one dataset; ``every_track``: that dataset's records of all tracks, where a suite's cell may sit. A suite
    counts for a dataset and profile once one of its cells there has a record; a cell two suites ask for is
    named once, under the first."""
    have = {(r["profile"], r["defense"]["name"], r["attack"]["name"], r["seed"])
            for r in _newest_per_profile(every_track or records, RUN_STATUSES)}
    dataset = records[0]["dataset"]["name"] if records else None
    named, rows = set(), []
    for suite, grid in suites.items():
        if dataset not in grid.get("datasets", ()):
            continue
        profile, seeds = grid.get("profile", "quick"), tuple(grid.get("seeds") or (0,))
        cells = {(profile, d, a, s) for d in grid["defenses"] for a in grid["attacks"] for s in seeds}
        if not cells & have:
            continue
        for d in grid["defenses"]:
            missing = {a: [s for s in seeds if (profile, d, a, s) not in have and (profile, d, a, s) not in named]
                       for a in grid["attacks"]}
            missing = {a: ss for a, ss in missing.items() if ss}
            named |= {(profile, d, a, s) for a, ss in missing.items() for s in ss}
            if len(missing) == len(grid["attacks"]) > 1 and len({tuple(ss) for ss in missing.values()}) == 1:
                missing = {f"all {len(missing)}": next(iter(missing.values()))}  # the whole model job
            rows += [(profile, suite, d, a, ss) for a, ss in missing.items()]
    if not rows:
        return []
    lines = ["## Cells not run", "", "Cells of the track's suites with no record here: the tables above leave them "
             "out (a missing row or column, or a mean over fewer seeds).", "",
             md_row(["Profile", "Suite", "Defense", "Attack", "Seeds"]), md_row(["---"] * 5)]
    lines += [md_row([p, suite, d, a, ", ".join(map(str, ss))])
              for p, suite, d, a, ss in sorted(rows, key=lambda row: profile_key(row[0]))]
    return ["", *lines, ""]


def facts(registry, records: list[dict]) -> Facts:
    """Headline eps and reported numbers of the plugins named in the records, and a dataset loader."""
    from bench.hparams import build_params

    headline, reported = {}, {}
    for kind, name in sorted({(k, r[k]["name"]) for r in records for k in ("dataset", "defense")}):
        try:
            cls = registry.load(kind, name)
        except UsageError:
            continue  # a plugin no longer installed: its records still tabulate, with every eps
        if kind == "dataset":
            headline[name] = dict(cls.epsilons)
        elif cls.reported:
            reported[name] = cls.reported

    def load(name: str, params: dict):
        try:
            cls = registry.load("dataset", name)
            dataset = cls(build_params(cls.Params, name, params))
            dataset.check()
            return dataset.load()
        except UsageError:
            return None

    return Facts(headline=headline, reported=reported, load=load)


def _by_track(records: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[r["track"]].append(r)
    return dict(sorted(groups.items()))


def expected(registry, records: list[dict], known: Facts) -> dict[str, str]:
    """Every track's table files: {"<track>/<file>": text}."""
    texts = {}
    by_dataset: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_dataset[r["dataset"]["name"]].append(r)
    for name, recs in _by_track(records).items():
        track = registry.track(name)
        files = track.tables(recs, known) if track is not None else generic_tables(recs)
        suites = track.suites if track is not None else {}
        for dataset in sorted({r["dataset"]["name"] for r in recs}):
            of_dataset = [r for r in recs if r["dataset"]["name"] == dataset]
            # a suite's cell may be recorded by another track (an image attack on a domain-shift model)
            missing = not_run(of_dataset, suites, by_dataset[dataset])
            if (note := missing + failures(of_dataset)) and f"{dataset}.md" in files:
                files[f"{dataset}.md"] = files[f"{dataset}.md"].rstrip("\n") + "\n" + "\n".join(note)
        texts.update({f"{name}/{rel}": text for rel, text in files.items()})
    return texts


def _manifest(results: Path) -> list[str]:
    path = results / MANIFEST
    try:
        listed = json.loads(path.read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in listed if isinstance(f, str)]


def regenerate(registry, results: Path, known: Facts | None = None) -> list[Path]:
    """Write every table and figure; remove the files an earlier run wrote that the records no longer give.
    ``known`` replaces what the installed plugins tell (tests)."""
    records, damaged = read_records(results)
    for line in damaged:
        print(f"bench: warning: {line}", file=sys.stderr)
    known = known or facts(registry, records)
    written = []
    for rel, text in expected(registry, records, known).items():
        path = results / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
        written.append(path)
    for name, recs in _by_track(records).items():
        track = registry.track(name)
        if track is not None:
            written += track.figures(recs, results / name, known)
    now = sorted(p.relative_to(results).as_posix() for p in written)
    for stale in sorted(set(_manifest(results)) - set(now)):
        path = results / stale
        if ".." not in Path(stale).parts and path.is_file():
            path.unlink()
    (results / MANIFEST).write_text(json.dumps({"files": now}, indent=1) + "\n")
    return sorted(written)


def check(registry, results: Path, known: Facts | None = None, provenance: bool = True) -> list[str]:
    """Damaged records and tables (md, csv) that are out of date, missing or extra, as ``"<path> (reason)"``,
    and (``provenance``) tables that break the provenance rule (``bench.provenance``), as ``"provenance: <table>:
    <reason>"``; empty when the folder matches the records and every table rests on one clean code version."""
    from bench.provenance import violations

    records, problems = read_records(results)
    if provenance:
        problems += [f"provenance: {table}: {why}" for table, whys in violations(records).items() for why in whys]
    texts = expected(registry, records, known or facts(registry, records))
    listed = {f for f in _manifest(results) if f.endswith(CHECKED_SUFFIXES)}
    for rel in sorted(set(texts) | listed):
        path = results / rel
        if not path.is_file():
            problems.append(f"{rel} (missing)")
        elif rel not in texts:
            problems.append(f"{rel} (extra: no records give it)")
        elif path.read_bytes() != texts[rel].encode("utf-8"):
            problems.append(f"{rel} (differs from the records)")
    return problems
