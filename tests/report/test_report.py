"""`gan-bench report` on a small CPU study: every column and plot, numbers equal to MLflow's metric
history, CI and p-value equal to scipy's, failed/pruned/missing runs marked, and the HTML page
loaded in headless Chromium with no broken image and no console error.

The study is built the way `bench.studies` builds one: a parent run (tags study, role=parent,
objective, space_keys, baseline, the question) and one child run per configuration and seed made
by `bench.experiment.run` (2 configurations x 2 seeds, tiny settings), plus a FAILED run and a
pruned (KILLED) run. It is built once per test session (the first test that needs it pays).
"""

from __future__ import annotations

import base64
import csv
import json
import math
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.entities import Param
from scipy import stats

from bench.cli import main
from bench.report.baseline import comparable
from bench.report.load import load_study_runs
from tests.conftest import time_limit

STUDY = "ls-test"
CONFIGS = {  # config_label -> varied parameters
    "real_target=1.0,fake_target=0.0": {"techniques.real_target": 1.0, "techniques.fake_target": 0.0},
    "real_target=0.9,fake_target=0.1": {"techniques.real_target": 0.9, "techniques.fake_target": 0.1},
}
BASELINE = "real_target=1.0,fake_target=0.0"
OTHER = "real_target=0.9,fake_target=0.1"
PRUNED = "real_target=0.8,fake_target=0.0"
SEEDS = (0, 1)
TABLE_METRICS = ["eval/tarr", "eval/is", "eval/class_acc_geomean", "eval/fid", "eval/d_acc_real_test",
                 "eval/d_acc_fake_test", "time/train_s"]
TABLE_LABELS = ["TARR", "IS", "per-class acc. (geo. mean)", "FID", "D acc. real (test)", "D acc. fake (test)",
                "train time (s)"]
PLOTS = ["eval_curves", "losses", "d_outputs", "class_accuracy", "heatmap", "samples", "param_importances",
         "parallel_coordinates"]

_BUILT: dict = {}


def _parent(client: MlflowClient, name: str, space: list[str], objective: str, baseline: dict | None,
            question: str) -> str:
    from bench.tracking import ensure_experiment

    tags = {"study": name, "role": "parent", "sampler": "grid", "pruner": "median", "objective": objective,
            "space_keys": json.dumps(space), "mlflow.note.content": question}
    if baseline is not None:
        tags["baseline"] = json.dumps(baseline)
    exp = ensure_experiment(client.tracking_uri, name)
    run_id = client.create_run(exp, run_name=f"study:{name}", tags=tags).info.run_id
    client.log_text(run_id, f'name = "{name}"\n', "study.toml")
    return run_id


def _trial_tags(name: str, trial: int, label: str, params: dict, seed: int) -> dict:
    return {"study": name, "role": "trial", "trial": str(trial), "config_label": label, "seed": str(seed),
            **{f"param.{k}": str(v) for k, v in params.items()}}


