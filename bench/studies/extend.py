"""Extending a finished study: every finished run of it trains on, from its last checkpoint, to more epochs.

What changes, where users look:

- MLflow: the same run, RUNNING again and then FINISHED; its curves go on at the next steps and its `eval/*`
  metrics at the next epochs. Its param `optim.epochs` keeps the value it started with (MLflow params cannot
  change); the tag `extended_to_epochs` holds the epochs it has trained now (`extended_from_epochs`: before
  the first extension), and its `config.json` artifact the config it has trained now.
- Optuna: a finished trial cannot change, so an extended trial is recorded by a new COMPLETE trial with the same
  params, its values at the new length and the same `mlflow_run_ids`; its user attributes `extends` (the trial
  it replaces) and `epochs` say what it is, and the runs' `trial` tag names it. `superseded` gives the replaced
  trials; the study's counts, budget, trials table and best trials count each configuration once.
- A trial's seeds extend together (its value is their mean); runs that trained as one group (`train.group`)
  extend as one group.

A run extended from E to N epochs is the run trained N epochs from the start (the checkpoint holds both nets,
both optimizers, the techniques' state, the RNG states and the data order): the same losses and metrics, given
the same code, device and precision (on the CPU in fp32: equal to rounding; `tests/studies/test_extend.py`).
Two things differ by design: a run whose techniques anneal over its planned length (`Technique.anneals`, e.g.
instance noise) is not extended; with `eval.every` > 1 the run keeps the evaluation of the epoch it ended at,
which a run trained N epochs from the start would not have made (its losses and later evaluations are the same).

What cannot be extended is refused per run, with the reason, before anything is written: a run that is not
finished, that diverged, that kept no checkpoint, whose checkpoint is of another format or configuration, whose
config no longer loads, or that was evaluated with another evaluator. An extension that stops half-way (Ctrl-C, a
crash) leaves its runs KILLED or FAILED with their checkpoints; the same command continues them.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from bench.errors import ConfigError, InputError, StudyError
from bench.studies.preparation import EPOCHS_ATTR, EXTENDS_ATTR, PARENT_ATTR, Plan
from bench.studies.summary import current_trials
from bench.studies.storage import default_storage, exclusive, make_storage, read_storage, storage_error
from bench.tracking import (TAG_DIVERGED, TAG_TRIAL, client as mlflow_client, close_orphans, default_tracking_uri,
                            git_commit, mask_uri, no_download_bars, owner_tags)

TAG_EXTENDED_TO = "extended_to_epochs"
TAG_EXTENDED_FROM = "extended_from_epochs"
TAG_EXTENDED_COMMIT = "extended_git_commit"


@dataclass
class Refusal:
    """A run that was not extended, and why (`run_id` None: the trial as a whole)."""

    trial: int
    run_id: str | None
    seed: str | None
    reason: str

    def text(self) -> str:
        where = f"trial {self.trial}" + (f", run {self.run_id} (seed {self.seed})" if self.run_id else "")
        return f"{where}: not extended: {self.reason}"


@dataclass
class Extension:
    """A trial whose runs now have `epochs` epochs, recorded by the trial `new_trial`."""

    trial: int
    new_trial: int
    run_ids: list[str]
    from_epochs: int
    epochs: int
    values: list[float]

    def text(self) -> str:
        values = ", ".join(f"{v:.4g}" for v in self.values)
        return (f"trial {self.trial}: {len(self.run_ids)} run(s) extended from {self.from_epochs} to {self.epochs} "
                f"epochs, recorded as trial {self.new_trial} (values {values})")


@dataclass
class ExtendResult:
    study: str
    epochs: int
    extended: list[Extension] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    unchanged: dict[int, int] = field(default_factory=dict)  # trial -> its epochs, already >= the target

    def text(self) -> str:
        lines = [e.text() for e in self.extended] + [r.text() for r in self.refused]
        if self.unchanged:
            lines.append(f"already at {self.epochs} epochs or more: trial(s) {sorted(self.unchanged)}")
        trials = {r.trial for r in self.refused}
        lines.append(f"study {self.study!r}: {len(self.extended)} trial(s) extended to {self.epochs} epochs, "
                     f"{len(trials)} not extended, {len(self.unchanged)} already there")
        return "\n".join(lines)


@dataclass
class _Run:
    """One run to extend: its MLflow run, config at the target length, checkpoint and where it trained."""

    run_id: str
    seed: str
    cfg: Any
    checkpoint: Path
    from_epochs: int       # what it had trained before its first extension
    at_epoch: int          # its checkpoint's epoch
    group: str             # runs that trained together share it
    status: str
    downloaded: bool       # its checkpoint was fetched from the run for this call (else an earlier call left it)
    target: int            # the epochs it extends to

    @property
    def trains(self) -> bool:
        """It has epochs to train, or an extension that stopped has to finish it."""
        return self.at_epoch < self.target or self.status != "FINISHED"


@dataclass
class _Trial:
    trial: FrozenTrial
    runs: list[_Run]
    done: set[str] = field(default_factory=set)  # its runs trained to the target in this call
    started: datetime.datetime | None = None  # when its first run started training in this call


def extend_study(study: str | Path, epochs: int, *, storage_url: str | None = None, tracking_uri: str | None = None,
                 runs: set[str] | None = None, progress: bool = True) -> ExtendResult:
    """Continue every finished run of a study (a study file or name) from its last checkpoint to `epochs` epochs.

    `runs`: only the trials with one of these MLflow runs (None: all); a trial's seeds extend together.

    Raises a `bench.errors.BenchError` for bad input (epochs, an unknown study or store) before anything is
    written; runs that cannot be extended are returned in `ExtendResult.refused` with the reason, unchanged.
    """
    _check_epochs(epochs)
    uri = tracking_uri or default_tracking_uri()
    name = _study_name(study)
    storage_url = storage_url or default_storage(uri)
    optuna_study = _open(name, storage_url)
    known = {r for t in optuna_study.get_trials(deepcopy=False) for r in t.user_attrs.get("mlflow_run_ids", [])}
    unknown = sorted(set(runs or ()) - known)
    if unknown:
        raise InputError(f"run={unknown[0]!r}: not a run of study {name!r}", field="run")
    parent_id = optuna_study.user_attrs.get(PARENT_ATTR)
    if parent_id is None:
        raise StudyError(f"study {name!r} has no MLflow parent run (attribute {PARENT_ATTR}); it was not created "
                         "by `gan-bench study run`", field="study")
    mlflow = mlflow_client(uri)
    plan = Plan(spec=_spec(mlflow, parent_id, name), storage_url=storage_url, tracking_uri=uri, overrides={},
                parent_run_id=parent_id, progress=progress)
    result = ExtendResult(name, epochs)
    contexts: dict = {}
    claimed: dict[str, str] = {}  # runs marked RUNNING for this call and not yet handed to training
    try:
        with exclusive(storage_url):  # one `study run` preparation or extension at a time picks and claims runs
            close_orphans(uri, mlflow.get_run(parent_id).info.experiment_id)  # runs whose process died: KILLED
            todo = _select(optuna_study, plan, epochs, mlflow, contexts, result, runs)
            _claim(mlflow, [r for t in todo for r in t.runs if r.trains], claimed)
        for t in [t for t in todo if not any(r.trains for r in t.runs)]:  # trained by a call that stopped after
            result.extended.append(_record(optuna_study, t, epochs, mlflow, plan))
        for runs in _groups(todo):
            ids = {r.run_id for r in runs}
            mine = [t for t in todo if ids & {r.run_id for r in t.runs}]
            for t in mine:
                t.started = t.started or datetime.datetime.now()
            _train(runs, plan, epochs, contexts, claimed)
            for t in mine:
                t.done |= ids
                if t.done >= {r.run_id for r in t.runs if r.trains}:
                    result.extended.append(_record(optuna_study, t, epochs, mlflow, plan))
    finally:
        _release(mlflow, claimed)  # runs claimed but never started go back as they were
    if result.extended:
        _summarize(optuna_study, plan)
    return result


def _check_epochs(epochs: Any) -> None:
    from bench.run_config import build_config

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise InputError(f"epochs={epochs!r}: must be a positive whole number", field="epochs")
    try:
        build_config(overrides={"optim.epochs": epochs})
    except ConfigError as e:
        raise InputError(f"epochs={epochs}: {e}", field="epochs") from None


def _study_name(study: str | Path) -> str:
    from bench.studies.spec import load_study_file

    return load_study_file(study)[0].name if Path(study).is_file() else str(study)


def _open(name: str, storage_url: str) -> optuna.Study:
    """The study, for writing; an unknown storage or study is an error and nothing is created."""
    read_storage(storage_url)  # a journal that does not exist is refused here, not created
    try:
        storage = make_storage(storage_url)
    except Exception as e:
        raise storage_error(storage_url, e) from None
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise StudyError(f"study {name!r} not found in storage {mask_uri(storage_url)!r}", field="study") from None


def _spec(mlflow, parent_id: str, name: str):
    """The study file the study was created from (the copy on its parent run): its objective and space."""
    from bench.studies.spec import load_study_file

    with tempfile.TemporaryDirectory(prefix="gan-bench-") as tmp, no_download_bars():
        try:
            path = mlflow.download_artifacts(parent_id, "study.toml", tmp)
        except Exception as e:
            raise StudyError(f"study {name!r}: its parent run {parent_id} has no readable study.toml ({e})",
                             field="study") from None
        return load_study_file(path)[0]


# -- choosing what to extend ---------------------------------------------------------------------------------


def _select(study: optuna.Study, plan: Plan, epochs: int, mlflow, contexts: dict,
            result: ExtendResult, only: set[str] | None = None) -> list[_Trial]:
    """The finished trials to extend (with a run in `only`, if given), their runs checked one by one;
    refusals and trials already there go to `result`."""
    todo = []
    for trial in current_trials(study.get_trials(deepcopy=False)):
        if trial.state != TrialState.COMPLETE:
            continue
        run_ids = trial.user_attrs.get("mlflow_run_ids", [])
        if only is not None and not only.intersection(run_ids):
            continue
        if not run_ids:
            result.refused.append(Refusal(trial.number, None, None, "the trial names no MLflow runs"))
            continue
        has = trial.user_attrs.get(EPOCHS_ATTR) or _started_with(mlflow, run_ids[0])
        if has is not None and has >= epochs:
            result.unchanged[trial.number] = has
            continue
        checked = [_check_run(mlflow, run_id, plan, epochs, contexts) for run_id in run_ids]
        runs = [c for c in checked if isinstance(c, _Run)]
        refusals = [Refusal(trial.number, *c) for c in checked if not isinstance(c, _Run)]
        if refusals:
            seeds = ", ".join(r.seed or "?" for r in refusals)
            result.refused += refusals + [
                Refusal(trial.number, r.run_id, r.seed, f"its trial's seed {seeds} cannot be extended, and a trial's "
                                                        "seeds extend together") for r in runs]
            for r in runs:
                if r.downloaded:
                    r.checkpoint.unlink(missing_ok=True)
            continue
        todo.append(_Trial(trial, runs))
    return todo


def _started_with(mlflow, run_id: str) -> int | None:
    """The epochs a run was started with (its param), None when it cannot be read."""
    with contextlib.suppress(Exception):
        return int(mlflow.get_run(run_id).data.params["optim/epochs"])
    return None


def _check_run(mlflow, run_id: str, plan: Plan, epochs: int, contexts: dict) -> _Run | tuple[str, str | None, str]:
    """The run, ready to extend, or (run id, seed, why not)."""
    from mlflow.exceptions import MlflowException

    from bench.run_config import build_config
    from bench.studies.workers import checkpoint_dir, shared_context
    from bench.techniques import TECHNIQUES

    try:
        run = mlflow.get_run(run_id)
    except MlflowException:
        return run_id, None, "the run is not in the tracking store"
    tags, seed = run.data.tags, run.data.tags.get("seed")
    status = run.info.status

    def no(reason: str) -> tuple[str, str | None, str]:
        return run_id, seed, reason

    if run.info.lifecycle_stage != "active":
        return no("the run was deleted")
    interrupted = TAG_EXTENDED_TO in tags and status in ("KILLED", "FAILED")  # an extension that stopped
    if status != "FINISHED" and not interrupted:
        return no(f"its status is {status}: only finished runs extend")
    if tags.get(TAG_DIVERGED, "").lower() == "true":
        return no(f"it diverged ({tags.get('diverged_reason', 'no reason recorded')}) and stopped early")
    trained = int(tags.get(TAG_EXTENDED_TO) if status == "FINISHED" and TAG_EXTENDED_TO in tags
                  else run.data.params.get("optim/epochs", 0))
    from_epochs = int(tags.get(TAG_EXTENDED_FROM, run.data.params.get("optim/epochs", 0)))
    try:
        tree = _artifact_json(mlflow, run_id, "config.json")
        cfg = build_config(tree, {"optim.epochs": epochs})
    except ConfigError as e:
        return no(f"its config does not load in this version of gan-bench ({e})")
    except Exception as e:
        return no(f"its config.json cannot be read ({type(e).__name__}: {e})")
    anneal = [t.name for t in TECHNIQUES.values() if getattr(t, "anneals", False) and t.active(cfg)]
    if anneal:
        return no(f"technique {anneal[0]} anneals over the run's planned length, so {trained} epochs extended to "
                  f"{epochs} would not be {epochs} epochs from the start")
    ctx = shared_context(cfg, plan, contexts)
    theirs, ours = tags.get("evaluator.sha256"), ctx.evaluator.tags().get("evaluator.sha256")
    if theirs and theirs != ours:  # its later evaluations would use another ruler
        return no(f"it was evaluated with another evaluator (weights {theirs[:12]}; here {str(ours)[:12]})")
    working = checkpoint_dir(plan) / "extend" / f"{run_id}.pt"
    downloaded = not working.exists()
    state = _state(mlflow, run_id, working)
    reason = state if isinstance(state, str) else _state_refusal(state, tree, trained if status == "FINISHED" else None)
    if reason is None and state["epoch"] > epochs:
        reason = f"it has trained {state['epoch']} epochs already, more than {epochs} (a run is not shortened)"
    if reason is not None:
        if downloaded:
            working.unlink(missing_ok=True)
        return no(reason)
    return _Run(run_id, seed or "?", cfg, working, from_epochs, state["epoch"], tags.get("train.group", run_id),
                status, downloaded, epochs)


def _artifact_json(mlflow, run_id: str, path: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="gan-bench-") as tmp, no_download_bars():
        return json.loads(Path(mlflow.download_artifacts(run_id, path, tmp)).read_text())


def _state(mlflow, run_id: str, working: Path) -> dict | str:
    """The run's last checkpoint: the one an extension that stopped left at `working` (it is further on), else
    the run's kept state (downloaded to `working`); a string says why there is none."""
    import shutil

    import torch

    from bench.experiment import STATE_ARTIFACT

    if not working.exists():
        with tempfile.TemporaryDirectory(prefix="gan-bench-") as tmp, no_download_bars():
            try:
                got = mlflow.download_artifacts(run_id, STATE_ARTIFACT, tmp)
            except Exception:
                return ("it kept no checkpoint (runs keep their last one as the artifact "
                        f"{STATE_ARTIFACT} when they train in a study with this version of gan-bench)")
            working.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(got, working)
    try:
        return torch.load(working, map_location="cpu", weights_only=True)
    except Exception as e:
        return f"its checkpoint cannot be read ({type(e).__name__}: {e})"


