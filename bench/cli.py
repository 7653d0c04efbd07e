"""The ``bench`` command line.

Importing this module (``bench --help``, ``bench list``) loads neither torch nor any plugin module: the
registry reads entry-point metadata only. Bad input prints one line and exits with code 2, writing nothing.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.errors import UsageError
from bench.validate import DEFAULT_BUDGET_CAP


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2 (argparse prints the usage too)
        raise UsageError(message)


def _results_path(text: str) -> Path:
    """``--results``: an empty string would silently mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path; give the results folder, e.g. --results results")
    return Path(text)


def check_results_writable(results: Path) -> None:
    """Refuse a ``--results`` that cannot be written (a file, a read-only folder, /proc), before any compute:
    make the folder (with its missing parents), create and delete a file in it, and remove the folders that
    were made for the probe, so that a refused run leaves nothing behind. Runs started side by side on one new
    folder race to make and remove it: a probe that meets the other's folder appearing or vanishing is retried."""
    for attempt in range(3):
        try:
            return _probe_writable(results)
        except (FileExistsError, FileNotFoundError) as exc:
            error = exc
            time.sleep(0.1 * (attempt + 1))
    raise UsageError(f"--results {results}: cannot write there ({error.strerror or error}); "
                     f"give a folder you can write to")


def _probe_writable(results: Path) -> None:
    missing = []  # results and its parents that do not exist yet, innermost first
    for path in (results, *results.parents):
        if path.exists():
            if not path.is_dir():
                what = "is" if path == results else f"is inside {path}, which is"
                raise UsageError(f"--results {results}: {what} a file, not a folder; give a folder")
            break
        missing.append(path)
    made: list[Path] = []  # innermost first, the order to remove them in
    try:
        for path in reversed(missing):
            path.mkdir()
            made.insert(0, path)
        fd, probe = tempfile.mkstemp(prefix=".bench-write-probe-", dir=results)
        os.close(fd)
        os.unlink(probe)
    except (FileExistsError, FileNotFoundError):
        raise  # another run making or removing the same folders: the caller tries again
    except OSError as exc:
        raise UsageError(f"--results {results}: cannot write there ({exc.strerror or exc}); "
                         f"give a folder you can write to") from None
    finally:
        for path in made:
            try:
                path.rmdir()
            except OSError:
                pass


def _parser(suite_names) -> argparse.ArgumentParser:
    p = _Parser(prog="bench", description="Benchmark defenses against attacks on datasets; write leaderboards.")
    p.add_argument("--results", type=_results_path, default=Path(os.environ.get("BENCH_RESULTS") or "results"),
                   help="results root: records/, logs/, cache/ and the leaderboard tables (default: ./results, "
                        "or $BENCH_RESULTS); the repository's leaderboards/ folder is one such root")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    ls = sub.add_parser("list", help="registered tracks, defenses, attacks and datasets, with their origin")
    ls.add_argument("kind", nargs="?", choices=("tracks", "defenses", "attacks", "datasets"))
    ls.add_argument("--long", action="store_true",
                    help="also import each plugin to show its track and capabilities")
    ls.add_argument("--json", action="store_true", help="the same as JSON, for scripts")

    info = sub.add_parser("info", help="one plugin's documentation, capabilities and hyperparameters")
    info.add_argument("name")

    run = sub.add_parser("run", help="train (once, cached) and evaluate a grid; one record per cell")
    run.add_argument("--suite", help="a predefined grid (each track declares its own): " + ", ".join(suite_names))
    run.add_argument("--defense", nargs="+", default=[], metavar="D")
    run.add_argument("--attack", nargs="+", default=[], metavar="A")
    run.add_argument("--dataset", nargs="+", default=[], metavar="S")
    run.add_argument("--seed", nargs="+", type=int, default=[], metavar="N")
    run.add_argument("--profile", choices=("smoke", "quick", "full"))
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                     help="override a hyperparameter, [plugin.]field=JSON (repeatable)")
    run.add_argument("--data-root", help="dataset files in torchvision's layout")
    run.add_argument("--force", action="store_true", help="retrain and re-evaluate even if cached/finished")
    run.add_argument("--no-budget-cap", action="store_true",
                     help=f"allow integer budgets (steps, epochs, iterations, restarts, queries, batches) above "
                          f"{DEFAULT_BUDGET_CAP:,}, the sanity cap that catches typos such as steps=1e20")
    run.add_argument("--executor", choices=("local", "ray"), default="local",
                     help="where jobs run: local processes (default), or Ray tasks (pip install 'bench[ray]'): "
                          "a local Ray instance, or the cluster at --address")
    run.add_argument("--address", metavar="ADDR",
                     help="with --executor ray: the Ray cluster to use (e.g. 'auto', or HOST:6379 of `ray start "
                          "--head`); results folder and data must be on every node at the same path")
    run.add_argument("--jobs", type=_jobs, default=None, metavar="N|auto",
                     help="model jobs (defense x dataset x seed, each with all its cells) in N parallel worker "
                          "processes; with CUDA they share the visible GPUs as lanes. 'auto': one per core on the "
                          "CPU; with CUDA, free GPU memory / estimated lane peak (1 GiB + 64x the largest model's "
                          "weights), at most 8 a GPU, one per model job and one per core. Default: auto with "
                          "--device cuda (a single lane runs in this process), else 1 (sequential, in this process)")

    lb = sub.add_parser("leaderboard", help="regenerate the leaderboard tables from the records")
    for command in (run, lb):  # the global option is also accepted after the subcommand
        command.add_argument("--results", type=_results_path, default=argparse.SUPPRESS,
                             help="as before the subcommand")
    lb.add_argument("--check", action="store_true",
                    help="fail (exit 1) when the tables on disk differ from what the records give, or when a "
                         "table rests on a record of a dirty or unknown commit, or on records that ran more than "
                         "one version of the code they depend on (a module with two source hashes; records "
                         "without code hashes: more than one commit)")
    lb.add_argument("--no-provenance", action="store_true",
                    help="with --check: compare tables and records only, not the provenance rule (while "
                         "committed tables still rest on stale records)")
    return p


