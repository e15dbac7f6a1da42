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

import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import InputError

__all__ = ["StudyOutcome", "ReportOutcome", "ReproduceOutcome", "train", "run_study", "study_status", "extend_study", "report",
           "reproduce", "plan_budget"]


def _uri(tracking_uri: str | None) -> str:
    from bench.tracking import default_tracking_uri

    return tracking_uri or default_tracking_uri()


def _storage(storage: str | None, tracking_uri: str) -> str:
    from bench.studies.storage import default_storage

    return storage or default_storage(tracking_uri)


def _plans_dir(tracking_uri: str) -> Path:
    """Budget plans are kept beside the store, so the same command run again resumes its plan."""
    return Path(_storage(None, tracking_uri)).parent / "plans"


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


@dataclass
class StudyOutcome:
    """What one `run_study` did, and where the study stands."""

    name: str
    parent_run_id: str
    study: Any  # optuna.Study
    counts: dict[str, int]  # trials by state: complete, pruned, fail, running, waiting
    retried: list[int] = field(default_factory=list)  # trials queued again (a dead worker's, or failed)
    failed: list[tuple[int, str]] = field(default_factory=list)  # (trial, error) still failed
    died: int = 0  # workers of this call that died (their trials are queued again)

    @property
    def finished(self) -> bool:
        return self.counts["waiting"] == 0 and self.counts["running"] == 0

    @property
    def ok(self) -> bool:
        """No trial failed and no worker died (the study may still be unfinished)."""
        return not self.failed and not self.died


def run_study(file: str | Path, *, overrides: dict[str, Any] | None = None, storage: str | None = None,
              tracking_uri: str | None = None, workers: int = 1, n_trials: int | None = None,
              timeout: float | None = None, group_size: int | None = None, budget: str | None = None,
              epochs: int | None = None, train_subset: int | None = None, force_new: bool = False,
              progress: bool = True) -> StudyOutcome:
    """Create or resume the study in `file` and run its queued trials (`workers` processes).

    `group_size`: runs trained as one group (1: one by one; None: the device's default). `budget`
    ("20m", "2h"): plan the largest scale that fits here first (`epochs` / `train_subset` fix one side).
    Trials that failed in an earlier call are trained again; Ctrl-C marks the running trial to be
    retried, closes the parent run and raises KeyboardInterrupt.
    """
    from bench.run_config import build_config
    from bench.studies import summary
    from bench.studies.invocation import counts, group_size as default_group_size, run_study as run_workers
    from bench.studies.preparation import Plan, prepare
    from bench.studies.spec import load_study_file
    from bench.tracking import mask_uri

    for name, value in (("n_trials", n_trials), ("workers", workers), ("timeout", timeout)):
        if value is not None and not value > 0:  # nan too
            raise InputError(f"{name}={value}: must be positive", field=name)
    overrides = {**(overrides or {}), **_shortcuts(epochs, train_subset)}
    spec, text = _load_spec(file, overrides)
    size = default_group_size(build_config(spec.base, overrides).device, spec.repeats, group_size)
    uri = _uri(tracking_uri)
    if budget:
        scales = plan_budget([file], budget, overrides=overrides, group_size=size, tracking_uri=uri,
                             epochs=epochs, train_subset=train_subset, progress=progress)
        overrides.update(scales[spec.name])
        spec, text = load_study_file(file, overrides)
    storage = _storage(storage, uri)
    started = time.time()  # `timeout` counts from here, once for all workers
    prepared = prepare(spec, text, storage, uri, force_new=force_new)
    study, parent_id = prepared.study, prepared.parent_run_id
    if prepared.stale:
        print(f"retrying trials left running by a dead worker: {prepared.stale}")
    if prepared.failed:
        print(f"retrying trials that failed in an earlier run: {prepared.failed}")
    outcome = StudyOutcome(spec.name, parent_id, study, counts(study), prepared.stale + prepared.failed)
    if outcome.counts["waiting"] == 0:
        c = outcome.counts
        if c["running"]:
            print(f"study {spec.name!r}: nothing left to start; {c['running']} trial(s) still running in other "
                  "workers.")
        else:
            print(f"study {spec.name!r} is already finished ({c['complete']} complete, {c['pruned']} pruned); "
                  "nothing to do.")
            summary.log_to_parent(study, spec, uri, parent_id, complete=True)
        return outcome
    print(f"study {spec.name!r}: {outcome.counts['waiting']} trials to run, {workers} worker(s); "
          f"storage {mask_uri(storage)}; MLflow {mask_uri(uri)} (parent run {parent_id})")
    plan = Plan(spec=spec, storage_url=storage, tracking_uri=uri, overrides=overrides, parent_run_id=parent_id,
                max_trials=n_trials, timeout=timeout or spec.budget.timeout, workers=workers, group_size=size,
                progress=progress, started=started)
    try:
        after = run_workers(plan, study)
    except KeyboardInterrupt:
        summary.log_to_parent(study, spec, uri, parent_id, complete=False)
        raise
    outcome.died = after.pop("died")
    outcome.counts = after
    outcome.failed = _failed(study)
    summary.log_to_parent(study, spec, uri, parent_id, complete=outcome.finished)
    return outcome


