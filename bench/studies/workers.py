"""A study's workers: each claims a WAITING trial that `bench.studies.preparation` queued, keeps
its heartbeat going, trains the trial's configuration (`repeats` seeds, one MLflow run each) and
records the outcome; until the queue, the invocation's trial budget or its time is used up.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from bench.run_config import build_config
from bench.studies import optuna_adapter
from bench.studies.preparation import Plan, retire
from bench.studies.spec import VARIANT_KEY, StudySpec
from bench.studies.storage import make_storage, open_study
from bench.tracking import TAG_CONFIG, TAG_ROLE, TAG_STUDY, TAG_TRIAL

HEARTBEAT_S = 20.0


class _Heartbeat:
    """Writes a timestamp into the running trial so other processes can tell it is alive."""

    def __init__(self, study: optuna.Study, trial_id: int):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(study, trial_id), daemon=True)

    def _beat(self, study, trial_id):
        while not self._stop.wait(HEARTBEAT_S):
            try:
                optuna_adapter.set_trial_user_attr(study, trial_id, "heartbeat", time.time())
            except Exception:  # the trial finished meanwhile, or the storage hiccupped: next beat
                pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def claim(study: optuna.Study) -> optuna.Trial | None:
    """Atomically take one WAITING trial (or None when the queue is empty)."""
    trial = optuna_adapter.claim_waiting(study)
    if trial is not None:
        _claimed(trial)
    return trial


def _claimed(trial: optuna.Trial) -> None:
    """Who runs the trial: stale-trial recovery reads these."""
    for key, value in {"worker_host": socket.gethostname(), "worker_pid": os.getpid(),
                       "heartbeat": time.time()}.items():
        trial.set_user_attr(key, value)


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """Sample the space (conditional parameters only when their `when` holds)."""
    params: dict[str, Any] = {}
    for key, p in spec.search_space.items():
        if p.when and any(params.get(k) != v for k, v in p.when.items()):
            continue
        if p.type == "categorical":
            params[key] = trial.suggest_categorical(key, p.choices)
        elif p.type == "int":
            params[key] = trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            params[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
    return params


def trial_configs(spec: StudySpec, params: dict[str, Any], plan: Plan) -> list:
    """The run configurations of a trial with `params`: one per seed (`repeats`)."""
    base = build_config(spec.base, plan.overrides)
    return [build_config(base.model_dump(), {**spec.config_overrides(params, plan.overrides), "seed": base.seed + k})
            for k in range(spec.repeats)]


def shared_context(cfg, plan: Plan, contexts: dict):
    """Data and evaluator for cfg, loaded once per worker and shared by its trials."""
    from bench import experiment

    key = (cfg.device, cfg.data.dataset, cfg.data.root, cfg.eval.evaluator, cfg.eval.evaluator_epochs,
           cfg.eval.evaluator_subset)
    if key not in contexts:
        contexts[key] = experiment.prepare(cfg, progress=plan.progress and plan.workers == 1)
    return contexts[key]


def member_runs(trial: optuna.Trial, params: dict[str, Any], plan: Plan) -> list:
    """The trial's runs (one per seed) as `bench.experiment.MemberRun`s: names, tags, pruning hook, checkpoints."""
    from bench import experiment

    spec = plan.spec
    label = spec.short_label(params)
    run_ids: list[str] = []
    tags = {TAG_STUDY: spec.name, TAG_ROLE: "trial", TAG_TRIAL: trial.number, TAG_CONFIG: label,
            **{f"param.{p}": v for p, v in params.items()}}
    if VARIANT_KEY in params:
        tags[VARIANT_KEY] = params[VARIANT_KEY]

    def started(run_id: str) -> None:
        run_ids.append(run_id)
        trial.set_user_attr("mlflow_run_ids", list(run_ids))

    # Keyed by the trial's lineage (a retry continues its original's file), never shared by two trials.
    origin = trial.user_attrs.get("retry_of", trial.number)
    runs = []
    for k, cfg in enumerate(trial_configs(spec, params, plan)):
        hooks = [_pruning_hook(trial, spec.objective.watched)] if k == 0 and spec.pruner.type != "none" else []
        ckpt = checkpoint_dir(plan) / f"{experiment.config_id(cfg)}-t{origin}-seed{cfg.seed}.pt"
        runs.append(experiment.MemberRun(cfg, run_name(label, cfg.seed), tags, hooks, started, ckpt))
    return runs


