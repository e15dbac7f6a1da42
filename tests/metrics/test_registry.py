"""The metric registry (bench.metrics.registry) and everything that reads it: study validation, report
columns, the evaluator's output and docs/metrics.md's table."""

from __future__ import annotations

import textwrap

import pytest
import torch

from bench import evaluator as ev
from bench.run_config import build_config
from bench.data import load_dataset
from bench.metrics import registry
from bench.metrics.registry import Direction, Needs
from bench.models import build_nets
from bench.report.common import COLUMNS, CORE_METRICS, REFERENCE_MAP
from bench.errors import StudyError
from bench.studies.spec import load_study_file

NEW = ("eval/precision", "eval/recall", "eval/density", "eval/coverage", "eval/intra_fid")


def test_every_logged_name_is_unique_and_found_again():
    keys = registry.known_keys()
    assert len(keys) == len(set(keys))
    for key in keys:
        assert registry.lookup(key) is not None and registry.lookup(key).keys().count(key) == 1
    assert registry.lookup("eval/class_acc_3").name == "class_acc_{c}"
    assert registry.label("eval/intra_fid_7") == "FID of class 7"
    assert registry.reference_key("eval/intra_fid_7") == "intra_fid_7_train_test"
    assert registry.lookup("eval/class_acc_x") is None and registry.lookup("eval/precision2") is None
    with pytest.raises(ValueError, match=r"unknown metric 'eval/presicion' \(did you mean 'eval/precision'\?\)"):
        registry.get("eval/presicion")


def test_directions_have_one_spelling_and_optuna_is_derived():
    assert Direction.MAX.optuna == "maximize" and Direction.MIN.optuna == "minimize"
    assert Direction.HALF.optuna is None and Direction.NONE.optuna is None
    assert Direction.from_optuna("minimize") is Direction.MIN
    with pytest.raises(ValueError, match="'lower'"):
        Direction.from_optuna("lower")
    assert registry.get("eval/fid").direction is Direction.MIN
    assert all(registry.get(k).direction is Direction.MAX for k in NEW[:4])
    assert registry.get("eval/intra_fid").direction is Direction.MIN


def test_new_metrics_are_report_columns_with_a_real_data_reference():
    cols = {c.metric: c for c in COLUMNS}
    for key in NEW:
        assert key in cols and cols[key].label == registry.get(key).label
        assert REFERENCE_MAP[key] == f"{key.removeprefix('eval/')}_train_test"
    assert cols["eval/fid"].direction is Direction.MIN and cols["eval/fid"].text(12.345) == "12.35"
    assert cols["eval/d_acc_real_test"].direction is Direction.HALF
    assert {"eval/is", "eval/fid", "time/train_s"} <= set(CORE_METRICS)
    assert "eval/is_std" not in cols and "eval/class_acc_0" not in cols  # diagnostics / per-class: not tabled


def test_the_metrics_table_renders_each_metric_once():
    """docs/metrics.md's table (tests/test_docs.py checks the page holds it)."""
    table = registry.markdown_table()
    assert "| `eval/intra_fid` | lower |" in table and "conditional model, real features" in table
    assert "| `eval/class_acc_0..9` | higher |" in table
    assert len(table.splitlines()) == 2 + len(registry.METRICS)


# ------------------------------------------------------------------ the evaluator logs what the table lists


@pytest.fixture(scope="module")
def mnist_test(data_root):
    return load_dataset(data_root, "mnist", "test", "cpu", download=False)


