"""Running a study: Optuna storage and study, MLflow parent/child runs, workers, resumption.

How trials are handed out: the study's whole budget is put in Optuna's queue up front, as
WAITING trials (`enqueue_trial`): grid cells with their parameters, or empty "slots" that
the sampler fills when a worker claims them (so TPE still learns from finished trials).
A worker claims a WAITING trial with one atomic storage update (WAITING -> RUNNING) and
never creates trials of its own. So K workers never duplicate a grid cell or exceed the
budget, and an interrupted study resumes with exactly the trials that are left.

A worker writes a heartbeat into its running trial; on the next `study run`, a RUNNING trial
whose worker is gone (dead pid on this host, or a stale heartbeat) is marked FAIL and its
parameters are enqueued again (retried).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from bench.run_config import build_config
from bench.progress import bar as progress_bar
from bench.studies import optuna_adapter
from bench.studies.spec import VARIANT_KEY, StudySpec, file_hash
from bench.tracking import (TAG_CONFIG, TAG_ROLE, TAG_STUDY, TAG_TRIAL, TrackingError, check_reachable, client,
                            ensure_experiment, mask_uri, scrub)

HEARTBEAT_S = 20.0
STALE_AFTER_S = 300.0  # a RUNNING trial on another host without a heartbeat for this long is dead
PARENT_ATTR = "mlflow_parent_run_id"
PREPARE_LOCK_KEY = 0x67616E62656E6368  # "ganbench": the PostgreSQL advisory lock that serialises `prepare`


# ---------------------------------------------------------------------------
# Storage, sampler, pruner


def default_storage(tracking_uri: str) -> str:
    """A journal file next to a local MLflow store (safe for several processes on one machine)."""
    if tracking_uri.startswith("sqlite:///"):
        folder = Path(tracking_uri[len("sqlite:///"):]).parent
    else:
        folder = Path("mlruns")
    return str(folder / "optuna-journal.log")


def make_storage(url: str, create: bool = True) -> optuna.storages.BaseStorage:
    """An Optuna storage URL (postgresql://, sqlite://, ...) or a journal file path.

    `create=False` (reading, e.g. `study status`): a journal file that does not exist is an error,
    not a new empty file.
    """
    if "://" in url:
        return optuna.storages.RDBStorage(url)
    check_storage_url(url)
    path = Path(url)
    if not create and not path.is_file():
        raise TrackingError(f"no Optuna journal at {path} (run the study first, or give its storage)",
                            field="storage")
    path.parent.mkdir(parents=True, exist_ok=True)
    backend = optuna_adapter.journal_backend(path)
    repair_journal(path, backend)
    return optuna.storages.JournalStorage(backend)


def repair_journal(path: Path, backend) -> int:
    """Set aside the records of a journal that a crash or a full disk cut short; returns bytes moved.

    Optuna reads the journal line by line and stops at the first line that is not JSON, so a
    cut-short last record (and anything appended after it) would make the whole study unreadable.
    Under Optuna's own journal lock (no writer is half-way), every line that does not parse is
    moved to `<journal>.corrupt` (kept, never silently dropped); when a complete record was
    appended right after a cut one on the same line, that record is kept.
    """
    if not path.exists() or not _scan(path.read_bytes())[1]:
        return 0  # the usual case, checked without blocking the writers
    with optuna_adapter.journal_file_lock(backend):
        kept, bad = _scan(path.read_bytes())  # again: the bad tail may have been a write in progress
        if not bad:
            return 0
        corrupt = path.with_name(path.name + ".corrupt")
        with open(corrupt, "ab") as f:
            f.write(b"\n".join(bad) + b"\n")
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_bytes(b"".join(line + b"\n" for line in kept))
        tmp.replace(path)
    moved = sum(len(b) for b in bad)
    print(f"gan-bench: warning: {path}: {moved} bytes of {len(bad)} cut-short record(s) set aside in {corrupt} "
          "(a crash or a full disk mid-write); the complete records are kept", file=sys.stderr)
    return moved


def _scan(data: bytes) -> tuple[list[bytes], list[bytes]]:
    """(the complete records, the cut-short bytes) of a journal's content."""
    kept, bad = [], []
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if i == len(lines) - 1 and not line:
            continue  # the newline that ends the file
        good, junk = _salvage(line)  # a whole last record without its newline is kept (and completed)
        if junk:
            bad.append(junk)
        if good is not None:
            kept.append(good)
    return kept, bad


def _salvage(line: bytes) -> tuple[bytes | None, bytes]:
    """(a complete JSON record in the line or None, the bytes that are not part of it)."""
    import json

    try:
        json.loads(line)
        return line, b""
    except ValueError:
        pass
    start = line.rfind(b'{"op_code"')
    while start > 0:  # a cut record followed by a whole one on the same line
        try:
            json.loads(line[start:])
            return line[start:], line[:start]
        except ValueError:
            start = line.rfind(b'{"op_code"', 0, start)
    return None, line


def read_storage(url: str) -> optuna.storages.BaseStorage:
    """An existing storage for reading (`study status`): any failure is one line naming the (masked) URL."""
    try:
        return make_storage(url, create=False)
    except TrackingError:
        raise
    except Exception as e:
        raise _storage_error(url, e) from None


def check_storage_url(url: str) -> None:
    """A libpq conninfo string (`host=db password=...`) is not a journal path: refuse it, masked."""
    import re

    if "://" not in url and re.search(r"(?i)(^|\s)(host|dbname|user|password|port)\s*=", url):
        raise TrackingError(f"storage {mask_uri(url)!r}: a libpq key=value string is not an Optuna storage; "
                            "give a URL (postgresql+psycopg://user@host:5432/db, password in PGPASSWORD or "
                            "~/.pgpass) or a journal file path", field="storage")


@contextlib.contextmanager
def exclusive(url: str):
    """Serialise `prepare` across the processes and machines that share one storage.

    Two `study run`s started together would otherwise both create Optuna's tables on an empty
    database (one fails: duplicate key in pg_type), both create a parent run and both enqueue the
    grid. PostgreSQL: a session advisory lock, released by the server when its holder dies (kill -9
    included); journal file: an flock on a file next to it; other URLs: nothing (one machine).
    """
    if "://" not in url:
        import fcntl

        path = Path(url).with_name(Path(url).name + ".prepare.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return
    import sqlalchemy

    conn = None  # stays None for other databases: no lock
    try:
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        if engine.dialect.name == "postgresql":
            conn = engine.connect()
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": PREPARE_LOCK_KEY})
    except Exception as e:
        raise TrackingError(scrub(f"Optuna storage {mask_uri(url)!r} is not usable: {e}", url)) from None
    try:
        yield
    finally:
        if conn is not None:
            with contextlib.suppress(Exception):  # closing the connection releases the lock anyway
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": PREPARE_LOCK_KEY})
            conn.close()
        engine.dispose()


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    s = spec.sampler
    if s.type == "grid":
        return optuna.samplers.GridSampler({k: p.grid_values() for k, p in spec.search_space.items()}, seed=s.seed)
    if s.type == "tpe":
        return optuna.samplers.TPESampler(seed=s.seed, multivariate=True, group=True)
    if s.type == "gp":
        return optuna.samplers.GPSampler(seed=s.seed)
    return optuna.samplers.RandomSampler(seed=s.seed)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    p = spec.pruner
    if p.type == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    elif p.type == "hyperband":
        pruner = optuna.pruners.HyperbandPruner()
    else:
        return optuna.pruners.NopPruner()
    return optuna.pruners.PatientPruner(pruner, patience=p.patience) if p.patience else pruner


def open_study(spec: StudySpec, storage: optuna.storages.BaseStorage, create: bool = True) -> optuna.Study:
    """Create or load the study (`create=False`: load only, as workers do once `prepare` made it)."""
    if not create:
        return optuna.load_study(study_name=spec.name, storage=storage, sampler=make_sampler(spec),
                                 pruner=make_pruner(spec))
    return optuna.create_study(study_name=spec.name, storage=storage, load_if_exists=True,
                               sampler=make_sampler(spec), pruner=make_pruner(spec),
                               directions=list(spec.objective.directions))


def describe(study: optuna.Study, spec: StudySpec) -> None:
    """Name the objectives (optuna-dashboard, `optuna trials`, `study status` show eval/tarr, not
    value_0) and keep the study file's description, where Optuna tools look for it."""
    if study.metric_names != list(spec.objective.metrics):
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and what its tools read
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(spec.objective.metrics))
    if study.user_attrs.get("description") != spec.description:
        study.set_user_attr("description", spec.description)


# ---------------------------------------------------------------------------
# Preparing a study (parent process, once, before any worker starts)


@dataclass
class Plan:
    """What one `study run` invocation does; picklable, handed to every worker."""

    spec: StudySpec
    storage_url: str
    tracking_uri: str
    overrides: dict[str, Any]
    parent_run_id: str
    max_trials: int | None = None
    timeout: float | None = None
    workers: int = 1
    progress: bool = True
    retried: list[int] = field(default_factory=list)
    # `timeout` counts once for the invocation, from its start (the CLI passes when it began, before
    # `prepare`): a worker that started its own clock later (spawned ones seconds later) could overrun.
    started: float = field(default_factory=time.time)


def _counted(trial: optuna.trial.FrozenTrial) -> bool:
    """Trials that use up budget: all except failures that were retried (their retry counts)."""
    return not trial.user_attrs.get("retried", False)


def recover_stale(study: optuna.Study, tracking_uri: str) -> list[int]:
    """Mark RUNNING trials whose worker is gone as FAIL (their MLflow runs KILLED) and enqueue them again."""
    here = socket.gethostname()
    now = time.time()
    retried = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, pid = t.user_attrs.get("worker_host"), t.user_attrs.get("worker_pid")
        beat = t.user_attrs.get("heartbeat", 0.0)
        # This process prepares before it runs any trial: one it claimed earlier (an earlier invocation
        # in the same process, whose completion a cut journal lost) is not running any more.
        mine = host == here and pid == os.getpid()
        gone = mine or (host == here and pid is not None and not _alive(pid)) or now - beat > STALE_AFTER_S
        if gone and retire(study, t, "worker died (killed or crashed)", tracking_uri):
            retried.append(t.number)
    return retried


def retire(study: optuna.Study, t: optuna.trial.FrozenTrial, reason: str, tracking_uri: str) -> bool:
    """A trial that will not finish: FAIL (marked `retried`), its MLflow runs KILLED, its cell queued again.

    False when another process changed the trial's state first (it then owns the trial).
    """
    tid = optuna_adapter.trial_id(t)
    optuna_adapter.set_trial_user_attr(study, tid, "retried", True)
    optuna_adapter.set_trial_user_attr(study, tid, "error", reason)
    if not optuna_adapter.fail_trial(study, tid):
        return False
    # A grid cell is the trial's queued params (a trial claimed but not started has no params yet).
    params = optuna_adapter.enqueued_params(t) or t.params
    study.enqueue_trial(params, user_attrs={"retry_of": t.user_attrs.get("retry_of", t.number)})
    for run_id in t.user_attrs.get("mlflow_run_ids", []):
        _end_run_if_running(tracking_uri, run_id, "KILLED", reason)
    return True


def _end_run_if_running(tracking_uri: str, run_id: str, status: str, reason: str) -> None:
    mlflow = client(tracking_uri)
    if mlflow.get_run(run_id).info.status == "RUNNING":
        mlflow.set_tag(run_id, "error", f"{reason}; the trial was retried")
        mlflow.set_terminated(run_id, status)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def enqueue_budget(spec: StudySpec, study: optuna.Study) -> int:
    """Put what is left of the budget in the queue; returns how many trials were added."""
    trials = study.get_trials(deepcopy=False)
    if spec.sampler.type == "grid":
        # A trial's cell is the params it was enqueued with: a WAITING trial has no params yet,
        # and neither has a RUNNING one that another process claimed but has not started.
        seen = [optuna_adapter.enqueued_params(t) or t.params for t in trials if _counted(t)]
        todo = [cell for cell in spec.grid()[:spec.n_trials] if cell not in seen]
        for cell in todo:
            study.enqueue_trial(cell)
        return len(todo)
    missing = spec.n_trials - sum(1 for t in trials if _counted(t))
    for _ in range(max(0, missing)):
        study.enqueue_trial({})
    return max(0, missing)


def prepare(spec: StudySpec, study_text: str, storage_url: str, tracking_uri: str,
            force_new: bool = False) -> tuple[optuna.Study, str, list[int]]:
    """Create (or resume) the Optuna study and the MLflow parent run; fill the queue.

    Resuming needs the same question: a study created from another version of the file (space,
    objective, sampler, base or repeats changed) is refused unless `force_new` deletes it first.
    """
    check_reachable(tracking_uri)  # seconds, not MLflow's minutes of retries, before anything is written
    check_storage_url(storage_url)
    with exclusive(storage_url):  # one invocation at a time, across machines
        experiment_id = ensure_experiment(tracking_uri, spec.name, spec.description)  # the MLflow DB once, here
        return _prepare_locked(spec, study_text, storage_url, tracking_uri, experiment_id, force_new)


def spec_hash(spec: StudySpec) -> str:
    """What makes two study files the same question (comments, description, budget and baseline may change)."""
    import hashlib

    same = spec.model_dump(include={"base", "space", "variants", "objective", "sampler", "repeats"}, mode="json")
    return hashlib.sha256(_json_sorted(same).encode()).hexdigest()


def _json_sorted(obj) -> str:
    import json

    return json.dumps(obj, sort_keys=True, default=str)


def _storage_error(storage_url: str, e: BaseException) -> TrackingError:
    return TrackingError(scrub(f"Optuna storage {mask_uri(storage_url)!r} is not usable: {e}", storage_url))


def _existing_parent(storage: optuna.storages.BaseStorage, name: str) -> tuple[bool, str | None]:
    """(the Optuna study exists, its MLflow parent run id)."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return False, None
    return True, storage.get_study_user_attrs(study_id).get(PARENT_ATTR)


def _check_same_study(spec: StudySpec, study_text: str, tracking_uri: str, parent_id: str, storage_url: str) -> None:
    from bench.studies.spec import StudyError

    tags = client(tracking_uri).get_run(parent_id).data.tags
    if "study_spec_sha256" in tags:
        same = tags["study_spec_sha256"] == spec_hash(spec)
    else:  # parents from before the spec hash: the file itself
        same = tags.get("study_file_sha256") in (None, file_hash(study_text))
    if same:
        return
    changed = _changed_sections(spec, tracking_uri, parent_id)
    raise StudyError(f"study {spec.name!r} already exists (storage {mask_uri(storage_url)}, MLflow parent run "
                     f"{parent_id}) and was created from a different study file{changed}; resuming would mix "
                     "two questions. Give the study a new `name`, or rerun with force_new to delete the old "
                     "study and its runs", field="force_new")


def _changed_sections(spec: StudySpec, tracking_uri: str, parent_id: str) -> str:
    """`: space, objective changed` from the parent run's copy of the old file (best effort)."""
    import tomllib

    import tempfile

    from unittest import mock

    try:
        with (tempfile.TemporaryDirectory(prefix="gan-bench-") as tmp,
              mock.patch.dict(os.environ, {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})):
            old_text = Path(client(tracking_uri).download_artifacts(parent_id, "study.toml", tmp)).read_text()
        old = type(spec).model_validate(tomllib.loads(old_text)).model_dump(mode="json")
        new = spec.model_dump(mode="json")
        keys = [k for k in ("base", "space", "variants", "objective", "sampler", "repeats")
                if _json_sorted(old[k]) != _json_sorted(new[k])]
    except Exception:
        return ""
    return f" ({', '.join(keys)} changed)" if keys else ""


def _delete_study(spec: StudySpec, storage: optuna.storages.BaseStorage, tracking_uri: str,
                  experiment_id: str) -> int:
    """--force-new: the old Optuna study goes, and its MLflow runs are soft-deleted (restorable)."""
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=spec.name, storage=storage)
    mlflow = client(tracking_uri)
    deleted, token = 0, None
    while True:
        page = mlflow.search_runs([experiment_id], f"tags.{TAG_STUDY} = '{spec.name}'", max_results=1000,
                                  page_token=token)
        for run in page:
            mlflow.delete_run(run.info.run_id)
            deleted += 1
        token = page.token
        if not token:
            return deleted


