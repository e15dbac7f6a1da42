"""Racing a reproduction: after each round the studies whose claims are all settled stop, the others are
extended to twice their epochs (at most the report's) while the budget lasts; rounds are kept and resume."""

from __future__ import annotations

import json
from types import SimpleNamespace as NS

import pytest

from bench import reproduce
from bench.reproduce import _next_round


def test_open_studies_double_their_epochs_within_the_time_left():
    opened = {"a": (3, 4), "b": (0, 2), "c": (1, 1)}
    epochs, full, per_epoch = {"a": 1, "b": 1, "c": 4}, {"a": 8, "b": 8, "c": 4}, {"a": 10.0, "b": 10.0, "c": 1.0}
    assert _next_round(opened, epochs, full, per_epoch, left_s=100) == {"a": 2}  # b settled, c at its report's
    assert _next_round(opened, {**epochs, "a": 6}, full, per_epoch, left_s=100) == {"a": 8}  # capped at 8
    assert _next_round(opened, {**epochs, "a": 4}, full, per_epoch, left_s=25) == {"a": 6}  # what fits: 2 more
    assert _next_round(opened, epochs, full, per_epoch, left_s=5) == {}  # not one epoch fits


class FakeSetup:
    """Two studies: `a` settles after its second round, `b` is settled from round 1."""

    def __init__(self):
        self.studies = [("a.toml", NS(name="a", base={"optim": {"epochs": 4}})),
                        ("b.toml", NS(name="b", base={"optim": {"epochs": 4}}))]
        self.trained, self.reports = [], 0
        self.report_id, self.storage, self.tracking_uri, self.progress = "9", "journal", "sqlite:///x", False

    def run(self, path, scale):
        self.trained.append((path, scale["optim.epochs"]))
        return NS(ok=True)

    def report(self, log, reference=True):
        self.reports += 1
        settled_a = self.reports > 1  # after its extension
        cell = lambda s: NS(settled=s)  # noqa: E731
        return NS(studies=[NS(study=NS(name="a"), published=[NS(rows=[NS(cells={"m": cell(settled_a)})])]),
                           NS(study=NS(name="b"), published=[NS(rows=[NS(cells={"m": cell(True)})])])])


@pytest.fixture
def extended(monkeypatch):
    calls = []

    def fake_extend(name, target, **kw):
        calls.append((name, target))
        return NS(text=lambda: f"{name} -> {target}")

    monkeypatch.setattr("bench.studies.extend.extend_study", fake_extend)
    monkeypatch.setattr(reproduce, "report_summary", lambda report: "claims: ...")
    return calls


def test_a_race_extends_only_the_open_study_and_resumes_from_its_rounds(tmp_path, extended):
    state = tmp_path / "race.json"
    setup = FakeSetup()
    round1 = {"a": {"optim.epochs": 1}, "b": {"optim.epochs": 1}}
    out = reproduce.race(setup, 3600.0, round1, state, analyze=False, options={}, reference=False, log=False)
    assert setup.trained == [("a.toml", 1), ("b.toml", 1)]
    assert extended == [("a", 2)]  # b's claims were settled after round 1: it stops
    assert [r["epochs"] for r in out.rounds] == [{"a": 1, "b": 1}, {"a": 2, "b": 1}]
    assert json.loads(state.read_text())["rounds"] == out.rounds

    again = FakeSetup()
    again.reports = 1  # resumed: `a` is settled now
    out = reproduce.race(again, 3600.0, round1, state, analyze=False, options={}, reference=False, log=False)
    assert again.trained == [] and extended == [("a", 2)]  # round 1 not trained again, nothing extended
    assert len(out.rounds) == 2
