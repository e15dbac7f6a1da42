"""Baselines: one configuration, or one per model when a technique study spans models."""

import pytest

from bench.report.baseline import resolve_baseline
from bench.errors import ReportError
from bench.report.load import Group, RunData, StudyData
from bench.report.table import build_table, verdict


def group(model: str, r1: float, tarr: list[float]) -> Group:
    params = {"model.name": model, "techniques.r1_gamma": str(r1)}
    runs = [RunData(f"{model}-{r1}-{s}", "run", "FINISHED", str(s), {}, params, final={"eval/tarr": v})
            for s, v in enumerate(tarr)]
    return Group(f"model.name={model}, r1={r1:g}", runs, config_id=f"{model}-{r1}")


def study(groups, baseline_tag):
    s = StudyData.__new__(StudyData)
    s.name, s.groups, s.notes, s.objectives = "r1", groups, [], [("eval/tarr", "maximize")]
    s.tag = lambda key: baseline_tag if key == "baseline" else None
    return s


def test_a_baseline_per_model_compares_each_configuration_within_its_model():
    groups = [group("dcgan", 0.0, [0.50, 0.52, 0.54]), group("dcgan", 10.0, [0.70, 0.72, 0.74]),
              group("cgan", 0.0, [0.90, 0.91, 0.92]), group("cgan", 10.0, [0.80, 0.81, 0.82])]
    bases, note = resolve_baseline(study(groups, '{"techniques.r1_gamma": 0.0}'), None, None)
    assert [b.config_id for b in bases] == ["dcgan-0.0", "cgan-0.0"]
    assert "model.name" in note
    table = build_table("r1", groups, [("eval/tarr", "maximize")], bases, note)
    dc, cg = table.row(groups[1].label), table.row(groups[3].label)
    assert dc.base.group is groups[0] and cg.base.group is groups[2]
    assert dc.diffs["eval/tarr"].diff == pytest.approx(0.20)   # vs the DCGAN baseline, not the CGAN one
    assert cg.diffs["eval/tarr"].diff == pytest.approx(-0.10)
    assert [r.is_baseline for r in table.rows] == [True, False, True, False]
    text = "\n".join(verdict(table, [("eval/tarr", "maximize")]))
    assert f"{groups[1].label} vs {groups[0].label}" in text and f"{groups[3].label} vs {groups[2].label}" in text


def test_a_baseline_matching_every_configuration_is_refused():
    groups = [group("dcgan", 0.0, [0.5, 0.6]), group("dcgan", 10.0, [0.7, 0.8])]
    with pytest.raises(ReportError, match="matches 2 configurations"):
        resolve_baseline(study(groups, '{"model.name": "dcgan"}'), None, None)
    bases, _ = resolve_baseline(study(groups, '{"techniques.r1_gamma": 0.0}'), None, None)
    assert len(bases) == 1 and bases[0] is groups[0]  # one match: a single baseline, as before