def _prepare_locked(spec: StudySpec, study_text: str, storage_url: str, tracking_uri: str,
                    experiment_id: str, force_new: bool = False) -> tuple[optuna.Study, str, list[int]]:
    try:
        storage = make_storage(storage_url)
        exists, old_parent = _existing_parent(storage, spec.name)
    except Exception as e:
        raise _storage_error(storage_url, e) from None
    if exists and force_new:
        n = _delete_study(spec, storage, tracking_uri, experiment_id)
        print(f"--force-new: deleted the Optuna study {spec.name!r} and soft-deleted its {n} MLflow run(s) "
              "(`mlflow gc` removes them for good)", file=sys.stderr)
    elif old_parent is not None:
        _check_same_study(spec, study_text, tracking_uri, old_parent, storage_url)
    try:
        study = open_study(spec, storage)
    except Exception as e:
        raise _storage_error(storage_url, e) from None
    describe(study, spec)
    mlflow = client(tracking_uri)
    parent_id = study.user_attrs.get(PARENT_ATTR)
    if parent_id is None:
        tags = {TAG_STUDY: spec.name, TAG_ROLE: "parent", "sampler": spec.sampler.type, "pruner": spec.pruner.type,
                "objective": ",".join(f"{m}:{d}" for m, d in zip(spec.objective.metrics, spec.objective.directions)),
                "space_keys": _json(list(spec.search_space)), "study_file_sha256": file_hash(study_text),
                "study_spec_sha256": spec_hash(spec),
                "repeats": spec.repeats, "mlflow.note.content": spec.description,
                "optuna_storage": mask_uri(storage_url)}
        if spec.reproduces:
            tags["reproduces"] = spec.reproduces
        if spec.baseline:
            tags["baseline"] = _json(spec.baseline)
        run = mlflow.create_run(experiment_id, run_name=f"study:{spec.name}", tags={k: str(v) for k, v in tags.items()})
        parent_id = run.info.run_id
        mlflow.log_text(parent_id, study_text, "study.toml")
        study.set_user_attr(PARENT_ATTR, parent_id)
    else:
        mlflow.update_run(parent_id, status="RUNNING")
    try:
        retried = recover_stale(study, tracking_uri)
        enqueue_budget(spec, study)
    except BaseException as e:  # never leave the parent RUNNING behind a failed preparation
        with contextlib.suppress(Exception):
            mlflow.set_tag(parent_id, "error", f"preparation failed: {type(e).__name__}: {e}"[:5000])
            mlflow.set_terminated(parent_id, "FAILED")
        raise
    return study, parent_id, retried