def _shortcuts(epochs: int | None, train_subset: int | None) -> dict[str, Any]:
    return {k: v for k, v in (("optim.epochs", epochs), ("data.train_subset", train_subset)) if v is not None}


def _load_spec(file: str | Path, overrides: dict[str, Any]):
    """The study file, validated with the overrides; its warnings printed (stderr), not raised."""
    from bench.studies.spec import load_study_file

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec, text = load_study_file(file, overrides)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    return spec, text


def _failed(study) -> list[tuple[int, str]]:
    """The study's failed trials that no later trial retries, with their errors."""
    from optuna.trial import TrialState

    from bench.studies.preparation import retried

    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    return [(t.number, t.user_attrs.get("error", "no error recorded")) for t in trials
            if t.state == TrialState.FAIL and t.number not in again]


def study_status(study: str | Path, *, storage: str | None = None, tracking_uri: str | None = None):
    """The Optuna study named `study` (or the one a study file names), only read: nothing is written."""
    import optuna

    from bench.studies.spec import StudyError, load_study_file
    from bench.studies.storage import read_storage
    from bench.tracking import mask_uri

    name = load_study_file(study)[0].name if Path(study).is_file() else str(study)
    storage = _storage(storage, _uri(tracking_uri))
    try:
        return optuna.load_study(study_name=name, storage=read_storage(storage))
    except KeyError:
        raise StudyError(f"study {name!r} not found in storage {mask_uri(storage)!r}", field="study") from None


def extend_study(study: str | Path, epochs: int, *, storage: str | None = None, tracking_uri: str | None = None,
                 progress: bool = True):
    """Train every finished run of `study` on from its last checkpoint to `epochs` epochs (same MLflow runs)."""
    from bench.studies.extend import extend_study as extend

    uri = _uri(tracking_uri)
    return extend(study, epochs, storage_url=_storage(storage, uri), tracking_uri=uri, progress=progress)


@dataclass
class ReportOutcome:
    """A built report (`bench.report.build.Report`), its files by kind (html, csv, md, published_csv) and
    the parent runs it was logged to."""

    report: Any
    files: dict[str, Path]
    logged_to: list[str]


def report(studies: list[str], *, tracking_uri: str | None = None, out_dir: str | Path | None = None,
           runs_filter: str | None = None, baseline: str | None = None, data_root: str | None = None,
           reference: bool = True, log: bool = True, published: dict | None = None,
           reproduces: str | None = None) -> ReportOutcome:
    """Tables, plots and one HTML page for `studies` from their MLflow runs, written to `out_dir`
    (default reports/<names>) and, when `log`, logged under report/ on each study's parent run.
    `published` and `reproduces`: a reproduction's tables (study name -> tables) and its report."""
    from bench.report.build import build_report
    from bench.report.common import ReportError
    from bench.report.render import log_report, write_report
    from bench.tracking import TrackingError, client, mask_uri, safe_name

    uri = _uri(tracking_uri)
    db = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
    if db is not None and not db.exists():
        raise InputError(f"tracking_uri={uri!r}: no MLflow store at {db} (run a study first, or give the store)",
                         field="tracking_uri")
    out = Path(out_dir) if out_dir else Path("reports") / safe_name("+".join(studies))
    if out.exists() and not out.is_dir():
        raise InputError(f"out={str(out)!r}: exists and is not a folder", field="out")
    c = client(uri)
    try:
        built = build_report(c, studies, out_dir=out, runs_filter=runs_filter, baseline=baseline,
                             data_root=data_root, reference=reference, published=published,
                             progress=lambda m: print(m, file=sys.stderr))
    except ReportError as e:
        raise InputError(str(e), field=e.field) from None
    except Exception as e:
        from mlflow.exceptions import MlflowException

        if isinstance(e, MlflowException):
            raise TrackingError(f"tracking store {mask_uri(uri)!r}: {e.message}") from None
        raise
    built.reproduces = reproduces
    files = write_report(built, uri)
    return ReportOutcome(built, files, log_report(c, built) if log else [])


