"""bench.studies.optuna_adapter against the installed Optuna, on the storages gan-bench uses.

Each test exercises one adapter function the way running a study uses it, so an Optuna release that
renames or changes one of the internals it relies on fails here (pyproject bounds Optuna to the
versions these tests passed on).
"""

from __future__ import annotations

import threading
import time

import optuna
import pytest
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from bench.studies import optuna_adapter as oa
from bench.studies.storage import make_storage
from tests.conftest import time_limit

optuna.logging.set_verbosity(optuna.logging.WARNING)
STORAGES = ("journal", "sqlite", "memory")


@pytest.fixture(params=STORAGES)
def studies(request, tmp_path):
    """A function giving a new `Study` object on one shared storage each call, as two workers see it."""
    if request.param == "journal":
        url = str(tmp_path / "optuna-journal.log")
        storage = make_storage(url)  # what `study run` opens (journal repair included)
        make = lambda: make_storage(url)  # noqa: E731 (a second worker opens the file again)
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'optuna.db'}"
        storage = make_storage(url)
        make = lambda: make_storage(url)  # noqa: E731
    else:
        storage = optuna.storages.InMemoryStorage()
        make = lambda: storage  # noqa: E731 (one process: the same object)
    optuna.create_study(study_name="s", storage=storage)
    return lambda: optuna.load_study(study_name="s", storage=make())


def test_storage_of_is_where_the_study_writes(studies):
    study = studies()
    trial = study.ask()
    oa.storage_of(study).set_trial_user_attr(oa.trial_id(trial), "k", 1)
    assert studies().trials[0].user_attrs == {"k": 1}
    assert isinstance(oa.storage_of(study), optuna.storages.BaseStorage)


def test_trial_id_of_a_trial_and_its_frozen_copy(studies):
    study = studies()
    first, second = study.ask(), study.ask()
    frozen = study.trials
    assert [oa.trial_id(t) for t in frozen] == [oa.trial_id(first), oa.trial_id(second)]
    assert oa.trial_id(first) != oa.trial_id(second)
    assert oa.storage_of(study).get_trial(oa.trial_id(second)).number == second.number


def test_enqueued_params_are_the_queued_cell(studies):
    study = studies()
    study.enqueue_trial({"x": 3, "lr": 1e-3})
    study.ask()  # queue popped by ask: the enqueued trial
    study.ask()  # not enqueued
    queued, plain = study.trials
    assert oa.enqueued_params(queued) == {"x": 3, "lr": 1e-3} and queued.params == {}
    assert oa.enqueued_params(plain) is None
    study.enqueue_trial({"x": 4})
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    assert oa.enqueued_params(waiting) == {"x": 4}


def test_claim_waiting_takes_each_queued_trial_once_and_never_creates_one(studies):
    a, b = studies(), studies()
    assert oa.claim_waiting(a) is None and a.trials == []  # empty queue: nothing created (unlike ask)
    a.enqueue_trial({"x": 1})
    a.enqueue_trial({"x": 2})
    first = oa.claim_waiting(a)
    second = oa.claim_waiting(b)  # another worker's view of the same study
    assert isinstance(first, optuna.Trial) and isinstance(second, optuna.Trial)
    assert oa.claim_waiting(a) is None and oa.claim_waiting(b) is None
    assert {oa.trial_id(first), oa.trial_id(second)} == {oa.trial_id(t) for t in a.trials}
    assert all(t.state == TrialState.RUNNING for t in studies().trials)
    # The claimed trial is owned: it samples its queued cell and can be told.
    x = first.suggest_int("x", 0, 10)
    assert x == oa.enqueued_params(oa.fresh_trial(a, oa.trial_id(first)))["x"]
    a.tell(first, float(x))
    assert oa.fresh_trial(a, oa.trial_id(first)).state == TrialState.COMPLETE


def test_a_running_trial_cannot_be_claimed_again(studies):
    """What `_pop_waiting_trial_id` relies on when two workers race for one trial."""
    study = studies()
    study.enqueue_trial({"x": 1})
    trial = oa.claim_waiting(study)
    assert oa.storage_of(study).set_trial_state_values(oa.trial_id(trial), TrialState.RUNNING) is False


def test_user_attrs_on_a_trial_another_worker_owns(studies):
    owner, other = studies(), studies()
    owner.enqueue_trial({})
    trial = oa.claim_waiting(owner)
    before = other.trials[0]
    oa.set_trial_user_attr(other, oa.trial_id(before), "heartbeat", 123.0)
    assert "heartbeat" not in before.user_attrs  # a frozen copy does not change ...
    assert oa.fresh_trial(other, oa.trial_id(before)).user_attrs["heartbeat"] == 123.0  # ... the storage does
    owner.tell(trial, 1.0)
    with pytest.raises(UpdateFinishedTrialError):
        oa.set_trial_user_attr(other, oa.trial_id(before), "late", True)