# ---------------------------------------------------------------------------
# Workers


class _Heartbeat:
    """Writes a timestamp into the running trial so other processes can tell it is alive."""

    def __init__(self, study: optuna.Study, trial_id: int):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(study, trial_id), daemon=True)

    def _beat(self, study, trial_id):
        while not self._stop.wait(HEARTBEAT_S):
            try:
                optuna_adapter.set_trial_user_attr(study, trial_id, "heartbeat", time.time())
            except Exception:  # the trial finished meanwhile, or the storage hiccupped: next beat
                pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def claim(study: optuna.Study) -> optuna.Trial | None:
    """Atomically take one WAITING trial (or None when the queue is empty)."""
    trial = optuna_adapter.claim_waiting(study)
    if trial is not None:
        for key, value in {"worker_host": socket.gethostname(), "worker_pid": os.getpid(),
                           "heartbeat": time.time()}.items():
            trial.set_user_attr(key, value)
    return trial


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """Sample the space (conditional parameters only when their `when` holds)."""
    params: dict[str, Any] = {}
    for key, p in spec.search_space.items():
        if p.when and any(params.get(k) != v for k, v in p.when.items()):
            continue
        if p.type == "categorical":
            params[key] = trial.suggest_categorical(key, p.choices)
        elif p.type == "int":
            params[key] = trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            params[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
    return params


def objective(trial: optuna.Trial, plan: Plan, contexts: dict) -> list[float]:
    """Train the trial's configuration with `repeats` seeds; the objective is their mean."""
    from bench import experiment

    spec = plan.spec
    params = suggest(trial, spec)
    base = build_config(spec.base, plan.overrides)
    label = spec.short_label(params)
    run_ids: list[str] = []
    per_seed: list[list[float]] = []
    for k in range(spec.repeats):
        cfg = build_config(base.model_dump(), {**spec.config_overrides(params, plan.overrides), "seed": base.seed + k})
        key = (cfg.device, cfg.data.dataset, cfg.data.root, cfg.eval.evaluator, cfg.eval.evaluator_epochs,
               cfg.eval.evaluator_subset)
        if key not in contexts:
            contexts[key] = experiment.prepare(cfg, progress=plan.progress and plan.workers == 1)
        hooks = [_pruning_hook(trial, spec.objective.watched)] if k == 0 and spec.pruner.type != "none" else []
        tags = {TAG_STUDY: spec.name, TAG_ROLE: "trial", TAG_TRIAL: trial.number, TAG_CONFIG: label,
                **{f"param.{p}": v for p, v in params.items()}}
        if VARIANT_KEY in params:
            tags[VARIANT_KEY] = params[VARIANT_KEY]

        def started(run_id: str) -> None:
            run_ids.append(run_id)
            trial.set_user_attr("mlflow_run_ids", list(run_ids))

        # Keyed by the trial's lineage (a retry continues its original's file), never shared by two trials.
        origin = trial.user_attrs.get("retry_of", trial.number)
        ckpt = checkpoint_dir(plan) / f"{experiment.config_id(cfg)}-t{origin}-seed{cfg.seed}.pt"
        result = experiment.run(cfg, tracking_uri=plan.tracking_uri, experiment=spec.name, context=contexts[key],
                                name=run_name(label, cfg.seed), tags=tags, parent_run_id=plan.parent_run_id,
                                hooks=hooks, progress=plan.progress and plan.workers == 1,
                                killed_on=(KeyboardInterrupt, optuna.TrialPruned), on_run_start=started,
                                checkpoint_path=ckpt)
        if result.result.diverged:
            trial.set_user_attr("diverged", result.result.stop_reason)
        missing = [m for m in spec.objective.metrics if m not in result.metrics]
        if missing:
            raise RuntimeError(f"run {result.run_id} did not produce {missing}")
        per_seed.append([result.metrics[m] for m in spec.objective.metrics])
    return [sum(vals) / len(vals) for vals in zip(*per_seed)]


def run_name(label: str, seed: int) -> str:
    """`<label>,seed=<k>`, shortened to MLflow's run-name limit (the `config_label` tag keeps the whole label)."""
    from bench.tracking import MAX_RUN_NAME

    tail = f",seed={seed}"
    return (label if len(label) + len(tail) <= MAX_RUN_NAME else label[:MAX_RUN_NAME - len(tail) - 3] + "...") + tail


def checkpoint_dir(plan: Plan) -> Path:
    """Per-epoch checkpoints of running trials: beside the journal (local) or under ./mlruns (RDB)."""
    base = Path(plan.storage_url).parent if "://" not in plan.storage_url else Path("mlruns")
    return base / "checkpoints" / plan.spec.name


def _pruning_hook(trial: optuna.Trial, metric: str) -> Callable[[int, dict], None]:
    name = metric.removeprefix("eval/")

    def hook(epoch: int, metrics: dict) -> None:
        if name in metrics:
            trial.report(metrics[name], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")
    return hook


def run_one(study: optuna.Study, trial: optuna.Trial, plan: Plan, contexts: dict) -> TrialState:
    """Run a claimed trial and record its outcome; an exception fails this trial, never the study."""
    with _Heartbeat(study, optuna_adapter.trial_id(trial)):
        try:
            values = objective(trial, plan, contexts)
        except KeyboardInterrupt:  # Ctrl-C: mark it now, as the next run's stale-trial recovery would
            with _sigint_ignored(), contextlib.suppress(Exception):  # a second Ctrl-C does not cut this short
                retire(study, optuna_adapter.fresh_trial(study, optuna_adapter.trial_id(trial)), "interrupted (Ctrl-C)",
                       plan.tracking_uri)
            raise
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            return TrialState.PRUNED
        except Exception as e:  # a crash in one trial must not lose the others
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:2000])
            study.tell(trial, state=TrialState.FAIL)
            return TrialState.FAIL
    study.tell(trial, values)
    return TrialState.COMPLETE


