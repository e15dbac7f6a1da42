"""The first hour as a user sees it: a tiny finished study, browsed with the real clients.

- `gan-bench ui` loaded in headless Chromium (/usr/bin/chromium, driven by Playwright): the
  model-training view (not GenAI's Traces / Judges sidebar), the study's description, its trials
  under the parent run, the sample grid visible on a trial's *Model metrics* tab. Screenshots go to
  the test's tmp folder (and to $GANBENCH_SCREENSHOTS when set).
- the Optuna CLI and `gan-bench study status` name the objective `eval/tarr`, not `value_0`.

Chromium or Playwright missing: skipped, except under CI (`CI` set), where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from tests.conftest import running_ui, time_limit

CHROMIUM = "/usr/bin/chromium"
STUDY = "ui-browser"
DESCRIPTION = "Does the MLflow UI show a study the way a user expects?"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def _need(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI")
    pytest.skip(f"{what} not available")


@pytest.fixture(scope="module")
def finished_study(tiny, tmp_path_factory) -> dict:
    """`gan-bench study run` of a two-trial grid on the tiny settings, in a fresh store."""
    root = tmp_path_factory.mktemp("ui-browser")
    spec = root / f"{STUDY}.toml"
    spec.write_text(f'name = "{STUDY}"\ndescription = "{DESCRIPTION}"\n[base]\nmodel.name = "cgan-mlp"\n'
                    '[space]\n"techniques.real_target" = { choices = [1.0, 0.9] }\n[sampler]\ntype = "grid"\n'
                    '[objective]\nmetrics = ["eval/tarr"]\ndirections = ["maximize"]\n')
    store = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    sets = [arg for k, v in tiny.items() if k != "data.root"
            for arg in ("--set", f"{k}={json.dumps(v) if isinstance(v, bool) else v}")]
    assert main(["study", "run", str(spec), "--tracking-uri", store, "--data-root", tiny["data.root"],
                 "--quiet", *sets]) == 0
    return {"store": store, "journal": str(root / "mlruns" / "optuna-journal.log"), "root": root}


def test_optuna_tools_name_the_objective(finished_study, capsys):
    out = subprocess.run([sys.executable, "-c", "from optuna.cli import main; main()", "trials",
                          "--study-name", STUDY, "--storage", finished_study["journal"], "-f", "json"],
                         capture_output=True, text=True, timeout=time_limit(120))
    assert out.returncode == 0, out.stderr
    trials = json.loads(out.stdout)
    # single objective: {"value": {"eval/tarr": 0.1}, ...}; without metric names it would be a bare number
    assert len(trials) == 2 and all(set(t["value"]) == {"eval/tarr"} for t in trials), trials

    import optuna

    from bench.studies.storage import make_storage

    study = optuna.load_study(study_name=STUDY, storage=make_storage(finished_study["journal"]))
    assert study.metric_names == ["eval/tarr"] and study.user_attrs["description"] == DESCRIPTION

    assert main(["study", "status", STUDY, "--tracking-uri", finished_study["store"]]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert "eval/tarr" in header and "value_0" not in header


def test_first_run_logs_a_new_study_only(tiny, tmp_path, caplog):
    """One "A new study created", never "Using an existing study" for the study it just made."""
    spec = tmp_path / "once.toml"
    spec.write_text('name = "once"\ndescription = "d"\n[base]\nmodel.name = "cgan-mlp"\n'
                    '[space]\n"techniques.real_target" = { choices = [1.0, 0.9] }\n[sampler]\ntype = "grid"\n'
                    '[objective]\nmetrics = ["eval/tarr"]\ndirections = ["maximize"]\n')
    import logging

    import optuna

    optuna.logging.enable_propagation()
    try:
        with caplog.at_level(logging.INFO, logger="optuna"):
            sets = [a for k, v in tiny.items() if k != "data.root" for a in ("--set", f"{k}={v}")]
            assert main(["study", "run", str(spec), "--tracking-uri", f"sqlite:///{tmp_path / 'm' / 'mlflow.db'}",
                         "--data-root", tiny["data.root"], "--quiet", "--n-trials", "1", *sets]) == 0
    finally:
        optuna.logging.disable_propagation()
    text = caplog.text
    assert "A new study created" in text and "Using an existing study" not in text


def test_mlflow_ui_in_chromium(finished_study, tmp_path):
    if not Path(CHROMIUM).exists():
        _need(CHROMIUM)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("playwright (pip install -e '.[dev]')")
    from mlflow import MlflowClient

    client = MlflowClient(finished_study["store"])
    exp = client.get_experiment_by_name(STUDY)
    runs = client.search_runs([exp.experiment_id])
    trials = {r.info.run_name: r.info.run_id for r in runs if r.data.tags.get("role") == "trial"}
    assert len(trials) == 2
    shots = tmp_path / "screenshots"
    shots.mkdir()

    log = tmp_path / "ui.log"
    try:
        with running_ui(finished_study["store"], log) as (proc, url):
            assert "Ctrl-C" in log.read_text()  # it says how to stop it

            with sync_playwright() as pw:
                context = pw.chromium.launch_persistent_context(
                    str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
                    viewport={"width": 1400, "height": 900})
                try:
                    page = context.new_page()

                    # The experiment page: model-training view, the study's description, the parent run.
                    page.goto(f"{url}/#/experiments/{exp.experiment_id}")
                    page.get_by_text(f"study:{STUDY}").first.wait_for(timeout=time_limit(60) * 1000)
                    page.wait_for_timeout(1000)
                    page.screenshot(path=shots / "1-experiment.png")
                    body = page.inner_text("body")
                    assert "Model training" in body and "Runs" in body
                    for genai in ("Judges", "Sessions", "Prompts & versions", "Agent versions"):
                        assert genai not in body, f"GenAI sidebar item {genai!r} shown:\n{body[:1500]}"
                    assert DESCRIPTION in body
                    # The trials under their parent: expand the parent row.
                    page.locator(".ag-cell-wrapper", has=page.get_by_text(f"study:{STUDY}")).locator("button").first.click()
                    for name in trials:
                        page.get_by_text(name).first.wait_for(timeout=time_limit(30) * 1000)
                    page.screenshot(path=shots / "2-trials.png")

                    # A trial's Model metrics tab: the sample grid as an image, visible in its card.
                    name, run_id = sorted(trials.items())[0]
                    page.goto(f"{url}/#/experiments/{exp.experiment_id}/runs/{run_id}/model-metrics")
                    page.get_by_text(name).first.wait_for(timeout=time_limit(60) * 1000)
                    image = page.locator("img[src*='get-artifact'][src*='samples']").first
                    for _ in range(30):  # the image section is below the eval and train charts
                        if image.count() and image.is_visible():
                            break
                        page.mouse.move(700, 500)
                        page.mouse.wheel(0, 1000)
                        page.wait_for_timeout(500)
                    image.wait_for(state="visible", timeout=time_limit(30) * 1000)
                    image.scroll_into_view_if_needed()
                    page.wait_for_timeout(1000)
                    page.screenshot(path=shots / "3-samples.png")
                    assert image.evaluate("i => i.complete && i.naturalWidth") > 0
                    card = page.locator("[data-testid=experiment-view-compare-runs-card]", has=image)
                    box, card_box = image.bounding_box(), card.bounding_box()
                    assert box["height"] > 100, box  # the grid itself, not a sliver under the run's parameters
                    assert box["y"] + box["height"] / 2 < card_box["y"] + card_box["height"], (box, card_box)
                finally:
                    context.close()
    finally:
        keep = os.environ.get("GANBENCH_SCREENSHOTS")
        if keep:
            shutil.copytree(shots, keep, dirs_exist_ok=True)
    assert proc.returncode == 0, log.read_text()[-3000:]