def test_fail_trial_fails_an_unfinished_trial_and_loses_to_a_finished_one(studies):
    study = studies()
    study.enqueue_trial({})
    study.enqueue_trial({})
    running = oa.claim_waiting(study)
    assert oa.fail_trial(studies(), oa.trial_id(running)) is True
    assert oa.fresh_trial(study, oa.trial_id(running)).state == TrialState.FAIL
    done = oa.claim_waiting(study)
    study.tell(done, 2.0)
    assert oa.fail_trial(studies(), oa.trial_id(done)) is False
    assert oa.fresh_trial(study, oa.trial_id(done)).state == TrialState.COMPLETE


def test_journal_file_lock_holds_off_the_writers(tmp_path):
    path = tmp_path / "optuna-journal.log"
    backend = oa.journal_backend(path)
    storage = optuna.storages.JournalStorage(backend)
    study = optuna.create_study(study_name="s", storage=storage)
    wrote = threading.Event()

    def write():
        study.enqueue_trial({"x": 1})  # a journal append: takes the same lock
        wrote.set()

    with oa.journal_file_lock(backend):
        size = path.stat().st_size
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        time.sleep(1.0)
        assert not wrote.is_set() and path.stat().st_size == size
    assert wrote.wait(time_limit(30))
    writer.join(time_limit(5))
    assert path.stat().st_size > size


def test_a_running_trial_beats_until_it_ends(monkeypatch):
    """The heartbeat other workers read to tell a live trial from a dead worker's: written while the
    trial runs, not after."""
    import time

    import optuna

    from bench.studies import workers

    monkeypatch.setattr(workers, "HEARTBEAT_S", 0.05)
    study = optuna.create_study()
    trial = study.ask()
    with workers._Heartbeat(study, trial._trial_id):
        deadline = time.monotonic() + 10
        while "heartbeat" not in study.trials[0].user_attrs and time.monotonic() < deadline:
            time.sleep(0.02)
        first = study.trials[0].user_attrs.get("heartbeat")
        assert first is not None
        while study.trials[0].user_attrs["heartbeat"] == first and time.monotonic() < deadline:
            time.sleep(0.02)
        assert study.trials[0].user_attrs["heartbeat"] > first  # it goes on beating
    last = study.trials[0].user_attrs["heartbeat"]
    time.sleep(0.2)
    assert study.trials[0].user_attrs["heartbeat"] == last  # and stops with the trial


def test_a_grid_queues_its_baseline_first():
    """A study stopped at a budget's deadline has trained its baseline, so what it did train can be compared."""
    from bench.studies.preparation import enqueue_budget
    from bench.studies.spec import load_study_file

    spec = load_study_file("studies/batch-lr-grid.toml")[0]
    assert spec.grid()[0] != spec.baseline  # the file's order does not start with it
    study = optuna.create_study()
    assert enqueue_budget(spec, study) == 9
    queued = [oa.enqueued_params(t) for t in study.get_trials(deepcopy=False)]
    assert queued[0] == spec.baseline and sorted(map(str, queued)) == sorted(map(str, spec.grid()))


def test_a_budgets_deadline_starts_no_trial_expected_to_end_after_it(monkeypatch):
    """`study run --timeout` starts trials while time is left (Optuna's timeout); a reproduction's budget
    (`trial_s`) starts one only if it is expected to end in time: as long as given, or as the longest so far."""
    from types import SimpleNamespace as NS

    from bench.studies import workers

    clock = [0.0]
    monkeypatch.setattr(workers.time, "time", lambda: clock[0])
    optuna_like = workers.Budget(None, NS(timeout=100.0, started=0.0, trial_s=None))
    budget = workers.Budget(None, NS(timeout=100.0, started=0.0, trial_s=10.0))
    assert budget.take() and optuna_like.take()  # t=0: 10 s expected, ends at 10
    clock[0] = 40.0  # the first trial took 40 s
    assert budget.take() and optuna_like.take()  # ends at about 80
    clock[0] = 75.0
    assert optuna_like.take()  # time is left: Optuna's timeout starts it
    assert not budget.take()  # 75 + 40 > 100: would end after the deadline
    assert not workers.Budget(None, NS(timeout=100.0, started=0.0, trial_s=30.0)).take()  # 75 + 30 > 100
