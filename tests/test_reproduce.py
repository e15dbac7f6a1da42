"""`gan-bench reproduce` end to end on a tiny study folder (CPU, seconds): only the studies whose
[published] names the report run, variants label the runs, and the report puts published beside
measured with verdicts that agree with scipy's Welch test on the runs' own values."""

from __future__ import annotations

import csv
import math
import textwrap

import pytest
from mlflow import MlflowClient
from scipy import stats

from bench.cli import main
from bench.reproduce import find_studies, run_analyses

VARIANTS = """
name = "rep-a"
description = "tiny: does real target 0.7 change TARR?"
repeats = 2
[base]
model.name = "cgan-mlp"
[variants.base]
[variants.ls]
"techniques.real_target" = 0.7
[baseline]
variant = "base"
[objective]
metrics = ["eval/tarr"]
directions = ["maximize"]
[[published]]
report = "9"
table = "Table 9"
reference = { accuracy = 0.99, is = 9.8 }
rows = [
  { label = "Base row", params = { variant = "base" }, "eval/tarr" = 0.5, "eval/is" = 5.0 },
  { label = "LS row", params = { variant = "ls" }, "eval/tarr" = 0.6, "eval/is" = 4.0 },
]
[[published]]
report = "9"
table = "Table 10"
reference = { accuracy = 0.99 }
rows = [
  { params = { variant = "base" }, "analysis/retrain/mix/gen10/test_acc" = 0.98 },
  { params = { variant = "ls" }, "analysis/retrain/mix/gen10/test_acc" = 0.97 },
]
"""

OTHER_REPORT = """
name = "rep-b"
description = "another report's study: must not run"
[base]
model.name = "cgan-mlp"
[space]
"model.d_dropout" = { choices = [0.1, 0.5] }
[objective]
metrics = ["eval/tarr"]
directions = ["maximize"]
[published]
report = "8"
table = "Table 1"
rows = [{ params = { "model.d_dropout" = 0.1 }, "eval/tarr" = 0.9 }]
"""


def expected_verdict(published_diff: float, ours: list[float], base: list[float], metric: str = "") -> str:
    """The verdict rule, recomputed from the runs' values with scipy (after the scale check: a baseline at
    its chance floor, TARR <= 0.15 or IS <= 1.5, leaves nothing to judge)."""
    floor = {"eval/tarr": 0.15, "eval/is": 1.5}.get(metric)
    if floor is not None and sum(base) / len(base) <= floor:
        return "not judgeable at this scale: nothing learned (our baseline is at its chance floor)"
    if floor is not None and sum(ours) / len(ours) <= floor:  # the published rows here all learned
        return "not judgeable at this scale: nothing learned (this row is at its chance floor"
    diff = sum(ours) / len(ours) - sum(base) / len(base)
    if len(set(ours)) == 1 and len(set(base)) == 1:  # no variance: no test
        if diff == 0:
            return "no measured difference (no test: no variance)"
        same = (diff > 0) == (published_diff > 0)
        return ("same direction, not significant" if same else "reversed") + " (no test: no variance)"
    sig = stats.ttest_ind(ours, base, equal_var=False).pvalue < 0.05
    if diff != 0 and (diff > 0) == (published_diff > 0):
        return "same direction, significant" if sig else "same direction, not significant"
    return "reversed (significant)" if sig else "reversed (not significant)"


