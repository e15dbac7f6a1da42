"""gan-bench's Python API: what every `gan-bench` command calls, for notebooks and scripts.

    import bench.api as gb

    run = gb.train({"model.name": "dcgan", "optim.epochs": 1})        # one MLflow run
    outcome = gb.run_study("studies/smoke.toml", overrides={"data.train_subset": 2000})
    gb.extend_study("smoke", epochs=2)                               # the same runs, trained on
    report = gb.report(["smoke"])                                    # reports/smoke/report.html
    gb.reproduce("001", budget="90m")                                # a report's studies and tables

Configurations are dotted overrides (`{"techniques.real_target": 0.9}`) of a study's or the default
config, validated before anything runs. Errors are `bench.errors` exceptions (`InputError`,
`ConfigError`, `StudyError`, `TrackingError`); progress bars are `tqdm.auto` bars, so a notebook
shows widgets. The default store is `sqlite:///mlruns/mlflow.db` (or $MLFLOW_TRACKING_URI).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.errors import InputError
from bench.studies.invocation import StudyOutcome

__all__ = ["StudyOutcome", "train", "run_study", "study_status", "extend_study", "report", "reproduce",
           "plan_budget"]


def _uri(tracking_uri: str | None) -> str:
    from bench.tracking import default_tracking_uri

    return tracking_uri or default_tracking_uri()


def _storage(storage: str | None, tracking_uri: str) -> str:
    from bench.studies.storage import default_storage

    return storage or default_storage(tracking_uri)


def _plans_dir(tracking_uri: str) -> Path:
    """Budget plans are kept beside the store, so the same command run again resumes its plan."""
    return Path(_storage(None, tracking_uri)).parent / "plans"


def _group_size(specs: list, overrides: dict[str, Any], requested: int | None) -> int:
    """Runs per group for these studies: `requested`, else the device's default for their seeds."""
    from bench.run_config import build_config
    from bench.studies.invocation import group_size

    device = build_config(specs[0].base, overrides).device
    return group_size(device, max(spec.repeats for spec in specs), requested)


def train(config: dict[str, Any] | None = None, *, overrides: dict[str, Any] | None = None,
          tracking_uri: str | None = None, experiment: str = "gan-bench", run_name: str | None = None,
          progress: bool = True, announce: bool = False):
    """Train one configuration (config sections, then dotted `overrides`) as one MLflow run.

    Returns `bench.experiment.RunResult` (run id, final metrics, the trained GAN, its history).
    """
    from bench import experiment
    from bench.data import check_fit
    from bench.run_config import build_config

    cfg = build_config(config or {}, overrides or {})
    check_fit(cfg.data.dataset, cfg.data.train_subset, cfg.optim.batch_size, cfg.techniques.d_steps)
    return experiment.run(cfg, tracking_uri=_uri(tracking_uri), experiment=experiment, name=run_name,
                          progress=progress, announce=announce)


def run_study(file: str | Path, *, overrides: dict[str, Any] | None = None, storage: str | None = None,
              tracking_uri: str | None = None, workers: int = 1, n_trials: int | None = None,
              timeout: float | None = None, group_size: int | None = None, budget: str | None = None,
              epochs: int | None = None, train_subset: int | None = None, force_new: bool = False,
              progress: bool = True) -> StudyOutcome:
    """Create or resume the study in `file` and run its queued trials (`workers` processes).

    `group_size`: runs trained as one group (1: one by one; None: the device's default). `budget`
    ("20m", "2h"): plan the largest scale that fits here first (`epochs` / `train_subset` fix one side).
    Trials that failed in an earlier call are trained again; Ctrl-C marks the running trial to be
    retried, closes the parent run and raises KeyboardInterrupt. `StudyOutcome.ok` is False when a
    trial failed or a worker died.
    """
    from bench.studies.invocation import load_spec, run_file

    overrides = {**(overrides or {}), **_shortcuts(epochs, train_subset)}
    uri = _uri(tracking_uri)
    if budget:
        spec, _ = load_spec(file, overrides)
        size = _group_size([spec], overrides, group_size)
        overrides.update(plan_budget([file], budget, overrides=overrides, group_size=size, tracking_uri=uri,
                                     epochs=epochs, train_subset=train_subset, progress=progress)[spec.name])
        group_size = size
    return run_file(file, overrides, _storage(storage, uri), uri, workers=workers, n_trials=n_trials,
                    timeout=timeout, group=group_size, force_new=force_new, progress=progress)


def _shortcuts(epochs: int | None, train_subset: int | None) -> dict[str, Any]:
    return {k: v for k, v in (("optim.epochs", epochs), ("data.train_subset", train_subset)) if v is not None}


def study_status(study: str | Path, *, storage: str | None = None, tracking_uri: str | None = None):
    """The Optuna study named `study` (or the one a study file names), only read: nothing is written."""
    import optuna

    from bench.errors import StudyError
    from bench.studies.spec import load_study_file
    from bench.studies.storage import read_storage
    from bench.tracking import mask_uri

    name = load_study_file(study)[0].name if Path(study).is_file() else str(study)
    storage = _storage(storage, _uri(tracking_uri))
    try:
        return optuna.load_study(study_name=name, storage=read_storage(storage))
    except KeyError:
        raise StudyError(f"study {name!r} not found in storage {mask_uri(storage)!r}", field="study") from None


