"""`gan-bench ui`: the MLflow server on the project's store serves a study's runs and metrics over
MLflow's REST API, bound to 127.0.0.1, and stops cleanly on Ctrl-C; bad options exit 2."""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from bench import ui
from bench.cli import main
from tests.conftest import running_ui, time_limit

STUDY = "ui-test"


def make_study(tiny: dict, store: str) -> tuple[str, str]:
    """A parent run and one trial run made by bench.experiment.run (the way bench.studies tags them)."""
    from bench.run_config import build_config
    from bench.experiment import run
    from bench.tracking import ensure_experiment

    client = MlflowClient(store)
    exp = ensure_experiment(store, STUDY)
    parent = client.create_run(exp, run_name=f"study:{STUDY}", tags={
        "study": STUDY, "role": "parent", "objective": "eval/tarr:maximize",
        "space_keys": '["techniques.real_target"]', "mlflow.note.content": "Does the UI show it?"}).info.run_id
    cfg = build_config(overrides={**tiny, "model.name": "cgan-mlp", "optim.epochs": 2, "data.train_subset": 160,
                                  "techniques.real_target": 0.9})
    child = run(cfg, tracking_uri=store, experiment=STUDY, name="real_target=0.9,seed=0", parent_run_id=parent,
                tags={"study": STUDY, "role": "trial", "trial": "0", "config_label": "real_target=0.9",
                      "param.techniques.real_target": "0.9"}, progress=False, log_checkpoints=False).run_id
    client.set_terminated(parent, "FINISHED")
    return parent, child


def api(url: str, endpoint: str, body: dict | None = None, **query) -> dict:
    full = f"{url}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(full, data=data, headers={"Content-Type": "application/json"},
                                 method="POST" if body is not None else "GET")
    with urllib.request.urlopen(req, timeout=time_limit(30)) as r:
        return json.load(r)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_ui_serves_the_study_over_mlflow_rest(tiny, store, tmp_path):
    parent, child = make_study(tiny, store)
    expected = MlflowClient(store).get_run(child).data.metrics
    log = tmp_path / "ui.log"
    with running_ui(store, log) as (proc, url):
        assert f"at {url}" in log.read_text()  # the URL is printed
        with urllib.request.urlopen(url, timeout=time_limit(30)) as r:  # the UI itself
            assert r.status == 200 and b"<html" in r.read(2000).lower()

        exp = api(url, "experiments/get-by-name", experiment_name=STUDY)["experiment"]
        found = api(url, "runs/search", {"experiment_ids": [exp["experiment_id"]],
                                         "filter": f"tags.study = '{STUDY}'"})["runs"]
        by_role = {next(t["value"] for t in r["data"]["tags"] if t["key"] == "role"): r for r in found}
        assert by_role["parent"]["info"]["run_id"] == parent
        trial = by_role["trial"]
        assert trial["info"]["run_id"] == child and trial["info"]["run_name"] == "real_target=0.9,seed=0"
        tags = {t["key"]: t["value"] for t in trial["data"]["tags"]}
        assert tags["mlflow.parentRunId"] == parent and tags["config_label"] == "real_target=0.9"
        metrics = {m["key"]: m["value"] for m in trial["data"]["metrics"]}
        for key in ("eval/tarr", "eval/is", "eval/fid", "train/loss_d", "time/train_s"):
            assert metrics[key] == pytest.approx(expected[key]), key
        params = {p["key"]: p["value"] for p in trial["data"]["params"]}
        assert params["techniques/real_target"] == "0.9"
        history = api(url, "metrics/get-history", run_id=child, metric_key="eval/is")["metrics"]
        assert sorted(m["step"] for m in history) == [1, 2]
        files = api(url, "artifacts/list", run_id=child, path="images").get("files", [])
        assert any(f["path"].endswith(".png") for f in files)
    assert proc.returncode == 0, log.read_text()[-3000:]  # Ctrl-C stops it cleanly
    port = urllib.parse.urlparse(url).port
    deadline = time.monotonic() + time_limit(10)
    while port_open(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not port_open(port), "the MLflow server outlived gan-bench ui"


def test_server_command_uses_the_store_and_its_artifacts(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    cmd = ui.server_command(uri, "127.0.0.1", 5123)
    assert "--backend-store-uri" not in cmd and uri not in cmd  # by environment: `ps` shows every argv
    assert ui.server_env(tmp_path, uri)["MLFLOW_BACKEND_STORE_URI"] == uri
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "5123"
    assert cmd[cmd.index("--default-artifact-root") + 1] == (tmp_path / "mlruns" / "artifacts").as_uri()
    assert "--default-artifact-root" not in ui.server_command("postgresql://u@h/db", "127.0.0.1", 5000)


def test_ui_defaults_to_localhost():
    from bench.cli import build_parser

    args = build_parser().parse_args(["ui"])
    assert args.host == "127.0.0.1" and args.port == 5000


@pytest.mark.parametrize("extra,needle", [
    (["--port", "70000"], "--port 70000"),
    (["--host", "not a host"], "--host"),
    (["--workers", "0"], "--workers"),
])
def test_ui_bad_options_exit_2(tmp_path, capsys, extra, needle):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    Path(tmp_path / "mlflow.db").touch()
    assert main(["ui", "--tracking-uri", uri, *extra]) == 2
    assert needle in capsys.readouterr().err


def test_ui_port_in_use_and_missing_store_exit_2(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        Path(tmp_path / "mlflow.db").touch()
        assert main(["ui", "--port", str(busy), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 2
        assert f"--port {busy}" in capsys.readouterr().err
    assert main(["ui", "--port", "0", "--tracking-uri", f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}"]) == 2
    assert "none" in capsys.readouterr().err


def test_dashboard_without_the_extra_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # as if not installed
    assert main(["dashboard", "smoke"]) == 2
    assert "pip install -e '.[dashboard]'" in capsys.readouterr().err


def test_ui_app_sets_the_model_training_view_once():
    from bench import ui_app

    page = ui_app.inject(b"<!doctype html><html><head><title>MLflow</title></head></html>")
    assert page.index(b"mlflow.workflowType_v1") < page.index(b"<title>")  # before the UI's own scripts
    assert b'"machine_learning"' in page and b"localStorage.getItem(k)===null" in page  # a user's choice stays
