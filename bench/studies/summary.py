"""What a study leaves on its MLflow parent run: trials table, best trial(s), Optuna's plots."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from bench.studies.preparation import EPOCHS_ATTR, EXTENDS_ATTR
from bench.studies.spec import StudySpec
from bench.tracking import client


def trials_table(study: optuna.Study) -> list[dict]:

    rows = []
    names = study.metric_names or []  # the objective's metrics (eval/tarr), set by preparation.prepare
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        rows.append({
            "trial": t.number, "state": t.state.name,
            **{k: v for k, v in t.params.items()},
            **({(names[i] if i < len(names) else f"value_{i}"): v for i, v in enumerate(t.values)} if t.values else {}),
            "duration_s": round(t.duration.total_seconds(), 1) if t.duration else None,
            "mlflow_run_ids": " ".join(t.user_attrs.get("mlflow_run_ids", [])),
            "note": t.user_attrs.get("error") or ("diverged" if t.user_attrs.get("diverged") else "")
                    or extension_note(t, trials),
        })
    return rows


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "(no trials)"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    text = [[str(_fmt(r.get(c, ""))) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in text)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in text]
    return "\n".join(lines)


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else v)


def best_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The best trial (or the Pareto-optimal ones) by Optuna's own rule, among the trials that count: an
    extended trial's extension counts instead of it (`bench.studies.extend`)."""
    trials = current_trials(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created in memory" line
    try:
        ranked = optuna.create_study(directions=study.directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    ranked.add_trials(trials)  # numbered 0.. in this order
    try:
        best = ranked.best_trials if len(study.directions) > 1 else [ranked.best_trial]
    except ValueError:  # no completed trial yet
        return []
    return [trials[t.number] for t in best]


def _plots(study: optuna.Study, spec: StudySpec) -> dict:
    """Optuna's matplotlib plots that make sense for this study (each skipped if it cannot be drawn)."""
    import optuna.visualization.matplotlib as vis

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    plots = {}
    single = len(study.directions) == 1
    target = None if single else (lambda t: t.values[0])
    tname = spec.objective.metrics[0]
    candidates = {
        "optimization_history": lambda: vis.plot_optimization_history(study, target=target, target_name=tname),
        "param_importances": lambda: vis.plot_param_importances(study, target=target, target_name=tname),
        "parallel_coordinate": lambda: vis.plot_parallel_coordinate(study, target=target, target_name=tname),
    }
    if len(spec.space) == 2:
        candidates["contour"] = lambda: vis.plot_contour(study, target=target, target_name=tname)
    if not single:
        candidates["pareto_front"] = lambda: vis.plot_pareto_front(study)
    if len(complete) < 2:
        candidates.pop("param_importances", None)
    for name, make in candidates.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                ax = make()
            except Exception:  # too few trials or a degenerate space: leave that plot out
                continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        plots[name] = fig
    return plots


def log_to_parent(study: optuna.Study, spec: StudySpec, tracking_uri: str, parent_run_id: str,
                  complete: bool) -> None:
    """Trials CSV, best trial(s), Optuna plots and status on the parent run."""
    import csv

    import matplotlib.pyplot as plt

    mlflow = client(tracking_uri)
    rows = trials_table(study)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trials.csv"
        cols = list(dict.fromkeys(k for r in rows for k in r))
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, cols)
            writer.writeheader()
            writer.writerows(rows)
        mlflow.log_artifact(parent_run_id, str(path))
    best = best_trials(study)
    mlflow.log_dict(parent_run_id, [{"trial": t.number, "params": t.params, "values": t.values,
                                     "mlflow_run_ids": t.user_attrs.get("mlflow_run_ids", [])} for t in best],
                    "best_trials.json")
    for name, fig in _plots(study, spec).items():
        mlflow.log_figure(parent_run_id, fig, f"optuna/{name}.png")
        plt.close(fig)
    tags = {"study_complete": str(complete).lower(), "n_trials": str(len(rows))}
    if len(best) == 1:
        tags["best_trial"] = str(best[0].number)
        tags["best_params"] = ",".join(f"{k}={v}" for k, v in best[0].params.items())
        for metric, value in zip(spec.objective.metrics, best[0].values):  # one Pareto-optimal trial, or the best
            mlflow.log_metric(parent_run_id, f"best/{metric}", value)
        if not spec.multi_objective:
            mlflow.log_metric(parent_run_id, "best_value", best[0].value)
    from mlflow.entities import RunTag

    mlflow.log_batch(parent_run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    mlflow.set_terminated(parent_run_id, "FINISHED")


def superseded(trials: list[FrozenTrial]) -> set[int]:
    """The numbers of the trials that an extension replaced (its runs now train longer)."""
    return {t.user_attrs[EXTENDS_ATTR] for t in trials if EXTENDS_ATTR in t.user_attrs}


def current_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The study's trials, each configuration once: those no extension replaced."""
    gone = superseded(trials)
    return [t for t in trials if t.number not in gone]


def extension_note(trial: FrozenTrial, trials: list[FrozenTrial]) -> str:
    """`extends trial 3 (4 epochs)` on an extension, `extended by trial 9` on the trial it replaced, else ''."""
    if EXTENDS_ATTR in trial.user_attrs:
        return f"extends trial {trial.user_attrs[EXTENDS_ATTR]} ({trial.user_attrs.get(EPOCHS_ATTR, '?')} epochs)"
    by = next((t.number for t in trials if t.user_attrs.get(EXTENDS_ATTR) == trial.number), None)
    return "" if by is None else f"extended by trial {by}"