def _jobs(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'auto', not {text!r}") from None


def default_jobs(jobs, device: str, sequential_only: bool = False):
    """``--jobs`` as given, else its default: 'auto' with ``--device cuda``, where one process leaves a GPU
    mostly idle on the suite's small, launch-bound models; else 1 (sequential), so CPU runs are unchanged and
    ``--device auto`` runs the same processes whatever the machine has."""
    if jobs is not None:
        return jobs
    return "auto" if device == "cuda" and not sequential_only else 1


def cmd_list(args, registry) -> int:
    import json

    kinds = [args.kind[:-1]] if args.kind else ["track", "defense", "attack", "dataset"]
    rows = {kind: [] for kind in kinds}
    for kind in kinds:
        for entry in registry.entries(kind):
            row = {"name": entry.name, "target": entry.target, "origin": entry.origin}
            if args.long:
                row["capabilities"] = {k: v if isinstance(v, (str, bool, int, float, type(None))) else list(v)
                                       for k, v in registry.load(kind, entry.name).capabilities().items()}
            rows[kind].append(row)
    if args.json:
        print(json.dumps({f"{k}s": v for k, v in rows.items()}, indent=1))
        return 0
    # Columns as wide as their longest entry, whatever the plugins' names.
    every = [r for kind_rows in rows.values() for r in kind_rows]
    width = max((len(r["name"]) for r in every), default=0)
    target = max((len(r["target"]) for r in every), default=0)
    for kind, kind_rows in rows.items():
        print(f"{kind}s:")
        for r in kind_rows:
            if args.long:
                caps = ", ".join(f"{k}={v}" for k, v in r["capabilities"].items())
                print(f"  {r['name']:<{width}}  {caps}  [{r['origin']}]")
            else:
                print(f"  {r['name']:<{width}}  {r['target']:<{target}}  {r['origin']}")
    return 0


def cmd_info(args, registry) -> int:
    import dataclasses
    import inspect

    matches = [k for k in ("track", "defense", "attack", "dataset") if args.name in registry.names(k)]
    if not matches:
        registry.entry("attack" if args.name not in registry.names("defense") else "defense", args.name)
    for kind in matches:
        cls = registry.load(kind, args.name)
        print(f"{kind} {args.name}  ({registry.entry(kind, args.name).origin})")
        module_doc = inspect.getmodule(cls).__doc__ or ""
        print("\n".join(part for part in (inspect.cleandoc(module_doc), inspect.cleandoc(cls.__doc__ or "")) if part))
        print("capabilities: " + ", ".join(f"{k}={v}" for k, v in cls.capabilities().items()))
        if kind == "track":
            for name, grid in cls.suites.items():
                print(f"  suite {name}: " + "; ".join(f"{k} {v}" for k, v in grid.items()))
            continue
        print("hyperparameters (defaults; profile overrides):")
        for f in dataclasses.fields(cls.Params):
            per_profile = {p: o[f.name] for p, o in cls.profiles.items() if f.name in o}
            extra = f"  {per_profile}" if per_profile else ""
            print(f"  {f.name} = {f.default!r}{extra}")
    return 0


def cmd_run(args, registry) -> int:
    from bench import validate
    from bench.runner import Runner, Selection, format_summary, plan
    from bench.suites import suites

    SUITES = suites(registry)

    grid = {"defenses": (), "attacks": (), "datasets": (), "seeds": (), "profile": "quick"}
    if args.suite:
        if args.suite not in SUITES:
            raise UsageError(f"unknown suite {args.suite!r}; choose one of {', '.join(sorted(SUITES))}")
        grid.update(SUITES[args.suite])
    # Explicit flags replace the suite's entries.
    for flag, key in (("defense", "defenses"), ("attack", "attacks"), ("dataset", "datasets"), ("seed", "seeds")):
        if getattr(args, flag):
            grid[key] = tuple(getattr(args, flag))
    selection = Selection(defenses=tuple(grid["defenses"]), attacks=tuple(grid["attacks"]),
                          datasets=tuple(grid["datasets"]), seeds=tuple(grid["seeds"]) or (0,),
                          profile=args.profile or grid["profile"],
                          sets=tuple(grid.get("sets", ())) + tuple(args.sets),  # the user's --set last: it wins
                          data_root=args.data_root)
    if args.jobs not in (None, "auto") and args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {args.jobs}")
    if args.address and args.executor != "ray":
        raise UsageError("--address needs --executor ray")
    if args.executor == "ray":
        if args.jobs not in (None, 1):
            raise UsageError("--jobs is for --executor local; Ray runs as many tasks as the cluster has resources")
        from bench.executors_ray import require_ray

        require_ray()
    if args.no_budget_cap and (args.jobs not in (None, 1) or args.executor == "ray"):
        # Workers plan the grid again in fresh processes, where the cap is back (bench.validate.BUDGET_CAP).
        raise UsageError("--no-budget-cap works with sequential runs only (--jobs 1, --executor local)")
    validate.BUDGET_CAP = None if args.no_budget_cap else DEFAULT_BUDGET_CAP  # read by plan(); process-wide
    check_results_writable(args.results)
    the_plan = plan(registry, selection)  # every check happens here, before any compute or write
    # With Ray the driver only reads and writes records: the device is the workers' business.
    runner = Runner(registry, args.results, device="cpu" if args.executor == "ray" else args.device,
                    force=args.force)
    try:
        if args.executor == "ray":
            from bench.executors_ray import run_ray

            code = run_ray(runner, selection, the_plan, address=args.address, device=args.device)
        elif (jobs := default_jobs(args.jobs, args.device, sequential_only=args.no_budget_cap)) != 1:
            from bench.executors import run_parallel

            code = run_parallel(runner, selection, the_plan, jobs)
        else:
            code = runner.execute(the_plan)
    finally:
        print(format_summary(runner.summary))
    if runner.failed:
        print(f"{runner.failed} cell(s) failed; tracebacks in {args.results / 'logs'}", file=sys.stderr)
    return code


def cmd_leaderboard(args, registry) -> int:
    from bench.leaderboard import check, regenerate

    if args.results.exists() and not args.results.is_dir():
        raise UsageError(f"--results {args.results}: is a file, not a folder; give the results folder")
    if not args.check and (args.results / "records").is_dir():
        check_results_writable(args.results)  # the tables are written there

    if args.check:
        stale = check(registry, args.results, provenance=not args.no_provenance)
        for path in stale:
            print(path if path.startswith("provenance: ") else f"out of date: {path}")
        if stale:
            print("run `bench leaderboard` to regenerate the tables from the records; a provenance problem needs "
                  "the table's cells rerun from one clean commit", file=sys.stderr)
            return 1
        print("leaderboards match the records")
        return 0
    for path in regenerate(registry, args.results):
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        from bench.registry import Registry
        from bench.suites import suites

        registry = Registry()  # entry-point metadata; each track's package is imported for its suites
        args = _parser(sorted(suites(registry))).parse_args(argv)
        handler = {"list": cmd_list, "info": cmd_info, "run": cmd_run, "leaderboard": cmd_leaderboard}
        return handler[args.command](args, registry)
    except UsageError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; finished cells are saved, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