def plan_budget(files: list[str | Path], budget: str, *, overrides: dict[str, Any] | None = None,
                group_size: int = 1, tracking_uri: str | None = None, epochs: int | None = None,
                train_subset: int | None = None, keep: bool = True, progress: bool = True) -> dict[str, dict]:
    """The overrides each study file trains at to fit `budget` ("90m") on this machine, measured here and
    printed; kept beside the store (`keep`) so that the same call resumes the same plan."""
    from bench.perf.budget import plan_scales
    from bench.studies.spec import load_study_file

    overrides = {**(overrides or {}), **_shortcuts(epochs, train_subset)}
    specs = [load_study_file(f, overrides)[0] for f in files]
    return plan_scales(specs, budget, overrides, _plans_dir(_uri(tracking_uri)), group=group_size, epochs=epochs,
                       train_images=train_subset, plan_only=not keep, progress=progress)


@dataclass
class ReproduceOutcome:
    """A reproduction: its studies' outcomes, the report, its files and the published comparisons."""

    report_id: str
    studies: list[StudyOutcome]
    report: ReportOutcome | None = None  # None when a study did not finish cleanly

    @property
    def comparisons(self) -> list:
        return [c for sr in self.report.report.studies for c in sr.published] if self.report else []


def reproduce(report_id: str, *, studies_dir: str | Path | None = None, out_dir: str | Path | None = None,
              overrides: dict[str, Any] | None = None, storage: str | None = None,
              tracking_uri: str | None = None, workers: int = 1, budget: str | None = None,
              epochs: int | None = None, train_subset: int | None = None, group_size: int | None = None,
              analyze: bool = False, analysis_options: dict[str, dict] | None = None, reference: bool = True,
              log: bool = True, progress: bool = True) -> ReproduceOutcome:
    """Run every study whose [published] names `report_id` (resumable, as `run_study`), then one report with
    that report's tables beside ours. `budget`: the largest scale that fits here, planned once for all."""
    from bench.reproduce import default_studies_dir, find_studies, needed_analyses, run_analyses
    from bench.run_config import build_config
    from bench.studies.invocation import group_size as default_group_size
    from bench.tracking import safe_name

    overrides = {**(overrides or {}), **_shortcuts(epochs, train_subset)}
    folder = Path(studies_dir) if studies_dir else default_studies_dir()
    studies = find_studies(folder, report_id, overrides)
    tables = {spec.name: [t for t in spec.published if t.matches(report_id)] for _, spec in studies}
    out = Path(out_dir) if out_dir else Path("reports") / safe_name(f"reproduce-{report_id}")
    if out.exists() and not out.is_dir():
        raise InputError(f"out={str(out)!r}: exists and is not a folder", field="out")
    print(f"report {report_id}: {len(studies)} stud{'y' if len(studies) == 1 else 'ies'}: "
          + ", ".join(f"{s.name} ({', '.join(t.table for t in tables[s.name])})" for _, s in studies))
    size = default_group_size(build_config(studies[0][1].base, overrides).device,  # decided (and said) once
                              max(spec.repeats for _, spec in studies), group_size)
    uri = _uri(tracking_uri)
    scales = (plan_budget([p for p, _ in studies], budget, overrides=overrides, group_size=size, tracking_uri=uri,
                          epochs=epochs, train_subset=train_subset, progress=progress) if budget else {})
    outcome = ReproduceOutcome(report_id, [])
    for path, spec in studies:
        print(f"\n== study {spec.name} ({path}) ==")
        done = run_study(path, overrides={**overrides, **scales.get(spec.name, {})}, storage=storage,
                         tracking_uri=uri, workers=workers, group_size=size, progress=progress)
        outcome.studies.append(done)
        if not done.ok:
            return outcome
        if analyze and needed_analyses(tables[spec.name]):
            n = run_analyses(uri, spec.name, tables[spec.name], analysis_options or {}, overrides.get("data.root"),
                             overrides.get("device", "auto"), progress)
            print(f"{spec.name}: {n} run(s) analysed")
    outcome.report = report(list(tables), tracking_uri=uri, out_dir=out, data_root=overrides.get("data.root"),
                            reference=reference, log=log, published=tables, reproduces=report_id)
    return outcome
