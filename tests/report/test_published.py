"""Study-file `[variants]` and `[published]`: validation, and published-vs-measured comparisons
(verdicts, Welch CI and p-value against scipy, fractions of each evaluator's real-data value, the
report's own layout) on hand-made runs, so every number is known in advance."""

from __future__ import annotations

import math
import textwrap
import tomllib
from pathlib import Path

import pytest
from scipy import stats

from bench.cli import main
from bench.report.load import Group, RunData, StudyData
from bench.report.published import compare_table, layout, to_csv, verdict_lines
from bench.report.table import build_table
from bench.studies import load_study_file
from bench.studies.spec import PublishedTable

STUDIES = Path(__file__).resolve().parents[2] / "studies"

GOOD = """
name = "pub"
description = "variants and published values"
[base]
model.name = "cgan-mlp"
[variants.base]
[variants.deep]
model.mlp_blocks = 5
[variants.ls]
"techniques.real_target" = 0.9
[space]
"optim.batch_size" = { choices = [32, 64] }
[baseline]
variant = "base"
"optim.batch_size" = 32
[objective]
metrics = ["eval/tarr"]
directions = ["maximize"]
[[published]]
report = "002"
table = "Table 2"
reference = { accuracy = 0.99, is = 9.81 }
grid = ["variant", "optim.batch_size"]
rows = [
  { params = { variant = "base", "optim.batch_size" = 32 }, "eval/tarr" = 0.9, "eval/is" = 9.0 },
  { params = { variant = "deep", "optim.batch_size" = 64 }, "eval/tarr" = 0.95, label = "Deep" },
]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_variants_form_the_search_and_label_the_trials(tmp_path):
    spec, _ = load_study_file(write(tmp_path, GOOD))
    # nested (model.mlp_blocks = 5) and quoted ("techniques.real_target") keys both become dotted overrides
    assert spec.variants == {"base": {}, "deep": {"model.mlp_blocks": 5}, "ls": {"techniques.real_target": 0.9}}
    assert list(spec.search_space) == ["variant", "optim.batch_size"]
    assert len(spec.grid()) == 6 and spec.grid()[2] == {"variant": "deep", "optim.batch_size": 32}
    assert spec.short_label({"variant": "deep", "optim.batch_size": 32}) == "deep,batch_size=32"
    assert spec.config_overrides({"variant": "ls", "optim.batch_size": 64}) == {
        "techniques.real_target": 0.9, "optim.batch_size": 64}
    (table,) = spec.published
    assert table.reference.accuracy == 0.99 and table.reference.is_ == 9.81
    assert table.rows[1].values == {"eval/tarr": 0.95} and table.rows[1].label == "Deep"
    assert table.matches("2") and table.matches("report 002") and not table.matches("020")


def test_variants_alone_and_single_published_table(tmp_path):
    text = GOOD.replace('"optim.batch_size" = { choices = [32, 64] }', "").replace('"optim.batch_size" = 32\n', "")
    text = text.replace('grid = ["variant", "optim.batch_size"]\n', "").replace(', "optim.batch_size" = 32', "")
    text = text.replace(', "optim.batch_size" = 64', "").replace("[[published]]", "[published]")
    spec, _ = load_study_file(write(tmp_path, text))
    assert spec.grid() == [{"variant": "base"}, {"variant": "deep"}, {"variant": "ls"}]
    assert len(spec.published) == 1 and spec.baseline == {"variant": "base"}


BAD = [
    ("unknown variant key", GOOD.replace("model.mlp_blocks = 5", "model.mlp_blokcs = 5"),
     "variants.deep.model.mlp_blokcs"),
    ("variant value out of range", GOOD.replace("model.mlp_blocks = 5", "model.mlp_blocks = 50"),
     "variants.deep"),
    ("variant sets a space key", GOOD.replace("model.mlp_blocks = 5", '"optim.batch_size" = 16'),
     "also a key of [space]"),
    ("bad variant name", GOOD.replace("[variants.ls]", '[variants."l s"]'), "l s"),
    ("variant in [space]", GOOD.replace('[space]\n', '[space]\n"variant" = { choices = ["a"] }\n'), "reserved"),
    ("baseline names no variant", GOOD.replace('variant = "base"\n"optim', 'variant = "bse"\n"optim'), "bse"),
    ("unknown published metric", GOOD.replace('"eval/is" = 9.0', '"eval/iss" = 9.0'), "did you mean 'eval/is'"),
    ("published value not a number", GOOD.replace('"eval/is" = 9.0', '"eval/is" = "high"'), "eval/is"),
    ("published row without values", GOOD.replace(', "eval/tarr" = 0.95', ""), "no published value"),
    ("published param not searched", GOOD.replace('variant = "deep", "optim.batch_size" = 64',
                                                  'variant = "deep", "optim.batch_size" = 64, "optim.lr_g" = 1e-3'),
     "published.rows[1].params.optim.lr_g"),
    ("published param value not a choice", GOOD.replace('"deep", "optim.batch_size" = 64', '"deep", "optim.batch_size" = 65'),
     "published.rows[1].params.optim.batch_size"),
    ("published unknown variant", GOOD.replace('variant = "deep", "optim', 'variant = "deeper", "optim'), "deeper"),
    ("published row misses a key", GOOD.replace('variant = "deep", "optim.batch_size" = 64', 'variant = "deep"'),
     "missing optim.batch_size"),
    ("published duplicate row", GOOD.replace('variant = "deep", "optim.batch_size" = 64',
                                             'variant = "base", "optim.batch_size" = 32'), "same configuration"),
    ("published grid key", GOOD.replace('grid = ["variant", "optim.batch_size"]', 'grid = ["variant", "seed"]'),
     "published.grid"),
    ("published reference accuracy > 1", GOOD.replace("accuracy = 0.99", "accuracy = 99"), "accuracy"),
    ("published unknown field", GOOD.replace('table = "Table 2"', 'table = "Table 2"\ntabel = 1'), "tabel"),
    ("published report not a string", GOOD.replace('report = "002"', "report = 2"), "report"),
    ("published analysis metric malformed", GOOD.replace('"eval/is" = 9.0', '"analysis/Retrain" = 0.9'),
     "analysis/Retrain"),
    ("published TARR on unconditional model", GOOD.replace('model.name = "cgan-mlp"', 'model.name = "vanilla"')
     .replace('metrics = ["eval/tarr"]', 'metrics = ["eval/is"]'), "needs a conditional model"),
]


@pytest.mark.parametrize("case,text,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_variants_and_published_exit_2_naming_file_and_key(case, text, needle, tmp_path, capsys):
    path = write(tmp_path, text)
    store_dir = tmp_path / "store"
    assert main(["study", "run", str(path), "--tracking-uri", f"sqlite:///{store_dir}/mlflow.db", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and needle in err, err
    assert not store_dir.exists()


# ---------------------------------------------------------------------------
# Comparisons on hand-made runs


def group(label: str, params: dict, values: dict[str, list[float]]) -> Group:
    n = len(next(iter(values.values())))
    runs = [RunData(run_id=f"{label}-{i}", name=f"{label},seed={i}", status="FINISHED", seed=str(i), tags={},
                    params={k: str(v) for k, v in params.items()},
                    final={m: vals[i] for m, vals in values.items()}) for i in range(n)]
    return Group(label=label, runs=runs)


BASE = {"eval/tarr": [0.80, 0.82, 0.81], "eval/is": [8.0, 8.2, 8.1]}
GROUPS = {  # (batch, lr) -> values
    (32, 2e-4): BASE,
    (32, 2e-3): {"eval/tarr": [0.50, 0.52, 0.51], "eval/is": [8.3, 8.1, 8.2]},  # TARR clearly lower
    (64, 2e-4): {"eval/tarr": [0.79, 0.83, 0.80], "eval/is": [8.05, 8.3, 8.0]},
    (64, 2e-3): {"eval/tarr": [0.85, 0.86, 0.87], "eval/is": [9.0, 9.1, 9.2]},
}
REFERENCE = {"test_accuracy": 0.99, "is": 9.5, "fid_train_test": 1.0, "class_acc_geomean": 0.99}


def fixture_study() -> tuple[StudyData, object]:
    groups = [group(f"batch_size={b},lr_g={lr}", {"optim.batch_size": b, "optim.lr_g": lr}, v)
              for (b, lr), v in GROUPS.items()]
    study = StudyData("grid", "0", None, groups, [("eval/tarr", "maximize")], ["optim.batch_size", "optim.lr_g"])
    table = build_table("grid", groups, study.objectives, [groups[0]], "baseline", REFERENCE)
    return study, table


PUBLISHED = {
    "report": "002", "table": "Table 1", "reference": {"accuracy": 0.98, "is": 9.8},
    "grid": ["optim.batch_size", "optim.lr_g"],
    "rows": [
        {"params": {"optim.batch_size": 32, "optim.lr_g": 2e-4}, "eval/tarr": 0.9, "eval/is": 9.0},
        {"params": {"optim.batch_size": 32, "optim.lr_g": 2e-3}, "eval/tarr": 0.1, "eval/is": 1.0},  # both down
        {"params": {"optim.batch_size": 64, "optim.lr_g": 2e-4}, "eval/tarr": 0.9, "eval/is": 9.5},  # tie, up
        {"params": {"optim.batch_size": 64, "optim.lr_g": 2e-3}, "eval/tarr": 0.95},
        {"params": {"optim.batch_size": 128, "optim.lr_g": 2e-4}, "eval/tarr": 0.8},  # never run
    ],
}


def cell(comparison, batch, lr, metric):
    row = next(r for r in comparison.rows if r.params == {"optim.batch_size": batch, "optim.lr_g": lr})
    return row.cells[metric]


def test_verdicts_numbers_and_fractions():
    study, table = fixture_study()
    c = compare_table(study, table, PublishedTable.model_validate(PUBLISHED))
    assert c.baseline == "batch_size=32,lr_g=0.0002"
    # published down, ours down and clearly so
    down = cell(c, 32, 2e-3, "eval/tarr")
    res = stats.ttest_ind(GROUPS[(32, 2e-3)]["eval/tarr"], BASE["eval/tarr"], equal_var=False)
    assert down.verdict == "same direction, significant" and res.pvalue < 0.05
    assert math.isclose(down.diff.p, res.pvalue, rel_tol=1e-12)
    ci = res.confidence_interval(0.95)
    assert math.isclose(down.diff.ci_low, ci.low) and math.isclose(down.diff.ci_high, ci.high)
    assert math.isclose(down.published_diff, 0.1 - 0.9)
    # fractions: published / their ceiling, ours / our evaluator's real test accuracy
    assert math.isclose(down.published_frac, 0.1 / 0.98)
    assert math.isclose(down.measured_frac, 0.51 / 0.99)
    assert math.isclose(cell(c, 32, 2e-3, "eval/is").published_frac, 1.0 / 9.8)
    assert math.isclose(cell(c, 32, 2e-3, "eval/is").measured_frac, 8.2 / 9.5)
    # published IS down (1.0 < 9.0) but ours up, not significantly
    rev = cell(c, 32, 2e-3, "eval/is")
    assert rev.verdict == "reversed (not significant)" and rev.diff.p >= 0.05
    # published tie on TARR (0.9 vs 0.9)
    assert cell(c, 64, 2e-4, "eval/tarr").verdict == "published tie; ours not significant"
    # published up, ours up but within the noise
    up = cell(c, 64, 2e-4, "eval/is")
    assert up.verdict == "same direction, not significant" and up.diff.diff > 0 and up.diff.p >= 0.05
    assert cell(c, 64, 2e-3, "eval/tarr").verdict == "same direction, significant"
    assert cell(c, 32, 2e-4, "eval/tarr").verdict == "baseline"
    assert cell(c, 128, 2e-4, "eval/tarr").verdict.startswith("not measured")
    lines = verdict_lines(c)
    assert any(line.startswith("Report 002, Table 1: batch_size=32,lr_g=0.002 vs baseline, TARR: published -0.800, "
                               "ours -0.300 [95% CI") and line.endswith("same direction, significant.")
               for line in lines), lines


def test_layout_is_the_reports_grid_of_published_over_measured():
    study, table = fixture_study()
    c = compare_table(study, table, PublishedTable.model_validate(PUBLISHED))
    (tarr, inception) = layout(c)
    caption, head, body = tarr
    assert caption.startswith("TARR") and head == ["batch_size \\ lr_g", "0.0002", "0.002"]
    assert body[0] == ["batch_size 32", "0.900 / 0.810", "0.100 / 0.510"]
    assert body[1] == ["batch_size 64", "0.900 / 0.807", "0.950 / 0.860"]
    assert body[2] == ["batch_size 128", "0.800 / n/a", ""]
    assert inception[2][0] == ["batch_size 32", "9.00 / 8.10", "1.00 / 8.20"]
    rows = to_csv([c]).splitlines()
    assert rows[0].startswith("study,report,table,setting") and len(rows) == 1 + 8


def test_no_published_baseline_gives_no_verdict():
    study, table = fixture_study()
    spec = dict(PUBLISHED, rows=PUBLISHED["rows"][1:])  # the baseline row is not published
    c = compare_table(study, table, PublishedTable.model_validate(spec))
    assert cell(c, 32, 2e-3, "eval/tarr").verdict == "no verdict: the report gives no value for the baseline"
    assert any("has no published row" in n for n in c.notes)


# ---------------------------------------------------------------------------
# The study files that carry the reports' numbers


def test_report_study_files_carry_the_published_tables():
    from bench.run_config import all_keys

    spec, _ = load_study_file(STUDIES / "report002-table2.toml")
    assert list(spec.variants) == ["base", "vbn", "more-d", "deep-d", "deep-d-ls"] and spec.repeats >= 3
    assert spec.variants["deep-d-ls"] == {"model.d_depth": 4, "techniques.real_target": 0.9}
    t2, t3, t4, t5, t7 = spec.published
    assert (t2.table, len(t2.rows), t3.table, len(t3.rows)) == ("Table 2", 5, "Table 3", 3)
    assert [t.table for t in (t4, t5, t7)] == ["Table 4", "Table 5", "Table 7"]
    assert t4.rows[0].values["analysis/retrain/mix/gen100/test_acc"] == 0.965
    assert t7.rows[2].values == {"analysis/retrain/filtered/conf0.98/test_acc": 0.987,
                                 "analysis/retrain/filtered/conf0.99/test_acc": 0.988}
    assert t2.rows[4].values == {"eval/tarr": 0.991, "eval/is": 9.83}
    assert t3.rows[0].values == {"eval/class_acc_geomean": 0.987, "eval/tarr": 0.988}

    spec, _ = load_study_file(STUDIES / "report001-table.toml")
    assert len(spec.variants) == 10 and spec.baseline == {"variant": "medium"} and spec.repeats >= 3
    (t,) = spec.published
    assert (t.reference.accuracy, t.reference.is_) == (0.9846, 9.685)
    assert {r.params["variant"] for r in t.rows} == set(spec.variants)

    raw = tomllib.loads((STUDIES / "batch-lr-grid.toml").read_text())
    rows = raw["published"]["rows"]
    assert {(r["params"]["optim.batch_size"], r["params"]["optim.lr"]) for r in rows} == {
        (b, lr) for b in (32, 64, 128) for lr in (2e-5, 2e-4, 2e-3)}
    if "optim.lr" in all_keys():  # the key that sets both nets' learning rate (another branch adds it)
        spec, _ = load_study_file(STUDIES / "batch-lr-grid.toml")
        assert len(spec.grid()) == 9 and spec.repeats >= 3


@pytest.mark.parametrize("name", ["report001-table", "report002-table2"])
def test_every_variant_builds_and_runs_its_gan(name):
    """Each variant's overrides make a config whose G and D build and run (VBN with its reference)."""
    import torch

    from bench.run_config import build_config
    from bench.models import build_nets, count_params, uses_reference

    spec, _ = load_study_file(STUDIES / f"{name}.toml")
    d_params = {}
    for cell in spec.grid():
        cfg = build_config(spec.base, spec.config_overrides(cell))
        gan = build_nets(cfg.model)
        g, d = gan.generator.eval(), gan.discriminator.eval()
        y = torch.arange(4) % 10
        if uses_reference(g):
            g.set_reference(torch.randn(16, cfg.model.latent_dim), torch.arange(16) % 10)
        with torch.no_grad():
            x = g(torch.randn(4, cfg.model.latent_dim), y)
            assert x.shape == (4, 1, 28, 28) and d(x, y).numel() == 4
        d_params[cell["variant"]] = count_params(d)
    if name == "report002-table2":  # "deep D" is D4G3: a different D from the base's D3
        assert d_params["deep-d"] != d_params["base"] and d_params["deep-d"] == d_params["deep-d-ls"]
    else:  # shallow / medium / deep MLP CGANs: D grows with the blocks
        assert d_params["shallow"] < d_params["medium"] < d_params["deep"]