def _state_refusal(state: dict, config_tree: dict, trained: int | None) -> str | None:
    """Why a checkpoint cannot continue the run whose config is `config_tree` (None: it can)."""
    from bench.config import flatten
    from bench.train import CHECKPOINT_FORMAT

    fmt = state.get("format")
    if fmt != CHECKPOINT_FORMAT:
        return (f"its checkpoint has format {fmt}, from another version of gan-bench (this one continues format "
                f"{CHECKPOINT_FORMAT})")

    def flat(tree: dict) -> dict:
        out = flatten(json.loads(json.dumps(tree, default=str)))
        out.pop("optim/epochs", None)
        return out

    mine, saved = flat(config_tree), flat(state.get("config") or {})
    differ = sorted(k for k in mine.keys() | saved.keys() if mine.get(k) != saved.get(k))
    if differ:
        return f"its checkpoint was trained with another configuration (differs in {', '.join(differ[:5])})"
    if trained is not None and state["epoch"] != trained:
        return f"its checkpoint is at epoch {state['epoch']}, but the run finished {trained} epochs"
    return None


# -- training and recording ----------------------------------------------------------------------------------


def _claim(mlflow, runs: list[_Run], claimed: dict[str, str]) -> None:
    """Mark the runs RUNNING under this process (a second extension then refuses them), keeping their status
    before in `claimed`."""
    from mlflow.entities import RunTag

    for r in runs:
        mlflow.log_batch(r.run_id, tags=[RunTag(k, v) for k, v in owner_tags().items()])
        claimed[r.run_id] = r.status
        mlflow.update_run(r.run_id, status="RUNNING")