def test_reproduce_runs_the_reports_studies_and_shows_published_beside_measured(tmp_path, store, tiny, data_root,
                                                                                capsys):
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "rep-a.toml").write_text(textwrap.dedent(VARIANTS))
    (folder / "rep-b.toml").write_text(textwrap.dedent(OTHER_REPORT))
    out = tmp_path / "out"
    args = reproduce_args(folder, store, out, data_root, tiny)
    args[1] = "009"  # the report as the user writes it: 009, 9 and "report 9" are one report
    assert main(args) == 0
    printed = capsys.readouterr().out

    c = MlflowClient(store)
    assert c.get_experiment_by_name("rep-b") is None  # report 8's study did not run
    exp = c.get_experiment_by_name("rep-a")
    runs = c.search_runs([exp.experiment_id], filter_string="tags.role = 'trial'")
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    by_variant: dict[str, list] = {}
    for r in runs:
        assert r.data.tags["config_label"] == r.data.tags["variant"]
        by_variant.setdefault(r.data.tags["variant"], []).append(r)
        # the variant's overrides reached the run's config
        target = next(v for k, v in r.data.params.items() if k.endswith("real_target"))
        assert float(target) == (0.7 if r.data.tags["variant"] == "ls" else 1.0)
    assert sorted(by_variant) == ["base", "ls"]
    tarr = {v: [r.data.metrics["eval/tarr"] for r in rs] for v, rs in by_variant.items()}
    inception = {v: [r.data.metrics["eval/is"] for r in rs] for v, rs in by_variant.items()}

    every = list(csv.DictReader(open(out / "published.csv", newline="")))
    rows = [r for r in every if r["table"] == "Table 9"]
    assert {r["study"] for r in rows} == {"rep-a"} and len(rows) == 4  # 2 rows x 2 metrics
    retrain = [r for r in every if r["table"] == "Table 10"]  # no run was analysed yet
    learned = all(sum(v) / len(v) > 0.15 for v in tarr.values())  # TARR above the judge's floor: analyses would run
    assert retrain[0]["verdict"] == "baseline"
    assert retrain[1]["verdict"].startswith("not measured (no finished run logged it)" if learned else
                                            "not judgeable at this scale: this row's generators have not learned")
    if not learned:  # nothing to analyse yet: --analyze would say so and train no classifier
        tables = [t for _, spec in find_studies(folder, "9", {}) for t in spec.published]
        capsys.readouterr()
        assert run_analyses(store, "rep-a", tables, {}, str(data_root), "cpu", False) == 0
        assert "not analysing ls (retrain): the generators have not learned labels yet" in capsys.readouterr().out
    assert retrain[0]["measured_n"] == "0"
    ls = next(r for r in rows if r["setting"] == "LS row" and r["metric"] == "eval/tarr")
    assert float(ls["published"]) == 0.6 and math.isclose(float(ls["published_frac"]), 0.6 / 0.99)
    assert math.isclose(float(ls["measured_mean"]), sum(tarr["ls"]) / 2, rel_tol=1e-9)
    assert math.isclose(float(ls["published_diff"]), 0.1, rel_tol=1e-9)
    want = expected_verdict(0.1, tarr["ls"], tarr["base"], "eval/tarr")
    assert ls["verdict"].startswith(want)
    ls_is = next(r for r in rows if r["setting"] == "LS row" and r["metric"] == "eval/is")
    assert ls_is["verdict"].startswith(expected_verdict(-1.0, inception["ls"], inception["base"], "eval/is"))
    p = stats.ttest_ind(inception["ls"], inception["base"], equal_var=False)
    assert math.isclose(float(ls_is["p"]), p.pvalue, rel_tol=1e-9)
    ci = p.confidence_interval(0.95)
    assert math.isclose(float(ls_is["diff_ci95_low"]), ci.low, rel_tol=1e-9)
    base = next(r for r in rows if r["setting"] == "Base row" and r["metric"] == "eval/tarr")
    assert base["verdict"] == "baseline" and base["baseline"] == "True"
    # ours as a fraction of our evaluator's real test accuracy (the reference row of table.csv)
    table = list(csv.DictReader(open(out / "table.csv", newline="")))
    real_acc = float(next(r for r in table if r["kind"] == "reference")["eval/tarr mean"])
    assert math.isclose(float(ls["measured_frac"]), float(ls["measured_mean"]) / real_acc, rel_tol=1e-9)

    md = (out / "report.md").read_text()
    assert "## Report 009: published beside measured" in md
    assert "Published beside measured: Report 9, Table 9" in md
    assert f"| LS row | ls | 0.600 / {float(ls['measured_mean']):.3f} |" in md  # the report's layout
    assert want in md and "LS row vs baseline, TARR: published +0.100" in printed
    html = (out / "report.html").read_text()
    assert "Published beside measured" in html and want in html

    # An analysis logs its metrics on the runs (here by hand, as `gan-bench analyze retrain` would) ...
    analysed = {"base": [0.95, 0.96], "ls": [0.90, 0.91]}
    for variant, rs in by_variant.items():
        for r, v in zip(rs, analysed[variant]):
            c.log_metric(r.info.run_id, "analysis/retrain/mix/gen10/test_acc", v, step=0)
    # ... and `gan-bench report` finds the published tables in the study file logged on the parent run
    out2 = tmp_path / "plain"
    assert main(["report", "rep-a", "--tracking-uri", store, "--out", str(out2), "--no-log", "--no-reference"]) == 0
    again = list(csv.DictReader(open(out2 / "published.csv", newline="")))
    assert [(r["setting"], r["metric"], r["verdict"]) for r in again if r["table"] == "Table 9"] == \
        [(r["setting"], r["metric"], r["verdict"]) for r in rows]
    assert all(r["measured_frac"] == "" for r in again)  # no reference row: no fraction of ours
    ls10 = next(r for r in again if r["table"] == "Table 10" and r["params"] == "ls")
    assert math.isclose(float(ls10["measured_mean"]), 0.905) and math.isclose(float(ls10["diff"]), -0.05)
    assert math.isclose(float(ls10["published_frac"]), 0.97 / 0.99)
    assert ls10["verdict"] == expected_verdict(-0.01, analysed["ls"], analysed["base"])
    assert "retrain mix/gen10 (published / measured)" in (out2 / "report.md").read_text()


