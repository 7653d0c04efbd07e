"""Run a plan on a Ray cluster (``bench run --executor ray [--address ADDR]``).

Each model job becomes one training task and a few evaluation tasks that take the training task's result as
an argument, so Ray starts them once the model is in the cache, and skips them (raising the training error)
when training failed. A task requests one CPU, and one GPU when the run is on CUDA. Tasks build their own
Registry and Runner on the same results folder and plan the same selection again, so jobs and cells travel as
indices and results as JSON strings: no model or tensor crosses processes. The model travels through the cache
folder, which is why that folder must be on a filesystem shared by every node (README, "Running on a Ray
cluster").

Cells that share per-example results (a worst case with its component attacks, a certifier with its companion
attack) run in one evaluation task, as in a sequential run, so the records are the same. A task that raises or
whose worker dies fails its unfinished cells; the other tasks finish, and rerunning completes what is missing.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from bench.errors import UsageError
from bench.executors import WorkerDied


def require_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray, which is not installed: pip install 'bench[ray]'") from None
    return ray


def run_ray(runner, selection, the_plan, address: str | None = None, device: str = "auto",
            extra: dict | None = None) -> int:
    """Run ``the_plan`` (planned from ``selection``) as Ray tasks; ``runner`` (the driver's) reads finished
    records, writes the records of failed tasks and collects the summary rows. Connects to ``address``, or uses
    the already initialised Ray, or starts a local one (stopped at the end). Returns 0 when every cell
    succeeded, 1 when some failed."""
    from bench.runner import ModelJob, Plan

    ray = require_ray()
    profile = the_plan.profile
    rows: dict[tuple[int, int], list] = {}
    pending = []
    for i, job in enumerate(the_plan.jobs):
        todo = [k for k, cell in enumerate(job.cells) if not runner.done(job, cell, profile)]
        if todo:
            pending.append((i, todo))
        else:
            runner.execute(Plan(profile, [job]))  # only reports "skipped" and reads the records
            rows[(i, 0)], runner.summary = runner.summary, []
    started = False
    try:
        if pending:
            started = _connect(ray, address)
            gpus = ray.cluster_resources().get("GPU", 0)
            if device == "auto":
                device = "cuda" if gpus else "cpu"
            if device == "cuda" and not gpus:
                raise UsageError("--device cuda: the Ray cluster has no GPU")
            spec = json.dumps({"selection": dataclasses.asdict(selection), "extra": extra or {},
                               "results": str(runner.results.resolve()), "device": device,
                               "force": runner.force, "run_id": runner.run_id})
            # No retries: a task that crashes its worker would most likely crash it again.
            options = {"num_cpus": 1, "num_gpus": 1 if device == "cuda" else 0, "max_retries": 0}
            train = ray.remote(**options)(_train)
            evaluate = ray.remote(**options)(_evaluate)
            tasks = {}
            for i, todo in pending:
                trained = train.remote(spec, i)
                for group in _groups(the_plan.jobs[i].cells, todo):
                    tasks[evaluate.remote(spec, i, group, trained)] = (i, group, trained)
            runner.say(f"{len(pending)} training and {len(tasks)} evaluation task(s) on Ray "
                       f"({_describe(ray.cluster_resources())}; device {device})")
            while tasks:
                [done], _ = ray.wait(list(tasks), num_returns=1)
                i, group, trained = tasks.pop(done)
                try:
                    result = json.loads(ray.get(done))
                    rows[(i, group[0])] = result["rows"]
                    runner.failed += result["failed"]
                except Exception as exc:
                    stage, cause = _why(ray, exc, trained)
                    job = the_plan.jobs[i]
                    runner.fail_unfinished(ModelJob(job.dataset, job.defense, job.seed,
                                                    [job.cells[k] for k in group]), profile, cause, stage)
                    rows[(i, group[0])], runner.summary = runner.summary, []
    finally:
        if started:
            ray.shutdown()
    runner.summary = [row for key in sorted(rows) for row in rows[key]]
    return 1 if runner.failed else 0


def _connect(ray, address: str | None) -> bool:
    """Connect to Ray; True when this call started it (and must stop it)."""
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "include_dashboard": False}
    if address:
        try:
            ray.init(address=address, **quiet)
        except ConnectionError as exc:
            raise UsageError(f"--address {address}: no Ray cluster reachable there ({exc})") from None
    else:
        # A new local instance (not a cluster `ray start` left on this machine, which needs --address); it runs
        # this interpreter's code: its workers import what the driver can import.
        ray.init(address="local", runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}},
                 **quiet)
    return True


def _describe(resources: dict) -> str:
    return ", ".join(f"{resources.get(k, 0):g} {k}" for k in ("CPU", "GPU"))


def _groups(cells, todo: list[int]) -> list[list[int]]:
    """The evaluation tasks of one job, as lists of cell indices: one task per cell, except that cells sharing
    per-example results (a worst case and its components, a certifier and its companion) go together."""
    groups: list[tuple[set[str], list[int]]] = []
    for k in todo:
        attack = cells[k].attack
        names = {attack.name, *attack.components(), *([attack.companion] if hasattr(attack, "companion") else [])}
        members = [k]
        for group in [g for g in groups if g[0] & names]:
            groups.remove(group)
            names |= group[0]
            members += group[1]
        groups.append((names, sorted(members)))
    return sorted(members for _, members in groups)


def _why(ray, exc: Exception, trained) -> tuple[str, BaseException]:
    """(stage, exception) to record for an evaluation task that did not return."""
    stage = "evaluation"
    try:
        ray.get(trained)
    except Exception as train_exc:  # the evaluation never ran: its training task failed
        stage, exc = "training", train_exc
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.cause if isinstance(exc.cause, BaseException) else RuntimeError(str(exc))
        cause.__cause__ = RemoteTraceback(str(exc))  # the log file then shows where it raised
        return stage, cause
    # The worker process died (crash, os._exit, out of memory) or its node was lost.
    return "worker", WorkerDied(f"the Ray worker running this {stage} task died: {exc}")


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a Ray task, as Ray reports it."""


# ---- in the Ray worker ------------------------------------------------------------------------------------------
_PLANS: dict[str, tuple] = {}  # spec -> (registry, plan): a reused worker plans each grid once


def _runner(spec_json: str):
    from bench.registry import Registry
    from bench.runner import Runner, Selection, plan

    spec = json.loads(spec_json)
    if spec_json not in _PLANS:
        registry = Registry(extra=spec["extra"])
        sel = Selection(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["selection"].items()})
        _PLANS[spec_json] = registry, plan(registry, sel)
    registry, the_plan = _PLANS[spec_json]
    # A fresh Runner per task: nothing (models, per-example results) carries over from an earlier task.
    runner = Runner(registry, Path(spec["results"]), device=spec["device"], force=spec["force"],
                    run_id=spec["run_id"])
    return runner, the_plan, spec


