"""Preparing a study (the parent process, once, before any worker starts): the Optuna study and the
MLflow parent run, stale trials retried, the budget queued.

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
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from bench.studies import optuna_adapter
from bench.studies.spec import StudySpec, file_hash
from bench.studies.storage import check_storage_url, describe, exclusive, make_storage, open_study, storage_error
from bench.tracking import (TAG_ROLE, TAG_STUDY, check_reachable, client, ensure_experiment, mask_uri,
                            no_download_bars, owner_tags)

STALE_AFTER_S = 300.0  # a RUNNING trial on another host without a heartbeat for this long is dead
PARENT_ATTR = "mlflow_parent_run_id"


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
    # With a timeout: None starts trials while time is left (Optuna's timeout); seconds: a trial expected to take
    # this long, or as long as the longest one this worker ran, starts only if it ends in time (a budget).
    trial_s: float | None = None
    workers: int = 1
    group_size: int = 1  # runs (trials x seeds) a worker trains as one group; 1: one run at a time
    progress: bool = True
    retried: list[int] = field(default_factory=list)
    # `timeout` counts once for the invocation, from its start (the CLI passes when it began, before
    # `prepare`): a worker that started its own clock later (spawned ones seconds later) could overrun.
    started: float = field(default_factory=time.time)


RETRIES_ATTR = "retries"  # a retry names the trial it trains again
EXTENDS_ATTR = "extends"  # an extension (`bench.studies.extend`) names the finished trial it trains longer
EPOCHS_ATTR = "epochs"  # on an extension trial: the epochs its runs have trained


def retried(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """The numbers of the trials that a later trial trains again: a dead worker's (marked `retried`)
    and failed ones queued again by `retry_failed`."""
    return ({t.number for t in trials if t.user_attrs.get("retried", False)}
            | {t.user_attrs[RETRIES_ATTR] for t in trials if RETRIES_ATTR in t.user_attrs})


def uses_budget(trial: optuna.trial.FrozenTrial, retried_numbers: set[int]) -> bool:
    """Trials that use up budget: all except failures that were retried (their retry counts) and extensions
    (the trial they extend counts)."""
    return trial.number not in retried_numbers and EXTENDS_ATTR not in trial.user_attrs


def retry_failed(study: optuna.Study) -> list[int]:
    """Queue every failed trial again with its parameters (once: a retry that fails is retried by the next
    invocation). A failure's cause (a damaged data file, a full disk) may be gone by now; if it is not,
    the retry fails again and `study run` exits non-zero saying so."""
    trials = study.get_trials(deepcopy=False)
    done = retried(trials)
    again = [t for t in trials if t.state == TrialState.FAIL and t.number not in done]
    for t in again:
        _enqueue_again(study, t)
    return [t.number for t in again]


def _enqueue_again(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
    # A grid cell is the trial's queued params (a trial claimed but not started has no params yet).
    params = optuna_adapter.enqueued_params(t) or t.params
    study.enqueue_trial(params, user_attrs={"retry_of": t.user_attrs.get("retry_of", t.number),
                                            RETRIES_ATTR: t.number})


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
    _enqueue_again(study, t)
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
    again = retried(trials)
    if spec.sampler.type == "grid":
        # A trial's cell is the params it was enqueued with: a WAITING trial has no params yet,
        # and neither has a RUNNING one that another process claimed but has not started.
        seen = [optuna_adapter.enqueued_params(t) or t.params for t in trials if uses_budget(t, again)]
        todo = [cell for cell in spec.grid()[:spec.n_trials] if cell not in seen]
        # The baseline first: a study stopped early (a budget's deadline) can still compare what it trained.
        base = spec.baseline or {}
        todo.sort(key=lambda cell: not base or any(cell.get(k) != v for k, v in base.items()))
        for cell in todo:
            study.enqueue_trial(cell)
        return len(todo)
    missing = spec.n_trials - sum(1 for t in trials if uses_budget(t, again))
    for _ in range(max(0, missing)):
        study.enqueue_trial({})
    return max(0, missing)


@dataclass
class Prepared:
    """What `prepare` found and did: the study, its MLflow parent run, the trials queued again."""

    study: optuna.Study
    parent_run_id: str
    stale: list[int]   # left RUNNING by a dead worker
    failed: list[int]  # failed in an earlier invocation


def prepare(spec: StudySpec, study_text: str, storage_url: str, tracking_uri: str,
            force_new: bool = False) -> Prepared:
    """Create (or resume) the Optuna study and the MLflow parent run; retry what died or failed; fill the queue.

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


def _json(obj) -> str:
    import json

    return json.dumps(obj, default=str)


def _existing_parent(storage: optuna.storages.BaseStorage, name: str) -> tuple[bool, str | None]:
    """(the Optuna study exists, its MLflow parent run id)."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return False, None
    return True, storage.get_study_user_attrs(study_id).get(PARENT_ATTR)


def _check_same_study(spec: StudySpec, study_text: str, tracking_uri: str, parent_id: str, storage_url: str) -> None:
    from bench.errors import StudyError

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
    import tempfile
    import tomllib

    try:
        with tempfile.TemporaryDirectory(prefix="gan-bench-") as tmp, no_download_bars():
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
                    experiment_id: str, force_new: bool = False) -> Prepared:
    try:
        storage = make_storage(storage_url)
        exists, old_parent = _existing_parent(storage, spec.name)
    except Exception as e:
        raise storage_error(storage_url, e) from None
    if exists and force_new:
        n = _delete_study(spec, storage, tracking_uri, experiment_id)
        print(f"--force-new: deleted the Optuna study {spec.name!r} and soft-deleted its {n} MLflow run(s) "
              "(`mlflow gc` removes them for good)", file=sys.stderr)
    elif old_parent is not None:
        _check_same_study(spec, study_text, tracking_uri, old_parent, storage_url)
    try:
        study = open_study(spec, storage)
    except Exception as e:
        raise storage_error(storage_url, e) from None
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
        tags.update(owner_tags())
        run = mlflow.create_run(experiment_id, run_name=f"study:{spec.name}", tags={k: str(v) for k, v in tags.items()})
        parent_id = run.info.run_id
        mlflow.log_text(parent_id, study_text, "study.toml")
        study.set_user_attr(PARENT_ATTR, parent_id)
    else:
        mlflow.update_run(parent_id, status="RUNNING")
        for key, value in owner_tags().items():
            mlflow.set_tag(parent_id, key, value)
    try:
        stale = recover_stale(study, tracking_uri)
        failed = retry_failed(study)
        enqueue_budget(spec, study)
    except BaseException as e:  # never leave the parent RUNNING behind a failed preparation
        with contextlib.suppress(Exception):
            mlflow.set_tag(parent_id, "error", f"preparation failed: {type(e).__name__}: {e}"[:5000])
            mlflow.set_terminated(parent_id, "FAILED")
        raise
    return Prepared(study, parent_id, stale, failed)