def reproduce_args(folder, store, out, data_root, tiny) -> list[str]:
    args = ["reproduce", "9", "--studies", str(folder), "--tracking-uri", store, "--out", str(out), "--quiet",
            "--data-root", str(data_root), "--no-log"]
    for k, v in {**tiny, "data.train_subset": 160}.items():
        args += ["--set", f"{k}={v}"]
    return args


TINY_RETRAIN = ["real_size=100", "epochs=1", "min_steps=1", "finetune_epochs=1", "n_test=200", "max_draws=1",
                "few_per_class=2"]


@pytest.mark.slow
def test_reproduce_analyze_measures_analysis_rows_once(tmp_path, store, tiny, data_root, capsys, monkeypatch):
    from bench.report import judge

    monkeypatch.setattr(judge, "ACCURACY_MARGIN", -1.0)  # count the tiny runs' TARR as learned: analyses run
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "rep-a.toml").write_text(textwrap.dedent(VARIANTS))
    args = reproduce_args(folder, store, tmp_path / "out", data_root, tiny) + ["--analyze"]
    for item in TINY_RETRAIN:
        args += ["--analysis-set", item]
    assert main(args) == 0
    assert "rep-a: 4 run(s) analysed" in capsys.readouterr().out
    rows = [r for r in csv.DictReader(open(tmp_path / "out" / "published.csv", newline=""))
            if r["table"] == "Table 10"]
    assert [r["measured_n"] for r in rows] == ["2", "2"]
    c = MlflowClient(store)
    runs = c.search_runs([c.get_experiment_by_name("rep-a").experiment_id], filter_string="tags.role = 'trial'")
    by_variant: dict[str, list[float]] = {}
    for r in runs:
        by_variant.setdefault(r.data.tags["variant"], []).append(r.data.metrics["analysis/retrain/mix/gen10/test_acc"])
    assert math.isclose(float(rows[1]["measured_mean"]), sum(by_variant["ls"]) / 2, rel_tol=1e-9)
    assert main(args) == 0  # a rerun trains and analyses nothing more
    assert "rep-a: 0 run(s) analysed" in capsys.readouterr().out