def build_study(tiny: dict, store: str) -> dict:
    """The shared fake study (built once): returns ids and paths the tests use."""
    from bench.run_config import build_config
    from bench.experiment import prepare, run

    client = MlflowClient(store)
    base = {**tiny, "model.name": "cgan-mlp", "optim.epochs": 2, "data.train_subset": 160}
    parent = _parent(client, STUDY, list(CONFIGS["real_target=1.0,fake_target=0.0"]),
                     "eval/fid:minimize,eval/tarr:maximize", CONFIGS[BASELINE],
                     "Does two-sided label smoothing help a tiny CGAN?")
    ctx = prepare(build_config(overrides=base), progress=False)
    runs: dict[str, list[str]] = {}
    for trial, (label, params) in enumerate(CONFIGS.items()):
        for seed in SEEDS:
            cfg = build_config(overrides={**base, **params, "seed": seed})
            result = run(cfg, tracking_uri=store, experiment=STUDY, context=ctx, name=f"{label},seed={seed}",
                         tags=_trial_tags(STUDY, trial, label, params, seed), parent_run_id=parent,
                         progress=False, log_checkpoints=False)
            runs.setdefault(label, []).append(result.run_id)
    exp = client.get_experiment_by_name(STUDY).experiment_id
    # A failed third seed of the second configuration (the first then misses seed 2).
    failed = client.create_run(exp, run_name=f"{OTHER},seed=2", tags={
        **_trial_tags(STUDY, 3, OTHER, CONFIGS[OTHER], 2), "mlflow.parentRunId": parent,
        "error": "RuntimeError: CUDA out of memory (simulated)"}).info.run_id
    client.set_terminated(failed, "FAILED")
    # A pruned configuration: one evaluation, then KILLED.
    pruned = client.create_run(exp, run_name=f"{PRUNED},seed=0", tags={
        **_trial_tags(STUDY, 2, PRUNED, {"techniques.real_target": 0.8, "techniques.fake_target": 0.0}, 0),
        "mlflow.parentRunId": parent}).info.run_id
    client.log_metric(pruned, "eval/tarr", 0.5, step=1)
    client.set_terminated(pruned, "KILLED")
    # The baseline's seed 0 finished once before: its trial was retried (a worker died) and trained the seed
    # again. Only the later run counts, so n stays 2 and the means are those of `runs`.
    superseded = client.create_run(exp, run_name=f"{BASELINE},seed=0", start_time=1, tags={
        **_trial_tags(STUDY, 0, BASELINE, CONFIGS[BASELINE], 0), "mlflow.parentRunId": parent}).info.run_id
    for metric in TABLE_METRICS:
        client.log_metric(superseded, metric, 1e6, step=1)
    client.set_terminated(superseded, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return {"store": store, "parent": parent, "runs": runs, "failed": failed, "pruned": pruned,
            "superseded": superseded}


@pytest.fixture
def study(tiny, store) -> dict:
    if "study" not in _BUILT:
        _BUILT["study"] = build_study(tiny, store)
    return _BUILT["study"]


@pytest.fixture
def built(study, data_root, tmp_path_factory) -> dict:
    """`gan-bench report` run once on the study (with the real-data reference row)."""
    if "report" not in _BUILT:
        out = tmp_path_factory.mktemp("report")
        code = main(["report", STUDY, "--tracking-uri", study["store"], "--out", str(out),
                     "--data-root", str(data_root)])
        assert code == 0
        _BUILT["report"] = out
    return {**study, "out": _BUILT["report"]}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def final(client: MlflowClient, run_id: str, metric: str) -> float:
    """Recomputed independently: the value at the last step of the metric's history."""
    hist = client.get_metric_history(run_id, metric)
    return max(hist, key=lambda m: (m.step, m.timestamp)).value


def num(text: str) -> float:
    return float(text) if text != "" else math.nan


# ---------------------------------------------------------------------------
# The report on the study


def test_table_numbers_equal_mlflow_history_and_scipy(built):
    client = MlflowClient(built["store"])
    rows = {r["config"]: r for r in read_csv(built["out"] / "table.csv") if r["study"] == STUDY}
    assert set(rows) == {BASELINE, OTHER, PRUNED, "real data (reference)"}
    assert rows[BASELINE]["kind"] == "baseline" and rows["real data (reference)"]["kind"] == "reference"
    values = {label: {m: [final(client, rid, m) for rid in built["runs"][label]] for m in TABLE_METRICS}
              for label in CONFIGS}
    for label in CONFIGS:
        row = rows[label]
        assert row["n"] == "2"
        for m in TABLE_METRICS:
            v = np.array(values[label][m])
            assert num(row[f"{m} mean"]) == pytest.approx(v.mean(), rel=1e-12, abs=1e-12), (label, m)
            assert num(row[f"{m} std"]) == pytest.approx(v.std(ddof=1), rel=1e-9, abs=1e-12), (label, m)
            assert row[f"{m} n"] == "2"
            if v.std(ddof=1) > 0:
                lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
                assert (num(row[f"{m} ci95_low"]), num(row[f"{m} ci95_high"])) == pytest.approx((lo, hi), rel=1e-9)
    tested = 0
    for m in TABLE_METRICS:
        a, b = values[OTHER][m], values[BASELINE][m]
        row = rows[OTHER]
        assert num(row[f"{m} diff"]) == pytest.approx(np.mean(a) - np.mean(b), rel=1e-9, abs=1e-12)
        if np.std(a) > 0 or np.std(b) > 0:
            ref = stats.ttest_ind(a, b, equal_var=False)
            assert row[f"{m} test"] == "Welch"
            assert num(row[f"{m} p"]) == pytest.approx(ref.pvalue, rel=1e-9), m
            ci = ref.confidence_interval(0.95)
            assert (num(row[f"{m} diff_ci95_low"]), num(row[f"{m} diff_ci95_high"])) == pytest.approx(
                (ci.low, ci.high), rel=1e-9)
            tested += 1
    assert tested >= 2  # FID and train time always vary across seeds
    # the best value per column is marked on the right row, and only when it is better as displayed
    from bench.report.common import COLUMNS

    for m in ("eval/fid", "time/train_s"):
        col = next(c for c in COLUMNS if c.metric == m)
        means = {label: np.mean(values[label][m]) for label in CONFIGS}
        best = min(means, key=means.get)
        shown = sorted(float(col.text(v)) for v in means.values())
        marked = shown[0] < shown[1]
        assert rows[best][f"{m} best"] == str(marked)
        assert all(rows[x][f"{m} best"] == "False" for x in CONFIGS if x != best)


def test_report_has_every_column_plot_and_reference_row(built, data_root):
    out = built["out"]
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    header = read_csv(out / "table.csv")[0].keys()
    for m, label in zip(TABLE_METRICS, TABLE_LABELS):
        assert f"{m} mean" in header and f"{m} ci95_low" in header and f"{m} p" in header
        assert f"<th>{label}</th>" in html, label
        assert f"| {label} " in md or f"| {label} |" in md, label
    for plot in PLOTS:
        png = out / "plots" / STUDY / f"{plot}.png"
        assert png.stat().st_size > 1000, plot
        assert base64.b64encode(png.read_bytes()).decode()[:200] in html  # embedded, not linked
    assert "Does two-sided label smoothing help a tiny CGAN?" in html
    assert "★" in html and "Welch" in html and "95% confidence interval" in html
    # verdict on the objective vs the baseline
    assert f"{OTHER} vs {BASELINE}: FID" in html
    # reference row from real data: the evaluator's test accuracy stands in the TARR column
    ref = next(r for r in read_csv(out / "table.csv") if r["kind"] == "reference")
    assert 0 < num(ref["eval/tarr mean"]) <= 1 and num(ref["eval/fid mean"]) >= 0
    assert "reference row: mnist" in html


def test_every_run_and_configuration_links_into_the_mlflow_ui(built):
    import re
    from urllib.parse import parse_qs, unquote

    html = (built["out"] / "report.html").read_text()
    c = MlflowClient(built["store"])
    exp = c.get_experiment_by_name(STUDY).experiment_id
    links = re.findall(r'<a href="([^"]+)">', html)
    for run_id in (built["failed"], built["pruned"], built["superseded"]):
        assert f"http://127.0.0.1:5000/#/experiments/{exp}/runs/{run_id}" in links
    charts = [unquote(u) for u in links if "compareRunsMode=CHART" in u]
    filters = {parse_qs(u.split("?", 1)[1])["searchFilter"][0] for u in charts}
    labels = {r.data.tags["config_label"] for r in c.search_runs([exp], "tags.role = 'trial'")}
    assert filters == {f"tags.config_label = '{label}'" for label in labels}


def test_failed_pruned_and_missing_runs_are_marked(built):
    out = built["out"]
    html = (out / "report.html").read_text()
    rows = {r["config"]: r for r in read_csv(out / "table.csv")}
    assert "1 failed" in rows[OTHER]["runs"]
    assert "missing seed 2" in rows[BASELINE]["runs"]
    assert rows[PRUNED]["n"] == "0" and "1 pruned/killed" in rows[PRUNED]["runs"]
    assert rows[PRUNED]["eval/tarr mean"] == ""  # a pruned run's partial value is not counted
    assert "1 superseded (its seed trained again)" in rows[BASELINE]["runs"]
    assert "Runs (4 counted of 7)" in html  # 2 configurations x 2 seeds; the failed, pruned and superseded runs
    for run_id in (built["failed"], built["pruned"], built["superseded"]):
        assert run_id in html
    assert "CUDA out of memory (simulated)" in html
    assert "⚠" in html and "Not counted: " in html


def test_only_the_runs_that_count_fetch_their_histories(study):
    client = MlflowClient(study["store"])
    fetched = []
    real = client.get_metric_history
    client.get_metric_history = lambda run_id, key: fetched.append(run_id) or real(run_id, key)
    data = load_study_runs(client, STUDY)
    counted = {r.run_id for g in data.groups for r in g.usable}
    assert len(counted) == 4 and set(fetched) == counted  # never the superseded, failed or pruned runs


def test_report_logged_to_parent_run(built):
    client = MlflowClient(built["store"])
    names = {f.path for f in client.list_artifacts(built["parent"], "report")}
    assert {"report/report.html", "report/table.csv", "report/report.md", "report/plots"} <= names
    plots = {f.path.rsplit("/", 1)[-1] for f in client.list_artifacts(built["parent"], f"report/plots/{STUDY}")}
    assert {f"{p}.png" for p in PLOTS} <= plots


CLAIMS = {"eval/fid": (10.0, 20.0), "eval/d_acc_real_test": (0.60, 0.55)}  # metric -> published (baseline, other)


def expected_epochs(client: MlflowClient, runs: dict, metric: str, published_diff: float) -> list[str]:
    """Recomputed from MLflow's histories with scipy: `e<epoch> <symbol>` per epoch (metrics with no floor)."""
    def at(run_id: str, epoch: int) -> float:
        return next(m.value for m in client.get_metric_history(run_id, metric) if m.step == epoch)

    out = []
    for epoch in (1, 2):
        row, base = ([at(r, epoch) for r in runs[label]] for label in (OTHER, BASELINE))
        diff = np.mean(row) - np.mean(base)
        p = stats.ttest_ind(row, base, equal_var=False).pvalue
        sym = "≈" if diff == 0 else "✓" if (diff > 0) == (published_diff > 0) else "✗"
        out.append(f"e{epoch} {sym}" + ("*" if p < 0.05 else ""))
    return out


def test_report_shows_each_claim_per_epoch_and_the_settled_count(study, tmp_path):
    """The study's 2-epoch runs, beside a hand-written published table: both epochs judged, in HTML and Markdown."""
    from bench.report.build import build_report
    from bench.report.render import write_report
    from bench.studies.spec import PublishedTable

    client = MlflowClient(study["store"])
    spec = PublishedTable.model_validate({"report": "900", "table": "Table 1", "epochs": 2, "rows": [
        {"params": CONFIGS[label], **{m: v[i] for m, v in CLAIMS.items()}}
        for i, label in enumerate((BASELINE, OTHER))]})
    rep = build_report(client, [STUDY], out_dir=tmp_path / "out", reference=False, progress=lambda m: None,
                       published={STUDY: [spec]})
    rep.reproduces = "900"
    files = write_report(rep, study["store"])
    md, html = files["md"].read_text(), files["html"].read_text()
    rows = {m: expected_epochs(client, study["runs"], m, b - a) for m, (a, b) in CLAIMS.items()}
    same = {m: r[0].split()[1] == r[1].split()[1] for m, r in rows.items()}  # e1's symbol is e2's
    settled = sum(same.values())
    shown = [line for line in md.splitlines() if "claims:" in line or " · e2 " in line]
    assert f"**claims: {settled} settled, 2 judged, 0 not judgeable at this scale**" in md, (rows, shown)
    assert f'<p class="summary">claims: {settled} settled, 2 judged, 0 not judgeable at this scale</p>' in html
    cells = [" · ".join(r) + (" (settled)" if same[m] else "") for m, r in rows.items()]
    assert f"| real_target=0.9,fake_target=0.1 | {OTHER} | {cells[0]} | {cells[1]} |" in md, (rows, shown)
    for epoch in (1, 2):  # one coloured cell per claim and epoch, its title the epoch and verdict
        titles = [line for line in html.split('<span class="mk ')[1:] if f'title="epoch {epoch}: ' in line]
        assert len(titles) >= len(CLAIMS), epoch
    assert html.count('<span class="settled">settled</span>') >= settled
    assert "Verdict at each evaluated epoch" in html and "Verdict at each evaluated epoch" in md


def test_runs_filter_and_explicit_baseline(study, tmp_path, capsys):
    out = tmp_path / "seed0"
    code = main(["report", STUDY, "--tracking-uri", study["store"], "--out", str(out), "--runs", "tags.seed = '0'",
                 "--baseline", "real_target=0.9,fake_target=0.1", "--no-reference", "--no-log"])
    assert code == 0
    rows = {r["config"]: r for r in read_csv(out / "table.csv")}
    assert rows[OTHER]["kind"] == "baseline"
    assert rows[BASELINE]["n"] == "1" and rows[BASELINE]["eval/fid test"] == "n/a (fewer than 2 seeds)"
    assert rows[BASELINE]["eval/fid p"] == ""
    assert "no test" in (out / "report.html").read_text()
    assert "reference" not in {r["kind"] for r in rows.values()}


@pytest.mark.parametrize("args,needle", [
    (["no-such-study"], "no-such-study"),
    ([STUDY, "--runs", "tags.seed ==== 0"], "--runs"),
    ([STUDY, "--baseline", "techniques.real_target=0.5"], "--baseline"),
    ([STUDY, "--baseline", "real_targt=1.0"], "real_targt"),
])
def test_bad_input_exits_2(study, tmp_path, capsys, args, needle):
    code = main(["report", *args, "--tracking-uri", study["store"], "--out", str(tmp_path / "r"), "--no-log",
                 "--no-reference"])
    assert code == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_missing_store_exits_2(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}"
    assert main(["report", "x", "--tracking-uri", uri]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


def _copy_study(client: MlflowClient, src: dict, name: str, space_key: str, configs: dict[str, Any],
                override: dict[str, str] | None = None) -> None:
    """A second study made of synthetic runs: the source study's baseline params with one key changed."""
    source = [client.get_run(rid) for rid in src["runs"][BASELINE]]
    parent = _parent(client, name, [space_key], "eval/fid:minimize", None, f"Does {space_key} help?")
    exp = client.get_experiment_by_name(name).experiment_id
    for trial, (label, value) in enumerate(configs.items()):
        for r in source:
            params = {**r.data.params, space_key.replace(".", "/"): str(value), **(override or {})}
            tags = {**_trial_tags(name, trial, label, {space_key: value}, int(r.data.tags["seed"])),
                    "mlflow.parentRunId": parent}
            if value == 0.0:  # the shared base configuration: same config_id as the source baseline
                tags["config_id"] = r.data.tags["config_id"]
            run_id = client.create_run(exp, run_name=f"{label},seed={tags['seed']}", tags=tags).info.run_id
            client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
            shift = 0.0 if value == 0.0 else 1.5
            for k, v in r.data.metrics.items():
                client.log_metric(run_id, k, v + shift if k == "eval/fid" else v, step=1)
            client.set_terminated(run_id, "FINISHED")


def test_studies_sharing_a_base_config_are_compared(study, tmp_path):
    client = MlflowClient(study["store"])
    if client.get_experiment_by_name("flip-test") is None:
        _copy_study(client, study, "flip-test", "techniques.flip_prob", {"flip_prob=0.0": 0.0, "flip_prob=0.1": 0.1})
        _copy_study(client, study, "other-model", "techniques.flip_prob", {"flip_prob=0.0": 0.0},
                    override={"model/name": "cgan-conv"})
    out = tmp_path / "cmp"
    assert main(["report", STUDY, "flip-test", "--tracking-uri", study["store"], "--out", str(out),
                 "--baseline", "real_target=1.0,fake_target=0.0,flip_prob=0.0", "--no-reference", "--no-log"]) == 0
    rows = [r for r in read_csv(out / "table.csv") if r["study"] == "comparison"]
    labels = [r["config"] for r in rows]
    pooled = next(r for r in rows if r["kind"] == "baseline")
    assert "ls-test: " + BASELINE in pooled["config"] and "flip-test: flip_prob=0.0" in pooled["config"]
    assert pooled["n"] == "2"  # same config and seeds in both studies: pooled, one run per seed
    assert "flip-test: flip_prob=0.1" in labels and f"ls-test: {OTHER}" in labels
    html = (out / "report.html").read_text()
    assert "Comparison across studies" in html and "share a base configuration" in html
    # a study on another model shares no base configuration: said so, no combined table
    diffs = comparable([load_study_runs(client, STUDY), load_study_runs(client, "other-model")])
    assert diffs == ["model.name: cgan-mlp (ls-test) vs cgan-conv (other-model)"]


# ---------------------------------------------------------------------------
# The HTML page in headless Chromium (DevTools protocol over a minimal websocket client)


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                  "--disable-default-apps", "--mute-audio"]


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class DevTools:
    """Just enough of RFC 6455 to talk to Chromium's DevTools: text frames, no extensions."""

    def __init__(self, ws_url: str, timeout: float = 60.0):
        u = urlsplit(ws_url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=time_limit(timeout))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            buf += chunk
        head, self.buf = buf.split(b"\r\n\r\n", 1)
        assert b" 101 " in head.split(b"\r\n", 1)[0], head
        self.next_id = 0
        self.events: list[dict] = []

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _frame(self, opcode: int, payload: bytes) -> None:
        head = bytearray([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head.append(0x80 | n)
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = (np.frombuffer(payload, np.uint8) ^ np.resize(np.frombuffer(mask, np.uint8), n)).tobytes()
        self.sock.sendall(bytes(head) + mask + masked)

    def receive(self) -> dict:
        message = b""
        while True:
            b1, b2 = self._exact(2)
            n = b2 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            mask = self._exact(4) if b2 & 0x80 else None
            payload = self._exact(n)
            if mask:
                payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
            opcode = b1 & 0x0F
            if opcode == 8:
                raise ConnectionError("DevTools closed the websocket")
            if opcode == 9:
                self._frame(10, payload)
                continue
            if opcode in (0, 1, 2):
                message += payload
                if b1 & 0x80:
                    return json.loads(message)

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self._frame(1, json.dumps({"id": self.next_id, "method": method, "params": params}).encode())
        while True:
            msg = self.receive()
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + time_limit(timeout)
        for e in self.events:
            if e.get("method") == method:
                return e
        while time.monotonic() < deadline:
            msg = self.receive()
            self.events.append(msg)
            if msg.get("method") == method:
                return msg
        raise TimeoutError(method)

    def close(self) -> None:
        self.sock.close()


def open_in_chromium(html: Path, screenshot: Path, profile: Path, width: int = 1400) -> dict:
    """Load the page; return images, broken images, console errors and the page size; write a screenshot."""
    binary = chromium_binary()
    proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                             "--remote-allow-origins=*", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + time_limit(60)
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None, "chromium exited before DevTools came up"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        page = None
        while page is None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=time_limit(30)) as r:
                page = next((t for t in json.load(r) if t["type"] == "page"), None)
            assert page is not None or time.monotonic() < deadline, "chromium opened no page"
            time.sleep(0.1)
        cdp = DevTools(page["webSocketDebuggerUrl"])
        try:
            for domain in ("Page", "Runtime", "Log"):
                cdp.call(f"{domain}.enable")
            cdp.call("Emulation.setDeviceMetricsOverride", width=width, height=1000, deviceScaleFactor=1, mobile=False)
            cdp.events.clear()
            cdp.call("Page.navigate", url=html.resolve().as_uri())
            cdp.wait_for("Page.loadEventFired")
            check = cdp.call("Runtime.evaluate", returnByValue=True, expression="""JSON.stringify({
                images: document.images.length,
                broken: Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),
                height: document.documentElement.scrollHeight, title: document.title,
                tables: document.querySelectorAll('table').length})""")
            info = json.loads(check["result"]["value"])
            cdp.call("Emulation.setDeviceMetricsOverride", width=width, height=min(info["height"], 16000),
                     deviceScaleFactor=1, mobile=False)
            shot = cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            errors = []
            for e in cdp.events:
                p = e.get("params", {})
                if e.get("method") == "Runtime.exceptionThrown":
                    errors.append(p["exceptionDetails"].get("text", "exception"))
                elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                    errors.append(str(p.get("args")))
                elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
                    errors.append(p["entry"].get("text", ""))
            info["errors"] = errors
            return info
        finally:
            cdp.close()
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)


def test_html_opens_in_headless_chromium(built, tmp_path):
    if chromium_binary() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium package)")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    shot = Path(os.environ.get("GANBENCH_REPORT_SCREENSHOT") or tmp_path / "report.png")
    info = open_in_chromium(built["out"] / "report.html", shot, tmp_path / "profile")
    assert info["title"].startswith("gan-bench report")
    assert info["images"] == len(PLOTS) and info["broken"] == []
    assert info["errors"] == []
    assert info["tables"] >= 2 and info["height"] > 2000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


def test_best_only_when_strictly_better_as_displayed_and_differences_keep_two_digits():
    from bench.report.common import Column
    from bench.report.stats import summarize
    from bench.report.table import Row, best_row, diff_text

    col = Column("eval/is", "IS", "max", "{:.2f}")
    rows = [Row(label=str(v), group=None, stats={"eval/is": summarize([v])}) for v in (1.011, 1.009, 1.004)]
    assert best_row(col, rows) is None  # 1.01 and 1.01 tie as printed: no star
    rows[2].stats["eval/is"] = summarize([1.02])
    assert best_row(col, rows) is rows[2]
    assert diff_text(col, -0.0042) == "-0.0042" and diff_text(col, 0.5) == "+0.50" and diff_text(col, 0.0) == "±0"