def _release(mlflow, claimed: dict[str, str]) -> None:
    for run_id, status in claimed.items():
        with contextlib.suppress(Exception):
            mlflow.set_terminated(run_id, status)


def _groups(todo: list[_Trial]) -> list[list[_Run]]:
    """The runs to train, as they trained: runs of one group (at one checkpoint epoch) together."""
    groups: dict[tuple[str, int], list[_Run]] = {}
    for r in (r for t in todo for r in t.runs if r.trains):
        groups.setdefault((r.group, r.at_epoch), []).append(r)
    return list(groups.values())


def _train(runs: list[_Run], plan: Plan, epochs: int, contexts: dict, claimed: dict[str, str]) -> None:
    from bench import experiment
    from bench.step import grouping_refusal
    from bench.studies.workers import shared_context

    tags = {TAG_EXTENDED_TO: epochs, **({TAG_EXTENDED_COMMIT: git_commit()} if git_commit() else {})}
    # Once its tracker has the run (RUNNING, tagged as extending), the tracker ends it: FINISHED, FAILED or KILLED.
    members = [experiment.MemberRun(r.cfg, tags={**tags, TAG_EXTENDED_FROM: r.from_epochs},
                                    on_run_start=lambda run_id: claimed.pop(run_id, None),
                                    checkpoint_path=r.checkpoint, continues=r.run_id) for r in runs]
    batches = [members] if len(members) == 1 or grouping_refusal([m.cfg for m in members]) is None else \
        [[m] for m in members]
    for batch in batches:
        if plan.progress:
            what = f"from epoch {runs[0].at_epoch} to {epochs}" if runs[0].at_epoch < epochs else "to its end"
            print(f"extending {len(batch)} run(s) {what}: {', '.join(m.continues for m in batch)}", file=sys.stderr,
                  flush=True)
        results = experiment.run_group(batch, tracking_uri=plan.tracking_uri, experiment=plan.spec.name,
                                       context=shared_context(batch[0].cfg, plan, contexts), progress=plan.progress)
        for result in results:
            if isinstance(result, BaseException):  # no hooks here: only a bug gets one
                raise result