def _train(spec_json: str, job: int) -> str:
    """Train the job's model into the cache (or find it there)."""
    runner, the_plan, _ = _runner(spec_json)
    j = the_plan.jobs[job]
    _, meta = runner.model(j.defense, j.dataset, j.seed, the_plan.profile)
    return json.dumps({"cached": meta["cached"]})


def _evaluate(spec_json: str, job: int, cells: list[int], trained: str) -> str:
    """Evaluate the given cells of the job on the model its training task put in the cache."""
    from bench.runner import ModelJob, Plan, model_key

    runner, the_plan, spec = _runner(spec_json)
    j = the_plan.jobs[job]
    if not runner.cache.has(model_key(j.defense, j.dataset, j.seed)):
        raise RuntimeError(f"the model its training task saved is not in {runner.cache.root} on this node: the "
                           f"results folder must be on a filesystem shared by all nodes, at the same path")
    runner.force = False  # load, never retrain, here
    _, meta = runner.model(j.defense, j.dataset, j.seed, the_plan.profile)
    meta["cached"] = json.loads(trained)["cached"]  # the record says whether the training task trained it
    runner.force = spec["force"]  # --force: re-evaluate finished cells too
    runner.execute(Plan(the_plan.profile, [ModelJob(j.dataset, j.defense, j.seed, [j.cells[k] for k in cells])]))
    return json.dumps({"rows": runner.summary, "failed": runner.failed})
