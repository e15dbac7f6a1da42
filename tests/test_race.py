"""Racing a reproduction: after each round the studies whose claims are all settled stop, the others are
extended to twice their epochs (at most the report's) while the budget lasts; rounds are kept and resume."""

from __future__ import annotations

import json
from types import SimpleNamespace as NS

import pytest

from bench import reproduce
from bench.reproduce import _next_round


def claims(n_open: int, total: int, runs: int) -> reproduce.Claims:
    return reproduce.Claims(n_open, total, {f"run{i}" for i in range(runs)})


def test_open_claims_double_their_runs_epochs_within_the_time_left():
    opened = {"a": claims(3, 4, 2), "b": claims(0, 2, 0), "c": claims(1, 1, 2)}
    epochs, full, run_epoch_s = {"a": 1, "b": 1, "c": 4}, {"a": 8, "b": 8, "c": 4}, {"a": 5.0, "b": 5.0, "c": 0.5}
    assert _next_round(opened, epochs, full, run_epoch_s, left_s=100) == {"a": 2}  # b settled, c at its report's
    assert _next_round(opened, {**epochs, "a": 6}, full, run_epoch_s, left_s=100) == {"a": 8}  # capped at 8
    assert _next_round(opened, {**epochs, "a": 4}, full, run_epoch_s, left_s=25) == {"a": 6}  # what fits: 2 more
    assert _next_round(opened, epochs, full, run_epoch_s, left_s=5) == {}  # not one epoch of its 2 runs fits
    # the cost is that of the runs behind open claims only: one run's epoch fits where two would not
    assert _next_round({**opened, "a": claims(3, 4, 1)}, epochs, full, run_epoch_s, left_s=5) == {"a": 2}


def group(*run_ids):
    return NS(usable=[NS(run_id=r) for r in run_ids])


def comparison(settled: dict[str, bool], metric: str = "eval/tarr"):
    """A published table: a baseline row (runs b1, b2) and one row per entry (its runs r-<name>)."""
    base = NS(is_baseline=True, group=group("b1", "b2"), cells={metric: NS(diff=None, settled=False, metric=metric)})
    rows = [NS(is_baseline=False, group=group(f"r-{name}"), cells={metric: NS(diff=0.1, settled=s, metric=metric)})
            for name, s in settled.items()]
    return NS(rows=[base, *rows])


def test_open_claims_name_the_runs_behind_them_and_not_those_of_settled_ones():
    report = NS(studies=[NS(study=NS(name="a"), published=[comparison({"x": True, "y": False})])])
    c = reproduce.open_claims(report, "a")
    assert (c.open, c.total) == (1, 2)  # the baseline row is not a claim
    assert c.runs == {"b1", "b2", "r-y"}  # x's claim is settled: its runs stop
    assert reproduce.open_claims(report, "other").total == 0
    analysis = NS(studies=[NS(study=NS(name="a"), published=[comparison({"y": False}, "analysis/retrain/acc")])])
    assert reproduce.open_claims(analysis, "a").runs == set()  # training on cannot move an analysis' value


class FakeSetup:
    """Two studies: in `a` claim x is settled from round 1 and y after its second round; `b` is settled from
    round 1."""

    def __init__(self):
        self.studies = [("a.toml", NS(name="a", repeats=1, base={"optim": {"epochs": 4}})),
                        ("b.toml", NS(name="b", repeats=1, base={"optim": {"epochs": 4}}))]
        self.trained, self.reports = [], 0
        self.report_id, self.storage, self.tracking_uri, self.progress = "9", "journal", "sqlite:///x", False

    def run(self, path, scale):
        self.trained.append((path, scale["optim.epochs"]))
        return NS(ok=True, counts={"complete": 2})

    def report(self, log, reference=True):
        self.reports += 1
        settled_y = self.reports > 1  # after its extension
        return NS(studies=[NS(study=NS(name="a"), published=[comparison({"x": True, "y": settled_y})]),
                           NS(study=NS(name="b"), published=[comparison({"z": True})])])


@pytest.fixture
def extended(monkeypatch):
    calls = []

    def fake_extend(name, target, runs=None, **kw):
        calls.append((name, target, runs))
        return NS(text=lambda: f"{name} -> {target}", extended=[])

    monkeypatch.setattr("bench.studies.extend.extend_study", fake_extend)
    monkeypatch.setattr(reproduce, "report_summary", lambda report: "claims: ...")
    return calls


def test_a_race_extends_only_the_open_study_and_resumes_from_its_rounds(tmp_path, extended):
    state = tmp_path / "race.json"
    setup = FakeSetup()
    round1 = {"a": {"optim.epochs": 1}, "b": {"optim.epochs": 1}}
    out = reproduce.race(setup, 3600.0, round1, state, analyze=False, options={}, reference=False, log=False)
    assert setup.trained == [("a.toml", 1), ("b.toml", 1)]
    assert extended == [("a", 2, {"b1", "b2", "r-y"})]  # b's claims and a's x were settled after round 1
    assert [r["epochs"] for r in out.rounds] == [{"a": 1, "b": 1}, {"a": 2, "b": 1}]
    assert json.loads(state.read_text())["rounds"] == out.rounds

    again = FakeSetup()
    again.reports = 1  # resumed: `a` is settled now
    out = reproduce.race(again, 3600.0, round1, state, analyze=False, options={}, reference=False, log=False)
    assert again.trained == [] and len(extended) == 1  # round 1 not trained again, nothing extended
    assert len(out.rounds) == 2


def test_a_race_stopped_in_round_1_resumes_counting_the_time_it_spent(tmp_path, extended, monkeypatch):
    """Killed while study b trains (Ctrl-C here): the state file already holds the time spent and that study a
    finished round 1; the same command then trains b only and goes on from the time kept."""
    state = tmp_path / "race.json"
    round1 = {"a": {"optim.epochs": 1}, "b": {"optim.epochs": 1}}
    setup = FakeSetup()
    trained_b = setup.run

    def stopped(path, scale):
        if path == "b.toml":
            raise KeyboardInterrupt
        return trained_b(path, scale)

    setup.run = stopped
    with pytest.raises(KeyboardInterrupt):
        reproduce.race(setup, 3600.0, round1, state, analyze=False, options={}, reference=False, log=False,
                       spent_s=100.0)
    kept = json.loads(state.read_text())
    assert kept["rounds"] == [] and list(kept["round1"]) == ["a"] and kept["spent_s"] >= 100.0

    again = FakeSetup()
    out = reproduce.race(again, 3600.0, round1, state, analyze=False, options={}, reference=False, log=False)
    assert again.trained == [("b.toml", 1)]  # a is not trained again
    assert out.rounds[0]["spent_s"] >= 100.0 and out.rounds[0]["run_epoch_s"].keys() == {"a", "b"}


def test_the_state_file_is_rewritten_while_a_round_runs(tmp_path, monkeypatch):
    state = tmp_path / "race.json"
    monkeypatch.setattr(reproduce._Kept, "EVERY_S", 0.01)
    spent = iter(range(1000))
    kept = reproduce._Kept(state, {"rounds": []}, lambda: next(spent))
    with kept.beating():
        import time

        deadline = time.monotonic() + 10
        while json.loads(state.read_text())["spent_s"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert json.loads(state.read_text())["spent_s"] >= 3  # saved by the heartbeat, not only at the ends
    assert not list(tmp_path.glob("*.tmp"))  # written whole, through a temporary file