@pytest.mark.parametrize("model", ["cgan-mlp", "vanilla"])
def test_evaluator_logs_exactly_the_registry_s_metrics(model, mnist_test, data_root):
    cfg = build_config({}, {"model.name": model, "model.hidden": 32, "eval.n_samples": 60, "eval.n_per_class": 6,
                            "eval.n_real": 100, "eval.splits": 2, "data.root": str(data_root)})
    torch.manual_seed(0)
    gan = build_nets(cfg.model, num_classes=10)
    scorer = ev.load_shipped("mnist")
    out = ev.evaluate_gan(gan, scorer, mnist_test, cfg.eval, cfg.model.latent_dim)
    assert sorted(out) == sorted(registry.evaluated(conditional=gan.conditional))
    assert all(0.0 <= out[k] <= 1.0 for k in ("precision", "recall", "coverage"))
    assert out["density"] >= 0.0
    if gan.conditional:
        per_class = [out[f"intra_fid_{c}"] for c in range(10)]
        assert out["intra_fid"] == pytest.approx(sum(per_class) / 10) and out["intra_fid"] > 0
    # the real k-NN manifold is computed once per real set, then reused
    ref = scorer.real_reference(mnist_test, 100)
    cached = ref["manifold"]
    ev.evaluate_gan(gan, scorer, mnist_test, cfg.eval, cfg.model.latent_dim)
    assert ref["manifold"] is cached


def test_real_scores_hold_the_new_metrics_references(mnist_test, data_root):
    cfg = build_config({}, {"eval.n_samples": 60, "eval.n_real": 120, "eval.splits": 2, "data.root": str(data_root)})
    train = load_dataset(data_root, "mnist", "train", "cpu", download=False).subset(120)
    scores = ev.real_scores(ev.load_shipped("mnist"), train, mnist_test, cfg.eval)
    for key in NEW:
        assert REFERENCE_MAP[key] in scores
    # real training digits against real test digits: a well-matched pair of sets
    assert scores["precision_train_test"] > 0.6 and scores["coverage_train_test"] > 0.6


# ------------------------------------------------------------------ study objectives


STUDY = """
name = "metrics"
description = "x"
[base]
model.name = "{model}"
[space]
"techniques.real_target" = {{ choices = [1.0, 0.9] }}
[objective]
metrics = {metrics}
"""


def _load(tmp_path, data_root, model: str, metrics: list[str], extra: str = ""):
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(model=model, metrics=str(metrics).replace("'", '"')) + extra)
    return load_study_file(path, {"data.root": str(data_root)})[0]


def test_a_study_may_aim_at_precision_and_directions_default_to_the_registry(tmp_path, data_root):
    spec = _load(tmp_path, data_root, "dcgan", ["eval/precision", "eval/fid"])
    assert spec.objective.directions == ["maximize", "minimize"]
    spec = _load(tmp_path, data_root, "cgan-conv", ["eval/intra_fid", "eval/intra_fid_3"])
    assert spec.objective.directions == ["minimize", "minimize"]


def test_intra_fid_on_an_unconditional_model_is_refused(tmp_path, data_root):
    with pytest.raises(StudyError) as e:
        _load(tmp_path, data_root, "dcgan", ["eval/intra_fid"])
    msg = str(e.value)
    assert "objective.metrics" in msg and "'eval/intra_fid'" in msg and "needs a conditional model" in msg
    assert "1 of the 1 model(s) the study trains are unconditional" in msg


def test_a_metric_without_a_better_side_needs_an_explicit_direction(tmp_path, data_root):
    with pytest.raises(StudyError, match="eval/d_acc_real_test.*no better side.*give `directions`"):
        _load(tmp_path, data_root, "dcgan", ["eval/d_acc_real_test"])
    spec = _load(tmp_path, data_root, "dcgan", ["eval/d_acc_real_test"], 'directions = ["minimize"]\n')
    assert spec.objective.directions == ["minimize"]


def test_a_direction_against_the_metric_s_is_warned_about(tmp_path, data_root):
    with pytest.warns(UserWarning, match="'eval/fid': direction 'maximize' is the opposite"):
        _load(tmp_path, data_root, "dcgan", ["eval/fid"], 'directions = ["maximize"]\n')


def test_unknown_metric_names_the_closest_one(tmp_path, data_root):
    with pytest.raises(StudyError, match=r"unknown metric 'eval/coverge' \(did you mean 'eval/coverage'\?\)"):
        _load(tmp_path, data_root, "dcgan", ["eval/coverge"])


def test_needs_text_names_every_requirement():
    assert (Needs.CONDITIONAL | Needs.REAL_FEATURES).text == "conditional model, real features"
    assert Needs.NOTHING.text == "—"
    assert textwrap.dedent(registry.markdown_table()).count("\n") == len(registry.METRICS) + 1