def _record(study: optuna.Study, t: _Trial, epochs: int, mlflow, plan: Plan) -> Extension:
    """The trial that records the extension: the old one's params, values at the new length, same runs."""
    old = t.trial
    run_ids = [r.run_id for r in t.runs]
    runs = [mlflow.get_run(run_id) for run_id in run_ids]
    metrics = plan.spec.objective.metrics
    missing = [(run.info.run_id, m) for run in runs for m in metrics if m not in run.data.metrics]
    if missing:
        raise RuntimeError(f"trial {old.number}: run {missing[0][0]} has no {missing[0][1]}; the trial's extension "
                           "is not recorded")
    values = [sum(run.data.metrics[m] for run in runs) / len(runs) for m in metrics]  # the mean over seeds
    first = min(r.from_epochs for r in t.runs)
    attrs: dict[str, Any] = {"mlflow_run_ids": run_ids, EXTENDS_ATTR: old.number, EPOCHS_ATTR: epochs,
                             TAG_EXTENDED_FROM: first}
    diverged = [run.data.tags.get("diverged_reason") for run in runs if run.data.tags.get(TAG_DIVERGED) == "true"]
    if diverged:
        attrs["diverged"] = diverged[0]
    intermediate = dict(old.intermediate_values)
    if intermediate:  # the watched metric per epoch, as pruning reported it (from the first seed)
        done = max(intermediate)
        for m in mlflow.get_metric_history(run_ids[0], plan.spec.objective.watched):
            if m.step > done:
                intermediate[m.step] = m.value
    trial = optuna.trial.create_trial(state=TrialState.COMPLETE, values=values, params=old.params,
                                      distributions=old.distributions, user_attrs=attrs,
                                      intermediate_values=intermediate)
    trial.datetime_start = t.started or trial.datetime_start  # its duration: the extension's
    study.add_trial(trial)
    new = next(n.number for n in study.get_trials(deepcopy=False) if n.user_attrs.get(EXTENDS_ATTR) == old.number)
    for run_id in run_ids:
        mlflow.set_tag(run_id, TAG_TRIAL, str(new))
    return Extension(old.number, new, run_ids, old.user_attrs.get(EPOCHS_ATTR, first), epochs, values)


def _summarize(study: optuna.Study, plan: Plan) -> None:
    """The parent run's trials table, best trial(s) and plots, as they are now."""
    from bench.studies import summary
    from bench.studies.invocation import counts

    c = counts(study)
    summary.log_to_parent(study, plan.spec, plan.tracking_uri, plan.parent_run_id,
                          complete=c["waiting"] == 0 and c["running"] == 0)