def extend_study(study: str | Path, epochs: int, *, storage: str | None = None, tracking_uri: str | None = None,
                 runs: set[str] | None = None, progress: bool = True):
    """Train every finished run of `study` (or only the trials with one of `runs`, MLflow run ids) on from its
    last checkpoint to `epochs` epochs: the same MLflow runs, and a new Optuna trial per extended trial naming
    the one it extends. Returns `bench.studies.extend.ExtendResult` (extended, refused with reasons, unchanged)."""
    from bench.studies.extend import extend_study as extend

    uri = _uri(tracking_uri)
    return extend(study, epochs, storage_url=_storage(storage, uri), tracking_uri=uri, runs=runs, progress=progress)


def report(studies: list[str], *, tracking_uri: str | None = None, out_dir: str | Path | None = None,
           runs_filter: str | None = None, baseline: str | None = None, data_root: str | None = None,
           reference: bool = True, log: bool = True):
    """Tables, plots and one HTML page for `studies` from their MLflow runs, written to `out_dir`
    (default reports/<names>) and, when `log`, logged under report/ on each study's parent run.
    Returns `bench.report.build.Report` (`.files` by kind: html, csv, md, published_csv)."""
    from bench.report.render import make_report

    return make_report(studies, tracking_uri=_uri(tracking_uri), out_dir=out_dir, runs_filter=runs_filter,
                       baseline=baseline, data_root=data_root, reference=reference, log=log)


def plan_budget(files: list[str | Path], budget: str, *, overrides: dict[str, Any] | None = None,
                group_size: int | None = None, tracking_uri: str | None = None, epochs: int | None = None,
                train_subset: int | None = None, share: float = 1.0, keep: bool = True,
                progress: bool = True) -> dict[str, dict]:
    """The overrides each study file trains at to fit `budget` ("90m", or `share` of it) on this machine,
    measured here and printed; kept beside the store (`keep`) so that the same call resumes the same plan.
    `group_size` as in `run_study` (None: the device's default)."""
    from bench.perf.budget import plan_scales
    from bench.studies.spec import load_study_file

    overrides = {**(overrides or {}), **_shortcuts(epochs, train_subset)}
    specs = [load_study_file(f, overrides)[0] for f in files]
    group_size = _group_size(specs, overrides, group_size)
    return plan_scales(specs, budget, overrides, _plans_dir(_uri(tracking_uri)), group=group_size, epochs=epochs,
                       train_images=train_subset, share=share, plan_only=not keep, progress=progress)


def reproduce(report_id: str, *, studies_dir: str | Path | None = None, out_dir: str | Path | None = None,
              overrides: dict[str, Any] | None = None, storage: str | None = None,
              tracking_uri: str | None = None, workers: int = 1, budget: str | None = None, uniform: bool = False,
              epochs: int | None = None, train_subset: int | None = None, group_size: int | None = None,
              analyze: bool = False, analysis_options: dict[str, dict] | None = None, reference: bool = True,
              log: bool = True, progress: bool = True):
    """Run every study whose [published] names `report_id`, then one report with that report's tables
    beside ours. Resumable: the same call continues where it stopped.

    With a `budget` ("90m") the time is spent in rounds: round 1 trains every study for one epoch (on the
    largest subset that fits half the budget), then studies with claims still open are extended to twice
    their epochs (up to the report's) while the budget lasts, and settled ones stop. `uniform`: one plan
    for all, the largest single scale that fits, trained once. Returns `bench.reproduce.Reproduction`.
    """
    import hashlib
    import json

    from bench import reproduce as rep
    from bench.perf.budget import ROUND1_SHARE, parse_duration
    from bench.tracking import safe_name

    overrides = {**(overrides or {}), **_shortcuts(epochs, train_subset)}
    folder = Path(studies_dir) if studies_dir else rep.default_studies_dir()
    studies = rep.find_studies(folder, report_id, overrides)
    tables = {spec.name: [t for t in spec.published if t.matches(report_id)] for _, spec in studies}
    out = Path(out_dir) if out_dir else Path("reports") / safe_name(f"reproduce-{report_id}")
    if out.exists() and not out.is_dir():
        raise InputError(f"out={str(out)!r}: exists and is not a folder", field="out")
    budget_s = parse_duration(budget) if budget else None
    print(f"report {report_id}: {len(studies)} stud{'y' if len(studies) == 1 else 'ies'}: "
          + ", ".join(f"{s.name} ({', '.join(t.table for t in tables[s.name])})" for _, s in studies))
    size = _group_size([spec for _, spec in studies], overrides, group_size)  # decided (and said) once
    uri = _uri(tracking_uri)
    setup = rep.Setup(report_id, studies, tables, overrides, _storage(storage, uri), uri, out, workers, size,
                      progress)
    files = [p for p, _ in studies]
    options = analysis_options or {}
    started = time.perf_counter()
    if budget_s is None or uniform:
        scales = (plan_budget(files, budget, overrides=overrides, group_size=size, tracking_uri=uri, epochs=epochs,
                              train_subset=train_subset, progress=progress) if budget else {})
        setup.deadline = started + budget_s if budget_s else None
        return rep.reproduce_uniform(setup, scales, analyze, options, reference, log)
    print(f"budget {budget}: round 1: every study for {epochs or 1} epoch{'s' * ((epochs or 1) != 1)}, planned into "
          f"{ROUND1_SHARE:.0%} of the budget; then the studies whose claims are still open train on", flush=True)
    round1 = plan_budget(files, budget, overrides=overrides, group_size=size, tracking_uri=uri, epochs=epochs or 1,
                         train_subset=train_subset, share=ROUND1_SHARE, progress=progress)
    key = json.dumps([report_id, budget, sorted(tables), overrides], sort_keys=True, default=str)
    state = _plans_dir(uri) / f"race-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"
    return rep.race(setup, budget_s, round1, state, analyze, options, reference, log,
                    spent_s=time.perf_counter() - started)
