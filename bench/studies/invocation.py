"""One `study run` invocation once prepared: its workers (in this process when there is one, else
spawned processes), a live progress view, the trial counts and the best value so far.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from bench.errors import InputError
from bench.progress import bar as progress_bar
from bench.studies.preparation import EXTENDS_ATTR, Plan, recover_stale, retried, uses_budget
from bench.studies.workers import Budget, work, worker_main


GPU_GROUP_SIZE = 27  # runs per group on a GPU by default: report 002 Table 1's 27 runs at once where shapes allow


def group_size(device: str, seeds: int, requested: int | None = None) -> int:
    """How many runs a worker trains as one group: `requested` (1: one by one), else the device's default
    (said once): up to `GPU_GROUP_SIZE` runs on a GPU; on a CPU a trial's `seeds`, which finish together as
    they would one by one (a larger group delays every trial's result and, member by member, trains no
    faster)."""
    from bench.step import resolve_device

    if requested is not None:
        if requested < 1:
            raise InputError(f"group_size={requested}: must be positive", field="group_size")
        return requested
    if resolve_device(device).type == "cuda":
        return GPU_GROUP_SIZE
    if seeds > 1:
        print(f"grouping: on the CPU a trial's {seeds} seeds train together, member by member (about as fast as "
              "one by one, with the same numbers); --group-size K groups up to K runs, --no-group none", flush=True)
    return seeds


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state (complete, pruned, fail, running, waiting); failures that were retried and extensions
    (their extended trial counts) left out."""
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    out = {s.name.lower(): 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                                       TrialState.RUNNING, TrialState.WAITING)}
    for t in trials:
        if (t.state == TrialState.FAIL and not uses_budget(t, again)) or EXTENDS_ATTR in t.user_attrs:
            continue
        out[t.state.name.lower()] += 1
    return out


def best_text(study: optuna.Study) -> str:
    """The best value so far and its trial (a multi-objective study: how many are Pareto-optimal), or `-`;
    among the trials that count (an extension instead of the trial it extends)."""
    from bench.studies.summary import best_trials

    best = best_trials(study)
    if not best:
        return "-"
    if len(study.directions) > 1:
        return f"{len(best)} Pareto-optimal"
    return f"{best[0].value:.4g} (trial {best[0].number})"


def run_study(plan: Plan, study: optuna.Study) -> dict[str, int]:
    """Run the plan's workers (in this process when there is one) with a live progress view."""
    waiting = counts(study)["waiting"]
    total = waiting if plan.max_trials is None else min(waiting, plan.max_trials)
    bar = progress_bar(total=total, desc=f"study {plan.spec.name}", unit="trial", enabled=plan.progress,
                       position=0, dynamic_ncols=True)

    def refresh() -> None:
        c = counts(study)
        bar.n = min(total, c["complete"] + c["pruned"] + c["fail"] - done_before)
        bar.set_postfix(done=c["complete"], running=c["running"], pruned=c["pruned"], failed=c["fail"],
                        best=best_text(study), refresh=False)
        bar.refresh()

    c0 = counts(study)
    done_before = c0["complete"] + c0["pruned"] + c0["fail"]
    if plan.workers == 1:
        work(plan, Budget(plan.max_trials, plan), on_trial_end=refresh)
    else:
        ctx = mp.get_context("spawn")  # fork is unsafe with torch threads and open storages
        shared = ctx.Value("i", -1 if plan.max_trials is None else plan.max_trials)
        procs = [ctx.Process(target=worker_main, args=(plan, shared), daemon=False) for _ in range(plan.workers)]
        for p in procs:
            p.start()
        try:
            while any(p.is_alive() for p in procs):
                time.sleep(1.0)
                refresh()
        except KeyboardInterrupt:  # pass it on, and let each worker mark its trial before we return
            _interrupt_workers(procs)
            raise
        for p in procs:
            p.join()
    died = _recover_dead(study, plan, procs if plan.workers > 1 else [])
    refresh()
    bar.close()
    return {**counts(study), "died": died}


def _recover_dead(study: optuna.Study, plan: Plan, procs: list) -> int:
    """Workers that died (kill -9, out of memory) leave their trials RUNNING: mark them failed and queue
    them again now, as the next `study run` would; returns how many workers died."""
    dead = [p for p in procs if p.exitcode not in (0, None)]
    if dead:
        recover_stale(study, plan.tracking_uri)
    return len(dead)


def _interrupt_workers(procs: list, grace_s: float = 60.0) -> None:
    import signal

    for p in procs:
        if p.is_alive():
            with contextlib.suppress(OSError):
                os.kill(p.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches them already; a kill -INT does not
    deadline = time.time() + grace_s
    for p in procs:
        while p.is_alive() and time.time() < deadline:
            with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C does not abandon them
                p.join(timeout=0.5)
        if p.is_alive():
            p.terminate()


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


def run_file(file: str | Path, overrides: dict[str, Any], storage: str, tracking_uri: str, *, workers: int = 1,
             n_trials: int | None = None, timeout: float | None = None, group: int | None = None,
             force_new: bool = False, trial_s: float | None = None, progress: bool = True) -> StudyOutcome:
    """Create or resume the study in `file` (with dotted `overrides`) and run its queued trials.

    `timeout`: no trial starts after it; with `trial_s` (a budget's deadline) none starts that is expected to
    end after it: one taking `trial_s` seconds, or as long as the longest trial of this call.

    `group`: runs trained as one group (1: one by one; None: the device's default). Trials that
    failed in an earlier call are trained again; Ctrl-C marks the running trial to be retried, closes
    the parent run and raises KeyboardInterrupt.
    """
    from bench.run_config import build_config
    from bench.studies import summary
    from bench.studies.preparation import Plan, prepare
    from bench.tracking import mask_uri

    for name, value in (("n_trials", n_trials), ("workers", workers), ("timeout", timeout)):
        if value is not None and not value > 0:  # nan too
            raise InputError(f"{name}={value}: must be positive", field=name)
    spec, text = load_spec(file, overrides)
    size = group_size(build_config(spec.base, overrides).device, spec.repeats, group)
    uri = tracking_uri
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
                max_trials=n_trials, timeout=timeout or spec.budget.timeout, trial_s=trial_s, workers=workers,
                group_size=size, progress=progress, started=started)
    try:
        after = run_study(plan, study)
    except KeyboardInterrupt:
        summary.log_to_parent(study, spec, uri, parent_id, complete=False)
        raise
    outcome.died = after.pop("died")
    outcome.counts = after
    outcome.failed = failed_trials(study)
    summary.log_to_parent(study, spec, uri, parent_id, complete=outcome.finished)
    return outcome


def load_spec(file: str | Path, overrides: dict[str, Any]):
    """The study file, validated with the overrides; its warnings printed (stderr), not raised."""
    from bench.studies.spec import load_study_file

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec, text = load_study_file(file, overrides)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    return spec, text


def failed_trials(study) -> list[tuple[int, str]]:
    """The study's failed trials that no later trial retries, with their errors."""
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    return [(t.number, t.user_attrs.get("error", "no error recorded")) for t in trials
            if t.state == TrialState.FAIL and t.number not in again]