# ---------------------------------------------------------------------------
# Claims the runs' scale cannot test


def chance_study(epochs: int = 1, subset: int = 6000) -> tuple[StudyData, object]:
    """Every configuration at chance after a short run: TARR 0.10, IS near 1, some class never produced."""
    at_chance = {(32, 2e-4): [0.100, 0.101, 0.099], (32, 2e-3): [0.100, 0.102, 0.100],
                 (64, 2e-4): [0.099, 0.100, 0.101], (64, 2e-3): [0.101, 0.100, 0.100]}
    groups = [group(f"batch_size={b},lr_g={lr}", {"optim.batch_size": b, "optim.lr_g": lr, "optim.epochs": epochs,
                                                  "data.train_subset": subset, "data.dataset": "mnist"},
                    {"eval/tarr": v, "eval/is": [1.1 + x for x in v], "time/train_s": [60.0] * 3,
                     "time/eval_s": [10.0] * 3})
              for (b, lr), v in at_chance.items()]
    study = StudyData("grid", "0", None, groups, [("eval/tarr", "maximize")], ["optim.batch_size", "optim.lr_g"])
    return study, build_table("grid", groups, study.objectives, [groups[0]], "baseline", REFERENCE)


def test_a_study_at_chance_gets_no_direction_verdict(capsys):
    from bench.cli.report import print_verdicts
    from bench.report.judge import NOT_JUDGEABLE
    from bench.report.published import scale_note, summary_counts

    study, table = chance_study()
    c = compare_table(study, table, PublishedTable.model_validate({**PUBLISHED, "epochs": 10}))
    judged = [cell for r in c.rows for cell in r.cells.values() if cell.diff is not None]
    assert judged and all(cell.verdict.startswith(NOT_JUDGEABLE) for cell in judged)
    assert all("the report's scale (10 epochs on 60,000 images)" in cell.verdict for cell in judged)
    assert summary_counts([c]) == {NOT_JUDGEABLE: len(judged)}
    assert scale_note(c) == (f"Judged at 1 epoch on 6,000 images, 1.0% of the report's 10 epochs on 60,000 "
                             f"images: 0 claim(s) judged, {len(judged)} not judgeable at this scale.")
    print_verdicts([c])
    printed = capsys.readouterr().out
    assert NOT_JUDGEABLE in printed
    for direction in ("same direction", "reversed", "no measured difference"):
        assert f": {direction}" not in printed, printed