@contextlib.contextmanager
def _sigint_ignored():
    import signal

    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to change
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


class _Budget:
    """How many more trials this invocation may start (shared by all workers through a lock)."""

    def __init__(self, limit: int | None, plan: Plan, shared=None):
        self.deadline = None if plan.timeout is None else plan.started + plan.timeout
        self.shared = shared  # multiprocessing.Value for several workers, else a plain counter
        self.left = limit

    def take(self) -> bool:
        if self.deadline is not None and time.time() >= self.deadline:
            return False
        if self.shared is not None:
            with self.shared.get_lock():
                if self.shared.value == 0:
                    return False
                self.shared.value -= 1  # -1 means unlimited: it never reaches 0
                return True
        if self.left is None:
            return True
        if self.left == 0:
            return False
        self.left -= 1
        return True

    def give_back(self) -> None:
        if self.shared is not None:
            with self.shared.get_lock():
                self.shared.value += 1
        elif self.left is not None:
            self.left += 1


def work(plan: Plan, budget: _Budget, on_trial_end: Callable[[], None] | None = None) -> None:
    """One worker: claim and run trials until the queue, the invocation budget or the time is used up."""
    if plan.workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // plan.workers))  # split the cores
    study = open_study(plan.spec, make_storage(plan.storage_url), create=False)
    contexts: dict = {}
    while budget.take():
        trial = claim(study)
        if trial is None:
            budget.give_back()
            return
        run_one(study, trial, plan, contexts)
        if on_trial_end:
            on_trial_end()