def test_reproduce_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "rep-a.toml").write_text(textwrap.dedent(VARIANTS).replace('"eval/is" = 5.0', '"eval/iss" = 5.0'))
    store_dir = tmp_path / "store"
    base = ["reproduce", "--studies", str(folder), "--tracking-uri", f"sqlite:///{store_dir}/mlflow.db", "--quiet"]
    assert main([*base[:1], "9", *base[1:]]) == 2
    err = capsys.readouterr().err
    assert "rep-a.toml" in err and "eval/iss" in err
    assert main([*base[:1], "7", *base[1:]]) == 2
    assert "no study" in capsys.readouterr().err
    (folder / "rep-a.toml").write_text(textwrap.dedent(VARIANTS))
    assert main([*base[:1], "9", *base[1:], "--analyze", "--analysis-set", "epoch=1"]) == 2
    assert "--analysis-set epoch" in capsys.readouterr().err
    assert main([*base[:1], "9", *base[1:], "--analysis-set", "epochs=1"]) == 2
    assert "only with --analyze" in capsys.readouterr().err
    assert not store_dir.exists()


def test_reproduce_with_a_budget_prints_its_plan_keeps_it_and_judges_no_claim_at_chance(tmp_path, store, tiny,
                                                                                         data_root, capsys):
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "rep-a.toml").write_text(textwrap.dedent(VARIANTS))
    args = reproduce_args(folder, store, tmp_path / "out", data_root, tiny) + ["--budget", "5m", "--train-subset",
                                                                                "160"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "round 1: every study for 1 epoch, planned into 50% of the budget" in printed
    assert "budget 5m: measuring this machine's throughput" in printed
    assert "plan: 1 epoch on 160 of 60,000 training images" in printed and "runs, estimated" in printed
    assert printed.count("grouping: on the CPU a trial's 2 seeds train together") == 1  # decided once, for the
    # plan and the runs alike
    c = MlflowClient(store)
    runs = c.search_runs([c.get_experiment_by_name("rep-a").experiment_id], filter_string="tags.role = 'trial'")
    assert len(runs) == 4 and {(r.data.params["optim/epochs"], r.data.params["data/train_subset"]) for r in runs} \
        == {("1", "160")}
    # 1 epoch on 160 images: TARR is at chance everywhere, so no TARR claim gets a direction verdict
    tarr = [line for line in printed.splitlines() if "TARR" in line and "vs baseline" in line]
    assert tarr and all("not judgeable at this scale" in line for line in tarr), tarr
    assert "claims: " in printed and " not judgeable at this scale" in printed
    assert main(args) == 0  # the same command again: the kept plan, nothing left to train
    again = capsys.readouterr().out
    assert "resuming the plan of this command's first run" in again and "measuring" not in again


def test_plan_only_prints_the_plan_and_trains_nothing(tmp_path, store, tiny, data_root, capsys):
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "rep-a.toml").write_text(textwrap.dedent(VARIANTS))
    args = reproduce_args(folder, store, tmp_path / "out", data_root, tiny)
    assert main([*args, "--budget", "60m", "--train-subset", "160", "--plan-only"]) == 0
    printed = capsys.readouterr().out
    assert "plan: 1 epoch on 160 of 60,000 training images" in printed and "runs, estimated" in printed
    assert "runs train in groups of up to 2 (timed as groups)" in printed  # a trial's seeds, on the CPU by default
    # Both variants' seeds (4 runs) timed as one group; and none
    assert main([*args, "--budget", "60m", "--train-subset", "160", "--plan-only", "--group-size", "4"]) == 0
    assert "runs train in groups of up to 4 (timed as groups)" in capsys.readouterr().out
    assert main([*args, "--budget", "60m", "--train-subset", "160", "--plan-only", "--no-group"]) == 0
    assert "runs train in groups" not in capsys.readouterr().out
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("**/plans/*.json"))
    c = MlflowClient(store)
    assert c.get_experiment_by_name("rep-a") is None  # no study, no run
    assert main([*args, "--plan-only"]) == 2
    assert "--plan-only: only with --budget" in capsys.readouterr().err