def test_what_the_report_s_scale_would_cost_comes_from_the_runs_own_timing():
    study, table = chance_study(epochs=1, subset=6000)
    c = compare_table(study, table, PublishedTable.model_validate({**PUBLISHED, "epochs": 10}))
    # 6 runs (row + baseline) x (60 s x 100 + 10 s x 10) = 36,600 s
    assert "about 10.2 h for these 6 runs on this machine" in cell(c, 32, 2e-3, "eval/tarr").verdict


def test_a_published_collapse_needs_the_report_s_epochs_but_ours_learned():
    study, table = fixture_study()  # ours learned (TARR 0.5-0.8); the report's lr 2e-3 cell collapsed (0.1)
    for g in study.groups:
        for r in g.runs:
            r.params.update({"optim.epochs": "1", "data.dataset": "mnist"})
    c = compare_table(study, table, PublishedTable.model_validate({**PUBLISHED, "epochs": 10}))
    collapse = cell(c, 32, 2e-3, "eval/is")  # published IS 1.0 vs 9.0; ours 8.2 after 1 epoch
    assert collapse.verdict.startswith("not judgeable at this scale: a collapse over training: needs the "
                                       "report's 10 epochs (ours: 1)")
    assert cell(c, 64, 2e-3, "eval/tarr").verdict == "same direction, significant"  # learned: judged as before


