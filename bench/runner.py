"""The grid runner.

``plan`` validates everything a run needs (names, compatibility, hyperparameters, data) before any compute and
raises ``UsageError`` on the first problem. ``Runner.execute`` then trains each (defense, dataset, seed,
hyperparameters) once -- or takes it from the cache -- and evaluates every requested attack on it, writing one
record per cell. Finished cells are skipped, so an interrupted run resumes; a failing plugin fails its cell
(recorded, traceback logged), not the grid.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from bench import hashing, hparams, validate
from bench.tables import metric_label
from bench.errors import InvariantViolation, NotCertifiable, UsageError, out_of_memory, out_of_memory_error
from bench.plugins import PROFILES, Attack, Certifier, Dataset, Defense, Evaluation, Evaluator
from bench.records import cell_folder, load_record, pack_mask, read_record, record_path, unpack_mask, write_record

# Core modules whose code changes every evaluation (they enter every cell's key); a plugin's own helpers are found
# by following its imports (bench.hashing).
EVAL_CODE = ("bench.evaluate", "bench.threat")
# A model whose input gradient is exactly zero for more than this share of its correctly classified test
# examples is flagged: gradient-based attacks see nothing there (AutoAttack's "many zero gradients").
ZERO_GRADIENT_SHARE = 0.1


@dataclasses.dataclass(frozen=True)
class Selection:
    defenses: tuple[str, ...]
    attacks: tuple[str, ...]
    datasets: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    profile: str = "quick"
    sets: tuple[str, ...] = ()
    data_root: str | None = None


@dataclasses.dataclass
class Cell:
    attack: Evaluation
    epsilons: tuple[float, ...]
    config_id: str
    key: str


@dataclasses.dataclass
class ModelJob:
    dataset: Dataset
    defense: Defense
    seed: int
    cells: list[Cell]
    whole: list[Cell] | None = None  # when the job is one part of a model's cells (lanes): all of them


@dataclasses.dataclass
class Plan:
    profile: str
    jobs: list[ModelJob]


def _origin(registry, kind: str, name: str) -> str:
    return registry.entry(kind, name).origin


def incompatibility(defense: type[Defense], dataset: type[Dataset], attack: type[Evaluation] | None = None) -> str | None:
    """Why the pair/triple cannot run together, or None."""
    if not set(defense.all_tracks()) & set(dataset.tracks):
        return f"defense {defense.name} (track {defense.track}) does not apply to dataset {dataset.name} " \
               f"(tracks {', '.join(dataset.tracks)})"
    if defense.modality != dataset.modality:
        return f"defense {defense.name} ({defense.modality}) does not apply to {dataset.modality} dataset {dataset.name}"
    if attack is None:
        return None
    if attack.track not in dataset.tracks:
        return f"attack {attack.name} (track {attack.track}) does not apply to dataset {dataset.name} " \
               f"(tracks {', '.join(dataset.tracks)})"
    if attack.track not in defense.all_tracks() or attack.consumes != defense.produces:
        return f"attack {attack.name} (track {attack.track}, consumes {attack.consumes}) cannot evaluate " \
               f"defense {defense.name} (track {defense.track}, produces {defense.produces})"
    if attack.modality != dataset.modality:
        return f"attack {attack.name} ({attack.modality}) does not apply to {dataset.modality} dataset {dataset.name}"
    if attack.norm is not None and attack.norm not in dataset.epsilons:
        return f"dataset {dataset.name} defines no {attack.norm} budget for attack {attack.name}"
    return None


def _compatible_names(registry, kind: str, test) -> list[str]:
    names = []
    for name in registry.names(kind):
        try:
            if test(registry.load(kind, name)) is None:
                names.append(name)
        except UsageError:
            pass  # a broken plugin is simply not suggested
    return names


def plan(registry, sel: Selection) -> Plan:
    if sel.profile not in PROFILES:
        raise UsageError(f"unknown profile {sel.profile!r}; choose one of {', '.join(PROFILES)}")
    if not (sel.defenses and sel.attacks and sel.datasets and sel.seeds):
        raise UsageError("nothing to run: give at least one --defense, --attack and --dataset (or --suite)")
    defenses = {n: registry.load("defense", n) for n in dict.fromkeys(sel.defenses)}
    attacks = {n: registry.load("attack", n) for n in dict.fromkeys(sel.attacks)}
    datasets = {n: registry.load("dataset", n) for n in dict.fromkeys(sel.datasets)}
    for kind, group in (("defense", defenses), ("attack", attacks), ("dataset", datasets)):
        for name, cls in group.items():
            tracks = cls.tracks if kind == "dataset" else cls.all_tracks() if kind == "defense" else (cls.track,)
            if missing := [t for t in tracks if registry.track(t) is None]:
                raise UsageError(f"{kind} {name} declares track {missing[0]!r}, which no installed package registers; "
                                 f"tracks: {', '.join(registry.names('track')) or 'none'}")

    for ds in datasets.values():
        for d in defenses.values():
            if why := incompatibility(d, ds):
                ok = _compatible_names(registry, "dataset", lambda c: incompatibility(d, c))
                raise UsageError(f"{why}; datasets compatible with {d.name}: {', '.join(ok) or 'none'}")
            for a in attacks.values():
                if why := incompatibility(d, ds, a):
                    ok = _compatible_names(registry, "attack", lambda c: incompatibility(d, ds, c))
                    raise UsageError(f"{why}; compatible attacks: {', '.join(ok) or 'none'}")

    by_name: dict[str, type] = {}
    for group in (defenses, attacks, datasets):
        for name, cls in group.items():
            if name in by_name:
                raise UsageError(f"{name!r} names two selected plugins; --set cannot tell them apart")
            by_name[name] = cls
    sets = list(sel.sets)
    if sel.data_root is not None:
        rooted = [n for n, c in datasets.items() if "root" in {f.name for f in dataclasses.fields(c.Params)}]
        if not rooted:
            raise UsageError("--data-root: none of the selected datasets reads files from a root")
        sets += [f"{n}.root={json.dumps(sel.data_root)}" for n in rooted]
    params = hparams.resolve(by_name, sel.profile, sets)
    validate.check_plan(registry, sel, params, datasets=datasets, defenses=defenses, attacks=attacks)

    dataset_objs = {n: c(params[n]) for n, c in datasets.items()}
    for ds in dataset_objs.values():
        ds.check()
    for name, cls in defenses.items():
        defense = cls(params[name])
        defense.check()
        for ds in dataset_objs.values():
            defense.check_data(ds.spec())

    jobs = []
    for ds in dataset_objs.values():
        for d_name, d_cls in defenses.items():
            for seed in sel.seeds:
                defense = d_cls(params[d_name])
                cells = []
                for a_name, a_cls in attacks.items():
                    attack = a_cls(params[a_name])
                    cells.append(make_cell(sel.profile, seed, ds, defense, attack,
                                           components(registry, attack, sel.profile)))
                jobs.append(ModelJob(ds, defense, seed, cells))
    return Plan(sel.profile, jobs)


def components(registry, attack: Evaluation, profile: str) -> list:
    """A composite attack's components (a worst case's attacks), each loaded with ``profile``'s hyperparameters;
    [] for any other evaluation."""
    if not isinstance(attack, Attack):
        return []
    out = []
    for name in attack.components():
        cls = registry.load("attack", name)
        out.append(cls(hparams.resolve({name: cls}, profile, [])[name]))
    return out


def make_cell(profile: str, seed: int, dataset: Dataset, defense: Defense, attack: Evaluation,
              parts: list = ()) -> Cell:
    """One cell: its eps (the dataset's budgets for the attack's norm, plus the sweep for curve attacks), the id
    of its config and the key of its result (config, model and code). A composite's result depends on its
    components (``parts``): their configs and code are in its key too."""
    eps = () if attack.norm is None else tuple(sorted(
        set(dataset.epsilons[attack.norm]) | (set(dataset.sweep.get(attack.norm, ())) if attack.curve else set())))
    config = {"profile": profile, "seed": seed, "dataset": _config(dataset), "defense": _config(defense),
              "attack": _config(attack), "epsilons": eps}
    if parts:
        config["components"] = [_config(p) for p in parts]
    config_id = hashing.digest(config)
    code = hashing.code_version(type(attack).__module__, *(type(p).__module__ for p in parts), *EVAL_CODE)
    key = hashing.digest({"config_id": config_id, "model": model_key(defense, dataset, seed), "code": code})
    return Cell(attack, eps, config_id, key)


def _composites_last(cell: Cell) -> bool:
    """Sort key: composites and certifiers after plain attacks, whose per-example results they reuse."""
    return not isinstance(cell.attack, Attack) or bool(cell.attack.components())


FINISHED = ("ok", "not_certifiable")  # a record with either status is a cell done


def _same_weights(record: dict, weights: str | None) -> bool:
    """False only when both the record and the caller name the model's weights, and they differ."""
    stored = (record.get("defense") or {}).get("weights_sha256")
    return weights is None or stored is None or stored == weights


