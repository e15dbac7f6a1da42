"""The Python API (`bench.api`), driven the way a notebook drives it: no argparse, no CLI."""

from __future__ import annotations

import sys
import types

import pytest

import bench.api as gb
from bench.errors import InputError
from tests.conftest import two_cell_study

STUDY = two_cell_study("api-tiny", "a tiny grid driven from Python")


def test_a_notebook_runs_extends_and_reports_a_tiny_study(tmp_path, store, tiny):
    from mlflow import MlflowClient

    path = tmp_path / "api-tiny.toml"
    path.write_text(STUDY)
    outcome = gb.run_study(path, overrides={**tiny, "data.train_subset": 160}, tracking_uri=store, progress=False)
    assert outcome.ok and outcome.finished and outcome.counts["complete"] == 2

    extended = gb.extend_study("api-tiny", 2, tracking_uri=store, progress=False)
    assert len(extended.extended) == 2 and not extended.refused

    report = gb.report(["api-tiny"], tracking_uri=store, out_dir=tmp_path / "report", reference=False, log=False)
    assert report.files["html"].is_file() and "api-tiny" in report.files["md"].read_text()
    (study,) = report.studies
    runs = [r for g in study.study.groups for r in g.usable]
    assert len(runs) == 2  # one run per configuration and seed, extended in place
    c = MlflowClient(store)
    for r in runs:
        epochs = [m.step for m in c.get_metric_history(r.run_id, "eval/tarr")]
        assert sorted(epochs) == [1, 2]


def test_bad_input_raises_the_library_error_naming_the_field(tmp_path, new_store):
    path = tmp_path / "api-tiny.toml"
    path.write_text(STUDY)
    with pytest.raises(InputError, match="workers=0"):
        gb.run_study(path, workers=0, tracking_uri=new_store)
    assert not (tmp_path / "store").exists()  # nothing written


def test_progress_bars_are_widgets_in_a_notebook(monkeypatch):
    from tqdm.auto import tqdm as auto

    from bench.progress import LineBar, bar

    assert isinstance(bar(total=1, file=sys.stderr), LineBar)  # not a terminal here: plain lines
    ZMQInteractiveShell = type("ZMQInteractiveShell", (), {})  # what a Jupyter kernel's get_ipython() returns
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=ZMQInteractiveShell))
    widget = bar(total=1)
    assert type(widget) is auto and not isinstance(widget, LineBar)
    widget.close()