def trial_value(trial: optuna.Trial, plan: Plan, results: list) -> list[float]:
    """The trial's objective, the mean over its seeds; raises what stopped one of its runs."""
    per_seed = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        if result.result.diverged:
            trial.set_user_attr("diverged", result.result.stop_reason)
        missing = [m for m in plan.spec.objective.metrics if m not in result.metrics]
        if missing:
            raise RuntimeError(f"run {result.run_id} did not produce {missing}")
        per_seed.append([result.metrics[m] for m in plan.spec.objective.metrics])
    return [sum(vals) / len(vals) for vals in zip(*per_seed)]


def _run(runs: list, plan: Plan, contexts: dict) -> list:
    """Train runs (one group when there are several), logged under the study's parent run."""
    from bench import experiment

    return experiment.run_group(runs, tracking_uri=plan.tracking_uri, experiment=plan.spec.name,
                                context=shared_context(runs[0].cfg, plan, contexts), parent_run_id=plan.parent_run_id,
                                progress=plan.progress and plan.workers == 1,
                                killed_on=(KeyboardInterrupt, optuna.TrialPruned))


def objective(trial: optuna.Trial, plan: Plan, contexts: dict) -> list[float]:
    """Train the trial's configuration with `repeats` seeds, one after another; the objective is their mean.
    A seed that is pruned or fails ends the trial before the next seed trains."""
    results = []
    for run in member_runs(trial, suggest(trial, plan.spec), plan):
        results += _run([run], plan, contexts)
        if isinstance(results[-1], BaseException):
            break
    return trial_value(trial, plan, results)


def run_name(label: str, seed: int) -> str:
    """`<label>,seed=<k>`, shortened to MLflow's run-name limit (the `config_label` tag keeps the whole label)."""
    from bench.tracking import MAX_RUN_NAME

    tail = f",seed={seed}"
    return (label if len(label) + len(tail) <= MAX_RUN_NAME else label[:MAX_RUN_NAME - len(tail) - 3] + "...") + tail


def checkpoint_dir(plan: Plan) -> Path:
    """Per-epoch checkpoints of running trials: beside the journal (local) or under ./mlruns (RDB)."""
    base = Path(plan.storage_url).parent if "://" not in plan.storage_url else Path("mlruns")
    return base / "checkpoints" / plan.spec.name