def test_claim_counts_leave_out_what_was_not_measured():
    from bench.report.published import claim_counts

    study, table = fixture_study()
    c = compare_table(study, table, PublishedTable.model_validate(PUBLISHED))
    judged, beyond = claim_counts([c])
    # rows x metrics with a baseline value: (32, 2e-3) x2, (64, 2e-4) x2, (64, 2e-3) x1 judged; (128, 2e-4) not run
    assert (judged, beyond) == (5, 0)
    study, table = chance_study()
    assert claim_counts([compare_table(study, table, PublishedTable.model_validate({**PUBLISHED, "epochs": 10}))]) \
        == (0, 5)


ANALYSIS = {"report": "002", "table": "Table 4", "rows": [
    {"params": {"optim.batch_size": 32, "optim.lr_g": 2e-4}, "analysis/retrain/mix/gen100/test_acc": 0.96},
    {"params": {"optim.batch_size": 64, "optim.lr_g": 2e-3}, "analysis/retrain/mix/gen100/test_acc": 0.97}]}


def test_an_analysis_of_generators_that_have_not_learned_labels_is_not_judgeable_with_its_cost():
    from bench.report.published import claims_line

    study, table = chance_study()  # TARR at chance: nothing an analysis of the digits could test
    c = compare_table(study, table, PublishedTable.model_validate(ANALYSIS))
    got = cell(c, 64, 2e-3, "analysis/retrain/mix/gen100/test_acc")
    assert got.verdict.startswith("not judgeable at this scale: this row's generators have not learned labels yet "
                                  "(TARR at its chance floor); the retrain analysis' time per run is unmeasured")
    assert claims_line([c]) == "claims: 0 settled, 0 judged, 1 not judgeable at this scale"
    (line,) = [line for line in verdict_lines(c) if "retrain" in line]
    assert "published +0.010, ours no value: not judgeable at this scale: this row's generators" in line
    for r in study.groups[0].runs:  # one configuration's runs were analysed here: 5 min each
        r.final["analysis/retrain/time_s"] = 300.0
    got = cell(compare_table(study, table, PublishedTable.model_validate(ANALYSIS)), 64, 2e-3,
               "analysis/retrain/mix/gen100/test_acc")
    assert got.verdict.endswith("the retrain analysis takes about 5 min a run here")
    for g in study.groups:  # analysed anyway (`gan-bench analyze retrain`): what was measured is compared
        for r in g.runs:
            r.final["analysis/retrain/mix/gen100/test_acc"] = 0.9
    got = cell(compare_table(study, table, PublishedTable.model_validate(ANALYSIS)), 64, 2e-3,
               "analysis/retrain/mix/gen100/test_acc")
    assert got.verdict.startswith("no measured difference")

    study, table = fixture_study()  # TARR learned (0.5-0.87) but not analysed yet: not measured, as before
    got = cell(compare_table(study, table, PublishedTable.model_validate(ANALYSIS)), 64, 2e-3,
               "analysis/retrain/mix/gen100/test_acc")
    assert got.verdict.startswith("not measured")


def test_a_reproduction_runs_only_the_parts_of_an_analysis_its_tables_need():
    from bench.analysis import retrain
    from bench.reproduce import options_for

    tables = [PublishedTable.model_validate(ANALYSIS), PublishedTable.model_validate({**ANALYSIS, "rows": [
        {"params": {"optim.batch_size": 32}, "analysis/retrain/filtered/conf0.98/test_acc": 0.9}]})]
    assert options_for(retrain, tables, {}).groups == ("mix", "filtered")
    assert options_for(retrain, tables, {"groups": ("few",), "epochs": 2}).groups == ("few",)  # the user's wins