def _worker_main(plan: Plan, shared) -> None:
    try:
        work(plan, _Budget(None, plan, shared))
    except KeyboardInterrupt:  # its trial is already marked (run_one); no traceback from each worker
        pass


# ---------------------------------------------------------------------------
# The invocation: prepare, run workers, summarise


def counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    out = {s.name.lower(): 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                                       TrialState.RUNNING, TrialState.WAITING)}
    for t in trials:
        if t.state == TrialState.FAIL and not _counted(t):
            continue
        out[t.state.name.lower()] += 1
    return out


def best_text(study: optuna.Study) -> str:
    try:
        if len(study.directions) > 1:
            return f"{len(study.best_trials)} Pareto-optimal"
        return f"{study.best_value:.4g} (trial {study.best_trial.number})"
    except ValueError:
        return "-"


def run_study(plan: Plan, study: optuna.Study) -> dict[str, int]:
    """Run the plan's workers (in this process when there is one) with a live progress view."""
    waiting = counts(study)["waiting"]
    total = waiting if plan.max_trials is None else min(waiting, plan.max_trials)
    bar = progress_bar(total=total, desc=f"study {plan.spec.name}", unit="trial", enabled=plan.progress,
                       position=0, dynamic_ncols=True)

    def refresh() -> None:
        c = counts(study)
        bar.n = min(total, c["complete"] + c["pruned"] + c["fail"] - done_before)
        bar.set_postfix(done=c["complete"], running=c["running"], pruned=c["pruned"], failed=c["fail"],
                        best=best_text(study), refresh=False)
        bar.refresh()

    c0 = counts(study)
    done_before = c0["complete"] + c0["pruned"] + c0["fail"]
    if plan.workers == 1:
        work(plan, _Budget(plan.max_trials, plan), on_trial_end=refresh)
    else:
        ctx = mp.get_context("spawn")  # fork is unsafe with torch threads and open storages
        shared = ctx.Value("i", -1 if plan.max_trials is None else plan.max_trials)
        procs = [ctx.Process(target=_worker_main, args=(plan, shared), daemon=False) for _ in range(plan.workers)]
        for p in procs:
            p.start()
        try:
            while any(p.is_alive() for p in procs):
                time.sleep(1.0)
                refresh()
        except KeyboardInterrupt:  # pass it on, and let each worker mark its trial before we return
            _interrupt_workers(procs)
            raise
        for p in procs:
            p.join()
    refresh()
    bar.close()
    return counts(study)


def _interrupt_workers(procs: list, grace_s: float = 60.0) -> None:
    import signal

    for p in procs:
        if p.is_alive():
            with contextlib.suppress(OSError):
                os.kill(p.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches them already; a kill -INT does not
    deadline = time.time() + grace_s
    for p in procs:
        while p.is_alive() and time.time() < deadline:
            with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C does not abandon them
                p.join(timeout=0.5)
        if p.is_alive():
            p.terminate()


def _json(obj) -> str:
    import json

    return json.dumps(obj, default=str)