def _config(plugin) -> dict[str, Any]:
    return {"name": plugin.name, "params": hparams.as_dict(plugin.params)}


def model_key(defense: Defense, dataset: Dataset, seed: int) -> str:
    code = hashing.code_version(type(defense).__module__, type(dataset).__module__)
    key = {"defense": _config(defense), "dataset": _config(dataset), "seed": seed, "code": code}
    if identity := defense.identity():  # e.g. the sha256 of a checkpoint file: its content, not its path
        key["identity"] = identity
    return hashing.digest(key)


# A cell that runs out of GPU memory is tried again this many times, after a pause growing by this many seconds.
OOM_RETRIES = 2
OOM_WAIT_S = 5.0


class Runner:
    def __init__(self, registry, results: Path, device: str = "auto", force: bool = False,
                 out=None, batch_size: int | None = None, run_id: str | None = None):
        import torch

        from bench.cache import ModelCache

        self.registry = registry
        self.results = results
        self.records = results / "records"
        self.logs = results / "logs"
        self.cache = ModelCache(results / "cache")
        self.artifacts = results / "artifacts"
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available")
        self.device = torch.device(device)
        self.force = force
        # One run, however many processes: with --force a model is trained again once per run, and the other
        # workers of the run (a split job's parts, students that need a teacher) load that training.
        self.run_id = run_id or uuid.uuid4().hex
        self.out = out
        # Evaluation batch: larger on a GPU, where small models are launch-bound.
        self.batch_size = batch_size or (2000 if self.device.type == "cuda" else 500)
        self._data: dict[str, Any] = {}
        self._models: dict[str, tuple[Any, dict]] = {}
        # Per model: {(attack definition, eps): per-example robust mask}, for composite evaluators.
        self._masks: dict[str, dict[tuple[str, float], Any]] = {}
        self.summary: list[dict[str, Any]] = []
        self.failed = 0
        self._reported: set[Path] = set()  # damaged records already named
        self._probes: dict[str, dict] = {}  # per model: the gradient-masking probe

    def say(self, msg: str) -> None:
        print(msg, file=self.out or sys.stdout, flush=True)

    # ---- data and models -------------------------------------------------------------------------------
    def data(self, dataset: Dataset):
        key = hashing.digest(_config(dataset))
        if key not in self._data:
            self._data[key] = dataset.load()
        return self._data[key]

    def model(self, defense: Defense, dataset: Dataset, seed: int, profile: str):
        """(model in eval mode on the device, metadata); trained once, then from the cache."""
        import torch

        from bench.cache import CorruptArtifact
        from bench.context import TrainContext

        key = model_key(defense, dataset, seed)
        if key in self._models:
            return self._models[key]
        data = self.data(dataset)
        torch.manual_seed(seed)  # weight initialisation
        model = defense.build(data.spec)
        with self.cache.lock(key):  # parallel workers: one trains, the others then load
            meta = None
            if self.cache.has(key) and (not self.force or self.cache.stored_meta(key).get("run") == self.run_id):
                try:
                    meta = {**self.cache.load(key, model), "cached": True}
                except CorruptArtifact as exc:
                    self.say(f"  cache: {exc}; rebuilding")
                    self.cache.discard(key)
            if meta is None:
                self.say(f"  training {defense.name} on {dataset.name} (seed {seed}, {profile})")
                torch.manual_seed(seed)
                ctx = TrainContext(
                    device=self.device, seed=seed, generator=torch.Generator().manual_seed(seed),
                    artifacts=self.artifacts / key[:16],
                    model_of=lambda name, **overrides: self.model_of(name, overrides, dataset, seed, profile)[0],
                    epsilons=dict(dataset.epsilons))
                start = time.perf_counter()
                defense.fit(model, data, ctx)
                train_s = time.perf_counter() - start
                meta = {"defense": _config(defense), "dataset": _config(dataset), "seed": seed,
                        "train_s": train_s, "history": ctx.history, "device": str(self.device),
                        "created": _now(), "run": self.run_id}
                meta = {**meta, "key": key, "cached": False, "sha256": self.cache.save(key, model, meta)}
        model.to(self.device).eval()
        for p in model.parameters():
            p.requires_grad_(False)  # attacks need input gradients only
        self._models[key] = (model, meta)
        return model, meta

    def _helper(self, name: str, overrides: dict, profile: str) -> Defense:
        cls = self.registry.load("defense", name)
        return cls(hparams.build_params(cls.Params, name, {**cls.profiles.get(profile, {}), **overrides}))

    @staticmethod
    def _helper_seed(defense: Defense, seed: int) -> int:
        return 0 if defense.shared_across_seeds else seed

    def _fetch(self, defense: Defense, dataset: Dataset, seed: int, profile: str):
        import torch

        seed = self._helper_seed(defense, seed)
        # The caller's global RNG stream must not depend on whether that model was in memory, cached or trained
        # now (a resumed or parallel run would otherwise give different numbers).
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            return self.model(defense, dataset, seed, profile)

    def model_of(self, name: str, overrides: dict, dataset: Dataset, seed: int, profile: str):
        """Another defense's model on the same data and seed (e.g. a teacher), trained first if missing."""
        return self._fetch(self._helper(name, overrides, profile), dataset, seed, profile)

    def models_of(self, requests: list[tuple[str, dict]], dataset: Dataset, seed: int, profile: str) -> list:
        """``model_of`` for several models (LiRA's shadows), in the order asked. One that another lane is
        training now is taken after the others, so lanes that need the same set train different members of it
        side by side instead of queueing behind the first."""
        defenses = [self._helper(name, overrides, profile) for name, overrides in requests]
        keys = [model_key(d, dataset, self._helper_seed(d, seed)) for d in defenses]
        got: dict[int, object] = {}
        while len(got) < len(defenses):
            left = [i for i in range(len(defenses)) if i not in got]
            i = next((i for i in left if keys[i] in self._models or not self.cache.busy(keys[i])), left[0])
            got[i] = self._fetch(defenses[i], dataset, seed, profile)[0]
        return [got[i] for i in range(len(defenses))]

    # ---- the grid -------------------------------------------------------------------------------------------
    def done(self, job: ModelJob, cell: Cell, profile: str, weights: str | None = None) -> bool:
        """Whether the cell has a finished record under the current code -- and, given the sha256 of the model's
        weights now in use, one made on these weights (a model trained again, e.g. on another GPU host, can
        differ in the last bits: its cells are then all run again, so a row never mixes two trainings). Without
        that sha256, the cached model's stands for it: those are the weights the cell would be evaluated on."""
        if self.force:
            return False
        if weights is None:
            weights = self.cache.stored_meta(model_key(job.defense, job.dataset, job.seed)).get("sha256")
        return (record := self._finished(job, cell, profile)) is not None and _same_weights(record, weights)

    def _finished(self, job: ModelJob, cell: Cell, profile: str) -> dict | None:
        """The cell's finished record under the current code, whatever weights it names (a damaged one is named,
        once, and not trusted)."""
        path = record_path(self.records, self._skeleton(job, cell, profile))
        record, why = load_record(path)
        if why is not None and path not in self._reported:
            self._reported.add(path)
            self.say(f"  damaged record {path}: {why}; its cell is run again")
        return record if record and record.get("key") == cell.key and record.get("status") in FINISHED else None

    def unfinished(self, job: ModelJob, profile: str) -> tuple[int, int]:
        """The job's cells without a finished record, and how many of them last failed for want of memory."""
        missing = memory = 0
        for cell in job.cells:
            if self.done(job, cell, profile):
                continue
            missing += 1
            record, _ = load_record(record_path(self.records, self._skeleton(job, cell, profile)))
            error = (record or {}).get("error") or {}
            if (record or {}).get("status") == "failed" and record.get("key") == cell.key \
                    and out_of_memory_error(error.get("type", ""), error.get("message", "")):
                memory += 1
        return missing, memory

    def execute(self, plan: Plan) -> int:
        """Run the plan; 0 when every cell succeeded, 1 when some failed."""
        for job in plan.jobs:
            pending = [c for c in job.cells if not self.done(job, c, plan.profile)]
            pending.sort(key=_composites_last)
            label = f"{job.dataset.name} / {job.defense.name} / seed {job.seed}"
            if not pending:
                self.say(f"{label}: all {len(job.cells)} cells done (skipped)")
                for cell in job.cells:
                    self.summary.append(self._summary_row(job, cell, read_record(
                        record_path(self.records, self._skeleton(job, cell, plan.profile)))))
                continue
            self.say(f"{label}: {len(pending)} of {len(job.cells)} cells to run")
            try:
                with self.cache.turn():
                    model, meta = self.model(job.defense, job.dataset, job.seed, plan.profile)
                    # Clean accuracy only where the track's models classify (a text-to-image model does not).
                    classifies = self.registry.track(job.defense.track).classifies
                    clean = self._clean(model, job.dataset) if classifies else (None, 0.0)
            except Exception as exc:
                for cell in pending:
                    self._fail(job, cell, plan.profile, exc, stage="training")
                continue
            # Finished cells made on other weights, the other parts' too (a part that meets one first runs it);
            # under --force every cell of the job is some part's already.
            weights = meta.get("sha256")
            trained_apart = [] if self.force else [
                c for c in job.whole or job.cells if c not in pending
                and (r := self._finished(job, c, plan.profile)) and not _same_weights(r, weights)]
            if trained_apart:
                self.say(f"  {len(trained_apart)} finished cell(s) were made on other weights of this model: "
                         "run again on these")
                pending = sorted(pending + trained_apart, key=_composites_last)
            self._warn_outside(job, plan.profile, weights)
            for cell in pending:
                # Another process on the same results folder may have finished the cell meanwhile (it waited
                # for the model, or the grids overlap): the cell lock and a second look write each cell once.
                with self.cache.turn(), self.cache.lock(f"cell-{cell.key}"):
                    if self.done(job, cell, plan.profile, weights):
                        if cell in job.cells:  # another part's cell is that part's to report
                            self.summary.append(self._summary_row(job, cell, read_record(
                                record_path(self.records, self._skeleton(job, cell, plan.profile)))))
                        continue
                    self._evaluate_with_retries(job, cell, plan.profile, model, meta, clean)
        return 1 if self.failed else 0

    def _warn_outside(self, job: ModelJob, profile: str, weights: str | None) -> None:
        """Name the finished records of this model that this run does not hold (another grid's cells, of any
        track) made on other weights: their table now mixes two trainings, which ``bench leaderboard --check``
        rejects. The command it prints reruns them on the cached weights."""
        key, ours = model_key(job.defense, job.dataset, job.seed), {c.key for c in job.whole or job.cells}
        outside, pattern = [], f"*/{job.dataset.name}/{profile}/{job.defense.name}/*-s{job.seed}-*.json"
        for path in sorted(self.records.glob(pattern)):
            record, _ = load_record(path)
            if (record and record.get("key") not in ours and record.get("status") in FINISHED
                    and (record.get("defense") or {}).get("model_key") == key and not _same_weights(record, weights)):
                outside.append(record["attack"]["name"])
        if outside:
            self.say(f"  warning: {len(outside)} finished cell(s) of this model outside this run were made on other "
                     f"weights, so their table mixes two trainings; to run them on these: bench --results "
                     f"{self.results} run --profile {profile} --dataset {job.dataset.name} --defense "
                     f"{job.defense.name} --seed {job.seed} --attack {' '.join(sorted(set(outside)))}")

    def _evaluate_with_retries(self, job: ModelJob, cell: Cell, profile: str, model, meta: dict, clean) -> None:
        """One cell, its record or its failure. Out of memory on a GPU shared by lanes is often a passing peak of
        another lane: the cell is tried again, up to ``OOM_RETRIES`` times, after this process hands its cached
        blocks back; any other error fails the cell at once."""
        for attempt in range(OOM_RETRIES + 1):
            try:
                if self.device.type == "cuda":
                    import torch

                    torch.cuda.reset_peak_memory_stats()
                self._evaluate(job, cell, profile, model, meta, clean)
            except NotCertifiable as exc:
                self._not_certifiable(job, cell, profile, exc)
            except Exception as exc:
                if attempt < OOM_RETRIES and out_of_memory(exc):
                    self.say(f"  {cell.attack.name}: out of memory; trying again ({attempt + 1} of {OOM_RETRIES})")
                    self._release_memory()
                    time.sleep(OOM_WAIT_S * (attempt + 1))
                    continue
                self._fail(job, cell, profile, exc, stage="evaluation")
            self._release_memory()
            return

    def _gpu_peak(self) -> dict:
        """The cell's peak of GPU memory held by PyTorch's allocator (what sizes lanes), on CUDA only."""
        if self.device.type != "cuda":
            return {}
        import torch

        return {"gpu_peak_mib": round(torch.cuda.max_memory_reserved() / 2**20)}

    def _release_memory(self) -> None:
        """Hand the allocator's cached blocks back to the GPU after a cell, so lanes sharing it can use them."""
        if self.device.type == "cuda":
            import gc

            import torch

            gc.collect()
            torch.cuda.empty_cache()

    def fail_unfinished(self, job: ModelJob, profile: str, exc: BaseException, stage: str) -> None:
        """Fail the job's cells that have no finished record (e.g. its worker process died)."""
        for cell in job.cells:
            if not self.done(job, cell, profile):
                self._fail(job, cell, profile, exc, stage)

    def _clean(self, model, dataset: Dataset):
        from bench.evaluate import predict

        data = self.data(dataset)
        start = time.perf_counter()
        correct = predict(model, data.test_x, self.device, self.batch_size) == data.test_y
        return correct, time.perf_counter() - start

    def _evaluate(self, job: ModelJob, cell: Cell, profile: str, model, meta: dict, clean) -> None:
        """An attack's or certifier's record: per eps, the per-example outcome (from ``_mask``), its mean, and the
        outcomes themselves. A worst case is the per-example AND of its components' outcomes; a certifier's
        companion attack (for the image certifiers, the worst case) runs on the same model, and nothing it breaks
        may be certified."""
        attack = cell.attack
        if isinstance(attack, Evaluator):
            return self._evaluate_metrics(job, cell, profile, model, meta, clean)
        clean_correct, clean_s = clean
        n = len(clean_correct)
        metrics = [{"name": "clean_acc", "value": float(clean_correct.float().mean()), "n": n}]
        parts = self._parts(attack, profile)
        companion = self._plugin(attack.companion, profile) if isinstance(attack, Certifier) else None
        per_example, violations = [], 0
        start = time.perf_counter()
        for eps in cell.epsilons:
            robust, used = self._outcome(job, attack, eps, profile, model, clean_correct)
            violations += used
            metrics.append({"name": attack.metric, "norm": attack.norm, "eps": eps, "value": float(robust.float().mean()),
                            "n": n, "definition": self._definition(attack, profile)})
            per_example.append(pack_mask(robust, attack.describe(), eps, used))
            if companion is not None:
                empirical, used = self._outcome(job, companion, eps, profile, model, clean_correct)
                if unsound := int((robust & ~empirical).sum()):
                    raise InvariantViolation(f"{attack.name}: {unsound} examples certified at eps {eps:g} were "
                                             f"broken by {companion.name}; the certifier is unsound")
                metrics.append({"name": "robust_acc", "norm": companion.norm, "eps": eps, "n": n,
                                "value": float(empirical.float().mean()),
                                "definition": self._definition(companion, profile)})
                per_example.append(pack_mask(empirical, companion.describe(), eps, used))
        eval_s = time.perf_counter() - start
        checked = int(clean_correct.sum()) * sum(1 for e in cell.epsilons if e > 0)
        masking = self._masking(job, model, clean_correct, metrics, parts, profile)
        record = {**self._skeleton(job, cell, profile, meta), "status": "ok", "metrics": metrics, "masking": masking,
                  "threat_model": {"norm": attack.norm, "epsilons": list(cell.epsilons),
                                   "checked": checked, "violations": violations},
                  "timings": {"train_s": meta["train_s"], "train_cached": meta["cached"], "eval_s": eval_s,
                              "clean_eval_s": clean_s, **self._gpu_peak()},
                  "per_example": per_example}
        if violations:
            self.say(f"  WARNING {attack.name}: {violations} adversarial examples were outside the "
                     f"threat model and were clipped (flagged in the record)")
        self._finish(job, cell, record)

    def _masking(self, job: ModelJob, model, clean_correct, metrics: list[dict], parts: list, profile: str) -> dict:
        """Gradient-masking signs (AutoAttack's flags), computed by the framework for every robust-accuracy record:
        the model's own (zero input gradients, outputs that change between two passes), the record's (robust
        accuracy rising with eps), and, for a worst case, its components' (a gradient-free attack beating every
        gradient-based one; FGSM beating PGD). A flag does not change a number: it says the number may be
        an overestimate of robustness."""
        from bench.evaluate import masking_probe

        key = model_key(job.defense, job.dataset, job.seed)
        if key not in self._probes:
            data = self.data(job.dataset)
            self._probes[key] = masking_probe(model, data.test_x, data.test_y, clean_correct, self.device)
        probe = self._probes[key]
        flags = []
        if probe["zero_gradient_share"] > ZERO_GRADIENT_SHARE:
            flags.append("zero-gradients")
        if probe["stochastic"]:
            flags.append("stochastic")
        curve = sorted((m["eps"], m["value"]) for m in metrics if m["name"] in ("robust_acc", "verified_acc")
                       and m.get("definition", "").split(" = ")[0] == metrics[-1].get("definition", "").split(" = ")[0])
        if any(later > earlier for (_, earlier), (_, later) in zip(curve, curve[1:])):
            flags.append("rises-with-eps")
        if parts:
            outcomes = self._masks[key]
            for eps in sorted({m["eps"] for m in metrics if "eps" in m}):
                acc = {p.describe(): float(outcomes[(p.describe(), eps)][0].float().mean()) for p in parts
                       if (p.describe(), eps) in outcomes}
                free = [acc[p.describe()] for p in parts if p.gradient_free and p.describe() in acc]
                white = [acc[p.describe()] for p in parts if not p.gradient_free
                         and p.describe() in acc]
                if free and white and min(free) < min(white):
                    flags.append(f"black-box-beats-white-box@{eps:g}")
                fgsm = [acc[p.describe()] for p in parts if p.name == "fgsm" and p.describe() in acc]
                pgd = [acc[p.describe()] for p in parts if p.name.startswith("pgd") and p.describe() in acc]
                if fgsm and pgd and min(fgsm) < min(pgd):
                    flags.append(f"fgsm-beats-pgd@{eps:g}")
        return {**probe, "flags": flags}

    def _plugin(self, name: str, profile: str):
        """Another registered attack or certifier, with this run's profile applied to its hyperparameters."""
        cls = self.registry.load("attack", name)
        return cls(hparams.resolve({name: cls}, profile, [])[name])

    def _parts(self, attack, profile: str) -> list:
        """A composite attack's components (a worst case's attacks), loaded with this run's profile; else []."""
        return components(self.registry, attack, profile)

    def _definition(self, attack, profile: str) -> str:
        parts = self._parts(attack, profile)
        extra = " = per-example AND of " + ", ".join(p.describe() for p in parts) if parts else ""
        return attack.describe() + extra

    def _outcome(self, job: ModelJob, attack, eps: float, profile: str, model, clean_correct):
        """(per-example outcome, violations) of ``attack`` at ``eps``: a composite's is the per-example AND of its
        components' outcomes (each from ``_mask``), kept in memory for the masking flags and for certifiers whose
        companion it is."""
        import torch

        parts = self._parts(attack, profile)
        if not parts:
            return self._mask(job, attack, eps, profile, model, clean_correct)
        found = [self._mask(job, part, eps, profile, model, clean_correct) for part in parts]
        outcome = torch.stack([mask for mask, _ in found]).all(dim=0), sum(v for _, v in found)
        self._masks[model_key(job.defense, job.dataset, job.seed)][(attack.describe(), eps)] = outcome
        return outcome

    def _mask(self, job: ModelJob, attack, eps: float, profile: str, model, clean_correct):
        """(per-example outcome, threat-model violations) of ``attack`` at ``eps`` on the job's model: from memory,
        else from the attack's own finished record (whichever process wrote it), else computed -- with a
        generator seeded by (model, attack definition, eps) alone, so every path gives the same outcome."""
        import torch

        from bench.context import AttackContext
        from bench.evaluate import robust_mask

        masks = self._masks.setdefault(model_key(job.defense, job.dataset, job.seed), {})
        k = (attack.describe(), eps)
        if k not in masks:
            masks[k] = self._stored_mask(job, attack, eps, profile, len(clean_correct))
        if masks[k] is None:
            data = self.data(job.dataset)
            seed = int(hashing.digest({"model": model_key(job.defense, job.dataset, job.seed),
                                       "attack": attack.describe(), "eps": float(eps)})[:15], 16)
            ctx = AttackContext(bounds=data.spec.bounds, registry=self.registry, profile=profile,
                                generator=torch.Generator().manual_seed(seed))
            mask = robust_mask(model, attack, data.test_x, data.test_y, clean_correct, eps, ctx, self.device,
                               self.batch_size)
            masks[k] = (mask, ctx.violations)
        return masks[k]

    def _stored_mask(self, job: ModelJob, attack, eps: float, profile: str, n: int):
        """The outcome stored in ``attack``'s own record for this model, if finished under the current code."""
        cell = make_cell(profile, job.seed, job.dataset, job.defense, attack, self._parts(attack, profile))
        record = read_record(record_path(self.records, self._skeleton(job, cell, profile)))
        weights = self._models.get(model_key(job.defense, job.dataset, job.seed), (None, {}))[1].get("sha256")
        if (record is None or record.get("key") != cell.key or record.get("status") != "ok"
                or not _same_weights(record, weights)):
            return None
        for entry in record.get("per_example") or []:
            if entry["definition"] == attack.describe() and abs(entry["eps"] - eps) <= 1e-12 and entry["n"] == n:
                return unpack_mask(entry), int(entry.get("violations", 0))
        return None

    def _evaluate_metrics(self, job: ModelJob, cell: Cell, profile: str, model, meta: dict, clean) -> None:
        """An evaluator without a threat model: its metrics, after clean accuracy, in one record."""
        import torch

        from bench.context import EvalContext

        clean_correct, clean_s = clean
        data = self.data(job.dataset)
        ctx = EvalContext(device=self.device, batch_size=self.batch_size, profile=profile,
                          generator=torch.Generator().manual_seed(int(cell.config_id[:15], 16)),
                          model_of=lambda name, **o: self.model_of(name, o, job.dataset, job.seed, profile)[0],
                          models_of=lambda requests: self.models_of(requests, job.dataset, job.seed, profile),
                          artifacts=self.results / cell_folder(cell.key))
        start = time.perf_counter()
        metrics = [] if clean_correct is None else [
            {"name": "clean_acc", "value": float(clean_correct.float().mean()), "n": len(clean_correct)}]
        for m in cell.attack.evaluate(model, data, ctx):
            missing = {"name", "value", "n", "definition"} - set(m)
            if missing:
                raise InvariantViolation(f"{cell.attack.name}: metric {m.get('name')!r} lacks {sorted(missing)}")
            metrics.append({**m, "value": float(m["value"]), "n": int(m["n"])})
        record = {**self._skeleton(job, cell, profile, meta), "status": "ok", "metrics": metrics,
                  "timings": {"train_s": meta["train_s"], "train_cached": meta["cached"],
                              "eval_s": time.perf_counter() - start, "clean_eval_s": clean_s, **self._gpu_peak()}}
        if ctx.artifacts.exists():
            from bench.artifacts import compress_csvs

            compress_csvs(ctx.artifacts)  # per-example CSVs kept small (bench.artifacts.open_text reads them)
            record["artifacts"] = cell_folder(cell.key)
        self._finish(job, cell, record)

    def _skeleton(self, job: ModelJob, cell: Cell, profile: str, meta: dict | None = None) -> dict[str, Any]:
        """The record's identity; with the model's metadata, also the sha256 of the weights it evaluated (two
        trainings of one model key on a GPU can differ in the last bits: a table must not mix them)."""
        a = cell.attack
        weights = {"weights_sha256": meta["sha256"]} if meta and meta.get("sha256") else {}
        return {"key": cell.key, "config_id": cell.config_id, "track": cell.attack.track,
                "profile": profile, "seed": job.seed,
                "dataset": {**_config(job.dataset), "origin": _origin(self.registry, "dataset", job.dataset.name)},
                "defense": {**_config(job.defense), "origin": _origin(self.registry, "defense", job.defense.name),
                            "model_key": model_key(job.defense, job.dataset, job.seed), **weights,
                            **({"identity": job.defense.identity()} if job.defense.identity() else {})},
                "attack": {**_config(a), "origin": _origin(self.registry, "attack", a.name), "norm": a.norm,
                           "definition": a.describe()},
                # What the provenance rule of `bench leaderboard --check` compares across a table's records.
                "code": hashing.code_hashes(type(job.defense).__module__, type(job.dataset).__module__,
                                            type(a).__module__, *(type(p).__module__ for p in self._parts(a, profile)),
                                            *EVAL_CODE)}

    def _finish(self, job: ModelJob, cell: Cell, record: dict) -> None:
        """Every cell ends here: its record, with provenance (and the sha256 of the data files the dataset read),
        written atomically, and its summary row."""
        from bench.data import file_sha256

        files = {p.name: file_sha256(p) for p in job.dataset.files() if p.is_file()}
        write_record(self.records, {**self._provenance(record), **({"data_files": files} if files else {})})
        row = self._summary_row(job, cell, record)
        self.summary.append(row)
        from bench.progress import line  # a line per finished cell where no progress bar shows (a log file)

        clean = f" clean {100 * row['clean']:.1f}" if "clean" in row else ""
        line(f"  {cell.attack.name} on {job.defense.name} / {job.dataset.name} / seed {job.seed}: "
             f"{row['status']}{clean}" + "".join(f" {k} {100 * v:.1f}" for k, v in row["headline"]))

    def _provenance(self, record: dict) -> dict:
        from bench import __version__, environment

        return {**record, "hardware": environment.hardware(self.device), "packages": environment.packages(),
                "git_commit": environment.git_commit(self.results), "bench_version": __version__, "created": _now()}

    def _fail(self, job: ModelJob, cell: Cell, profile: str, exc: BaseException, stage: str) -> None:
        self.failed += 1
        skeleton = self._skeleton(job, cell, profile)
        log = self.logs / record_path(Path(), skeleton).with_suffix(".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(traceback.format_exception(exc)))
        message = f"{type(exc).__name__}: {exc}"
        self.say(f"  FAILED {cell.attack.name} ({stage}): {message} -- traceback in {log}")
        self._finish(job, cell, {**skeleton, "status": "failed", "metrics": [], "error": {
            "stage": stage, "type": type(exc).__name__, "message": str(exc), "log": str(log)}})

    def _not_certifiable(self, job: ModelJob, cell: Cell, profile: str, exc: NotCertifiable) -> None:
        self.say(f"  {cell.attack.name}: not certifiable: {exc}")
        self._finish(job, cell, {**self._skeleton(job, cell, profile), "status": "not_certifiable", "metrics": [],
                                 "error": {"stage": "evaluation", "type": "NotCertifiable",
                                           "message": f"not certifiable: {exc}"}})

    def _summary_row(self, job: ModelJob, cell: Cell, record: dict | None) -> dict[str, Any]:
        """The run summary's row: clean accuracy and the track's headline metrics for this cell."""
        track = self.registry.track(cell.attack.track)
        wanted = track.summary_metrics if track is not None else ()
        row = {"dataset": job.dataset.name, "defense": job.defense.name, "seed": job.seed,
               "attack": cell.attack.name, "status": (record or {}).get("status", "missing"), "headline": []}
        metrics = (record or {}).get("metrics", [])
        for m in metrics:
            if m["name"] == "clean_acc":
                row["clean"] = m["value"]
        for label in wanted:
            found = [m for m in metrics if metric_label(m) == label and m.get("eps", 1.0) > 0]
            if found:
                m = min(found, key=lambda m: m.get("eps", 0.0))  # a budget's headline: its smallest eps
                row["headline"].append((label + (f"@{m['eps']:g}" if "eps" in m else ""), m["value"]))
            if len(row["headline"]) == 2:
                break
        return row


def format_summary(rows: list[dict[str, Any]]) -> str:
    """One row per cell: clean accuracy and each track's own headline (in %), columns as wide as the names."""
    if not rows:
        return ""
    texts = [[r["dataset"], r["defense"], str(r["seed"]), r["attack"],
              f"{100 * r['clean']:.1f}" if "clean" in r else "-",
              "  ".join(f"{label} {100 * value:.1f}" for label, value in r["headline"]) or "-", r["status"]]
             for r in rows]
    head = ["dataset", "defense", "seed", "attack", "clean", "headline (%)", "status"]
    widths = [max(len(x) for x in column) for column in zip(head, *texts)]
    right = {2, 4}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), "-" * len(line(head)), *(line(c).rstrip() for c in texts)])


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
