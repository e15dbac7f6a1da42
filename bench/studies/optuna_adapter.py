"""Every use of Optuna's private API, in one place.

Running a study needs a few things Optuna's public API does not give: writing to a trial this process
does not own (another worker's, or a dead one's), claiming a queued trial without creating a new
one when the queue is empty, the parameters a trial was queued with, and the journal file's lock.
Each function below says which Optuna internal it relies on; tests/studies/test_optuna_adapter.py runs
each against the installed Optuna and the storages gan-bench uses (journal file, SQLite,
in-memory), so an Optuna release that changes one fails there, not in a study. pyproject.toml
bounds Optuna to the versions tested (5.0).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

# The system attribute `Study.enqueue_trial` stores a queued trial's parameters under.
ENQUEUED_PARAMS_ATTR = "fixed_params"


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage `study` reads and writes (`Study._storage`, a private attribute)."""
    return study._storage


def trial_id(trial: FrozenTrial | optuna.Trial) -> int:
    """A trial's id in its storage, unlike `number` unique across studies (`_trial_id` of
    `FrozenTrial` and `Trial`, private attributes)."""
    return trial._trial_id


def enqueued_params(trial: FrozenTrial) -> dict[str, Any] | None:
    """The parameters `Study.enqueue_trial` queued the trial with (None if it was not queued).

    A WAITING trial, or a RUNNING one not yet started, has no `params` yet: this is its grid cell.
    Relies on the `fixed_params` system attribute that `enqueue_trial` writes and `Trial` reads.
    """
    return trial.system_attrs.get(ENQUEUED_PARAMS_ATTR)


def claim_waiting(study: optuna.Study, accept: Callable[[FrozenTrial], bool] | None = None) -> optuna.Trial | None:
    """Atomically take one WAITING trial (now RUNNING, owned by this process), or None when none waits.

    `accept`: take only a trial it accepts (a grouped worker takes the trials that fit its group).
    `Study.ask()` would create a new trial when the queue is empty; workers sharing a fixed budget
    must stop instead. Relies on what `Study._pop_waiting_trial_id` does (WAITING -> RUNNING through the
    storage's `set_trial_state_values`, which loses to another process's claim) and on constructing
    `optuna.Trial(study, trial_id)` for a trial that is RUNNING, as `Study.ask` does.
    """
    if accept is None:
        tid = study._pop_waiting_trial_id()
        return None if tid is None else optuna.Trial(study, tid)
    storage = storage_of(study)
    for t in storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,)):
        if not accept(t):
            continue
        try:
            if storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                return optuna.Trial(study, t._trial_id)
        except UpdateFinishedTrialError:
            continue
    return None


def set_trial_user_attr(study: optuna.Study, tid: int, key: str, value: Any) -> None:
    """A user attribute on any unfinished trial of the study, also one this process does not own (a
    heartbeat from a helper thread, the `retried` mark on a dead worker's trial).

    `Trial.set_user_attr` needs the `Trial` object of the process running it; this writes through the
    storage (`storage_of`). Raises `UpdateFinishedTrialError` when the trial is already finished.
    """
    storage_of(study).set_trial_user_attr(tid, key, value)


def fail_trial(study: optuna.Study, tid: int) -> bool:
    """Mark an unfinished trial FAIL; False when another process finished it first (it then owns it).

    `Study.tell` would refuse a trial another process claimed; relies on the storage's
    `set_trial_state_values` raising `UpdateFinishedTrialError` on a finished trial.
    """
    try:
        return storage_of(study).set_trial_state_values(tid, TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False


def fresh_trial(study: optuna.Study, tid: int) -> FrozenTrial:
    """The trial as the storage holds it now (user attributes written since it was claimed included)."""
    return storage_of(study).get_trial(tid)


@contextlib.contextmanager
def journal_file_lock(backend: optuna.storages.journal.JournalFileBackend) -> Iterator[None]:
    """Hold the lock a journal file's writers take before appending (no writer is half-way inside).

    Relies on `JournalFileBackend._lock` and `optuna.storages.journal._file.get_lock_file`.
    """
    from optuna.storages.journal._file import get_lock_file

    with get_lock_file(backend._lock):
        yield


def journal_backend(path: Path) -> optuna.storages.journal.JournalFileBackend:
    """The journal file backend (public API; here so the lock above and the backend stay together)."""
    from optuna.storages.journal import JournalFileBackend

    return JournalFileBackend(str(path))