def _pruning_hook(trial: optuna.Trial, metric: str) -> Callable[[int, dict], None]:
    name = metric.removeprefix("eval/")

    def hook(epoch: int, metrics: dict) -> None:
        if name in metrics:
            trial.report(metrics[name], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")
    return hook


def run_one(study: optuna.Study, trial: optuna.Trial, plan: Plan, contexts: dict) -> TrialState:
    """Run a claimed trial and record its outcome; an exception fails this trial, never the study."""
    with _Heartbeat(study, optuna_adapter.trial_id(trial)):
        return _run_alone(study, trial, plan, contexts)


def _tell(study: optuna.Study, trial: optuna.Trial, outcome: list[float] | BaseException) -> TrialState:
    if isinstance(outcome, optuna.TrialPruned):
        study.tell(trial, state=TrialState.PRUNED)
        return TrialState.PRUNED
    if isinstance(outcome, BaseException):
        trial.set_user_attr("error", f"{type(outcome).__name__}: {outcome}"[:2000])
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    study.tell(trial, outcome)
    return TrialState.COMPLETE


def _retire_interrupted(study: optuna.Study, trials: list[optuna.Trial], plan: Plan) -> None:
    """Ctrl-C: mark the trials now, as the next run's stale-trial recovery would."""
    with _sigint_ignored():  # a second Ctrl-C does not cut this short
        for trial in trials:
            with contextlib.suppress(Exception):
                retire(study, optuna_adapter.fresh_trial(study, optuna_adapter.trial_id(trial)),
                       "interrupted (Ctrl-C)", plan.tracking_uri)


def run_grouped(study: optuna.Study, trials: list[optuna.Trial], plan: Plan, contexts: dict) -> list[TrialState]:
    """Claimed trials whose runs train as one group: every seed of every trial in one `GroupedStep`.

    Each trial still gets its own outcome (a pruned or failed run stops its trial only). If the group as a
    whole fails (not one member's hook), its trials are trained again one by one, so a crash that grouping
    causes costs time, not results.
    """
    with contextlib.ExitStack() as beats:
        for trial in trials:
            beats.enter_context(_Heartbeat(study, optuna_adapter.trial_id(trial)))
        runs = [member_runs(trial, suggest(trial, plan.spec), plan) for trial in trials]
        from bench.step import grouping_refusal

        cfgs = [r.cfg for rs in runs for r in rs]
        reason = grouping_refusal(cfgs) if len(cfgs) > 1 else None
        if reason is not None:
            _say_once(f"not grouped, training runs one by one: {reason}")
            return [_run_alone(study, trial, plan, contexts) for trial in trials]
        try:
            results = _run([r for rs in runs for r in rs], plan, contexts)
        except KeyboardInterrupt:
            _retire_interrupted(study, trials, plan)
            raise
        except Exception as e:
            print(f"warning: the group of trials {[t.number for t in trials]} failed ({type(e).__name__}: {e}); "
                  "training them one by one", file=sys.stderr, flush=True)
            return [_run_alone(study, trial, plan, contexts) for trial in trials]
        outcomes, at = [], 0
        for trial, rs in zip(trials, runs):
            mine, at = results[at:at + len(rs)], at + len(rs)
            try:
                outcomes.append(trial_value(trial, plan, mine))
            except Exception as e:
                outcomes.append(e)
    return [_tell(study, trial, outcome) for trial, outcome in zip(trials, outcomes)]


def _run_alone(study: optuna.Study, trial: optuna.Trial, plan: Plan, contexts: dict) -> TrialState:
    """Train a claimed trial seed by seed and tell its outcome (under the caller's heartbeat)."""
    try:
        values = objective(trial, plan, contexts)
    except KeyboardInterrupt:
        _retire_interrupted(study, [trial], plan)
        raise
    except Exception as e:  # a crash in one trial must not lose the others
        return _tell(study, trial, e)
    return _tell(study, trial, values)


def claim_groups(study: optuna.Study, first: optuna.Trial, plan: Plan, budget: Budget) -> list[list[optuna.Trial]]:
    """`first` and the WAITING trials that can train with it as one group, up to `plan.group_size` runs,
    as the groups to run in turn (the first is that group).

    A queued grid cell joins when its runs have the group's shapes, batch size and loop (`grouping_refusal`).
    A sampled study's trials are asked for K at once (TPE's constant liar keeps them apart): each empty
    slot gets its parameters as it is claimed and joins the first group its runs fit, else starts one.
    """
    from bench.step import grouping_refusal

    spec = plan.spec
    groups = [([first], trial_configs(spec, suggest(first, spec), plan))]
    if len(groups[0][1]) > 1 and grouping_refusal(groups[0][1]) is not None:
        return [[first]]
    sampled = spec.sampler.type != "grid"
    claimed = lambda: sum(len(cfgs) for _, cfgs in groups)  # noqa: E731

    def fits(t) -> bool:
        params = optuna_adapter.enqueued_params(t)
        if sampled and not params:
            return True  # an empty slot: its parameters are drawn once it is claimed
        if not params or any(k not in params for k in _needed(spec, params)):
            return False
        more = trial_configs(spec, params, plan)
        return claimed() + len(more) <= plan.group_size and grouping_refusal(groups[0][1] + more) is None

    while claimed() + spec.repeats <= plan.group_size and budget.take():
        trial = optuna_adapter.claim_waiting(study, accept=fits)
        if trial is None:
            budget.give_back()
            break
        _claimed(trial)
        more = trial_configs(spec, suggest(trial, spec), plan)
        home = next((g for g in groups if grouping_refusal(g[1] + more) is None), None)
        if home is None:
            groups.append(([trial], more))
        else:
            home[0].append(trial)
            home[1].extend(more)
    return [trials for trials, _ in groups]


_SAID: set[str] = set()


def _say_once(line: str) -> None:
    if line not in _SAID:
        _SAID.add(line)
        print(line, file=sys.stderr, flush=True)


def _needed(spec: StudySpec, params: dict[str, Any]) -> list[str]:
    """The space's parameters a trial with `params` has (conditional ones only where their `when` holds)."""
    return [k for k, p in spec.search_space.items() if not p.when or all(params.get(a) == v for a, v in p.when.items())]


@contextlib.contextmanager
def _sigint_ignored():
    import signal

    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to change
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


class Budget:
    """How many more trials this invocation may start (shared by all workers through a lock)."""

    def __init__(self, limit: int | None, plan: Plan, shared=None):
        self.deadline = None if plan.timeout is None else plan.started + plan.timeout
        self.shared = shared  # multiprocessing.Value for several workers, else a plain counter
        self.left = limit
        self.trial_s = plan.trial_s  # what a trial is expected to take (None: start while time is left)
        self._taken: float | None = None  # when this worker last started a trial

    def take(self) -> bool:
        now = time.time()
        if self.deadline is not None:
            if self.trial_s is not None and self._taken is not None:  # one trial (or group) ran in between
                self.trial_s = max(self.trial_s, now - self._taken)
            if now + (self.trial_s or 0.0) >= self.deadline:
                return False
        if not self._count():
            return False
        self._taken = now
        return True

    def _count(self) -> bool:
        if self.shared is not None:
            with self.shared.get_lock():
                if self.shared.value == 0:
                    return False
                self.shared.value -= 1  # -1 means unlimited: it never reaches 0
                return True
        if self.left is None:
            return True
        if self.left == 0:
            return False
        self.left -= 1
        return True

    def give_back(self) -> None:
        if self.shared is not None:
            with self.shared.get_lock():
                self.shared.value += 1
        elif self.left is not None:
            self.left += 1


def work(plan: Plan, budget: Budget, on_trial_end: Callable[[], None] | None = None) -> None:
    """One worker: claim and run trials until the queue, the invocation budget or the time is used up."""
    if plan.workers > 1:
        import torch

        from bench.threads import per_worker

        torch.set_num_threads(per_worker(plan.workers))  # split the command's threads (bench.threads)
    study = open_study(plan.spec, make_storage(plan.storage_url), create=False)
    contexts: dict = {}
    while budget.take():
        trial = claim(study)
        if trial is None:
            budget.give_back()
            return
        if plan.group_size > 1:
            groups = claim_groups(study, trial, plan, budget)
            with contextlib.ExitStack() as beats:  # the trials waiting for their turn stay alive too
                for later in (t for group in groups[1:] for t in group):
                    beats.enter_context(_Heartbeat(study, optuna_adapter.trial_id(later)))
                for group in groups:
                    run_grouped(study, group, plan, contexts)
        else:
            run_one(study, trial, plan, contexts)
        if on_trial_end:
            on_trial_end()


def worker_main(plan: Plan, shared) -> None:
    """A spawned worker process: `work` under the invocation's shared trial budget (a multiprocessing.Value)."""
    try:
        work(plan, Budget(None, plan, shared))
    except KeyboardInterrupt:  # its trial is already marked (run_one); no traceback from each worker
        pass
