"""`gan-bench reproduce REPORT`: run every study whose `[published]` names that report, then write one
report with the report's tables in its own layout, published beside measured, with verdicts.

The studies run through the study runner exactly as `gan-bench study run` runs them (same storage,
resumption and options), so a reproduction that was interrupted resumes with what is left; the report
is `gan-bench report` over those studies, led by the published tables of that report only.
The command itself (arguments, the run of each study) is `bench.cli.reproduce`.
"""

from __future__ import annotations

import contextlib
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import InputError
from bench.studies.spec import StudySpec, load_study_file, same_report


ANALYSIS_S = 600.0  # one run's analysis, kept aside by a race before any has run here (docs/reproducing.md)


def default_studies_dir() -> Path:
    """./studies when run from a checkout, else the one next to the package."""
    here = Path("studies")
    return here if here.is_dir() else Path(__file__).resolve().parents[1] / "studies"


def _names_report(raw: dict, report: str) -> bool:
    tables = raw.get("published")
    tables = [tables] if isinstance(tables, dict) else tables if isinstance(tables, list) else []
    return any(isinstance(t, dict) and same_report(str(t.get("report", "")), report) for t in tables)


def find_studies(folder: Path, report: str, overrides: dict) -> list[tuple[Path, StudySpec]]:
    """The study files in `folder` whose [published] names `report`, each fully validated (nothing runs before)."""
    if not folder.is_dir():
        raise InputError(f"studies folder {str(folder)!r}: not a folder")
    chosen, reports = [], set()
    for path in sorted(folder.glob("*.toml")):
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            print(f"warning: {path}: skipped, not readable as TOML ({e})", file=sys.stderr)
            continue
        tables = raw.get("published")
        for t in [tables] if isinstance(tables, dict) else tables if isinstance(tables, list) else []:
            if isinstance(t, dict) and "report" in t:
                reports.add(str(t["report"]))
        if _names_report(raw, report):
            chosen.append(path)
    if not chosen:
        raise InputError(f"report {report!r}: no study in {folder} has a [published] table for it "
                         f"(reports with published tables: {', '.join(sorted(reports)) or 'none'})")
    return [(path, load_study_file(path, overrides)[0]) for path in chosen]


def needed_analyses(tables) -> dict[str, list[dict]]:
    """analysis name -> the params of the published rows that hold its metrics (analysis/<name>/...)."""
    out: dict[str, list[dict]] = {}
    for t in tables:
        for row in t.rows:
            for name in {m.split("/")[1] for m in row.values if m.startswith("analysis/")}:
                if row.params not in out.setdefault(name, []):
                    out[name].append(dict(row.params))
    return out


def options_for(module, tables, given: dict) -> Any:
    """The analysis' Options: `given`, and where the analysis has parts (`groups`), only the parts whose metrics
    the published rows hold (analysis/<name>/<part>/...): report 002's Tables 4, 5 and 7 need 3 of retrain's 7."""
    from dataclasses import fields

    parts = {m.split("/")[2] for t in tables for row in t.rows for m in row.values
             if m.startswith(f"analysis/{module.NAME}/") and m.count("/") >= 3}
    known = getattr(module, "GROUPS", ())
    if "groups" not in given and "groups" in {f.name for f in fields(module.Options)} and parts <= set(known):
        given = {**given, "groups": tuple(g for g in known if g in parts)}
    return module.Options(**given)


def run_analyses(uri: str, study_name: str, tables, options: dict[str, dict], data_root: str | None,
                 device: str, progress: bool, deadline: float | None = None) -> int:
    """Analyse every finished run of the configurations whose published rows hold analysis metrics.

    Runs that already carry the analysis' metrics are skipped, so a rerun only does what is missing. A
    configuration whose generators have not learned labels (TARR at the judge's floor) is not analysed: the
    report says why and what one analysis costs (`analysis/<name>/time_s`, logged with each). With a
    `deadline` (time.perf_counter()), no analysis starts that would end after it (judged by the longest so far)."""
    import importlib

    from bench.analysis import common
    from bench.report import judge
    from bench.report.baseline import matching
    from bench.report.load import load_study_runs
    from bench.report.stats import summarize

    done, longest = 0, 0.0
    client = common.open_store(uri)
    study = load_study_runs(client, study_name)
    for name, rows in needed_analyses(tables).items():
        module = importlib.import_module(f"bench.analysis.{name}")
        opts = options_for(module, tables, options.get(name, {}))
        for params in rows:
            for group in matching(study.groups, params):
                why = judge.unlearned_labels(summarize(group.values(judge.LABELS)).mean)
                if why:
                    print(f"not analysing {group.label} ({name}): {why}")
                    continue
                for r in group.usable:
                    if any(m.startswith(f"analysis/{name}/") for m in r.final):
                        continue
                    if deadline is not None and time.perf_counter() + longest > deadline:
                        print(f"not analysing {group.label}, seed {r.seed} ({name}): the budget is spent")
                        continue
                    print(f"analysing {group.label}, seed {r.seed} ({name}, run {r.run_id})")
                    t0 = time.perf_counter()
                    run = common.load_run(r.run_id, uri, data_root=data_root, device=device, progress=progress)
                    result = module.analyze(run, opts, progress=progress)
                    took = time.perf_counter() - t0
                    longest = max(longest, took)
                    result.metrics["time_s"] = took  # what the report quotes as its cost
                    common.publish(client, r.run_id, result)
                    done += 1
    return done


@dataclass
class Reproduction:
    """A reproduction: its studies' outcomes, its rounds (racing) and the report (None when a study failed)."""

    report_id: str
    studies: list = field(default_factory=list)  # bench.studies.invocation.StudyOutcome, each study's last
    rounds: list[dict] = field(default_factory=list)
    report: Any = None  # bench.report.build.Report

    @property
    def comparisons(self) -> list:
        return [c for sr in self.report.studies for c in sr.published] if self.report else []


@dataclass
class Setup:
    """What every step of a reproduction shares: where it writes and how it trains."""

    report_id: str
    studies: list[tuple[Path, StudySpec]]
    tables: dict[str, list]
    overrides: dict[str, Any]
    storage: str
    tracking_uri: str
    out: Path
    workers: int = 1
    group: int = 1
    progress: bool = True
    deadline: float | None = None  # with a budget: the time.perf_counter() by which the report is written
    trial_s: float = 0.0  # the longest a trial (or group) took in this reproduction so far

    def run(self, path: Path, scale: dict[str, Any]):
        """Run one study at `scale`. With a deadline, a trial starts only if it is expected to end within the
        study's share of the time left (by its runs, among the studies from this one on), so the budget holds
        even where the plan's estimate did not."""
        from bench.perf.budget import REPORT_S
        from bench.studies.invocation import run_file

        if self.deadline is None:
            return run_file(path, {**self.overrides, **scale}, self.storage, self.tracking_uri,
                            workers=self.workers, group=self.group, progress=self.progress)
        runs = {p: spec.n_trials * spec.repeats for p, spec in self.studies}
        after = list(runs)[list(runs).index(path):]
        left = self.deadline - time.perf_counter() - REPORT_S
        t0 = time.perf_counter()
        done = run_file(path, {**self.overrides, **scale}, self.storage, self.tracking_uri, workers=self.workers,
                        group=self.group, timeout=max(1.0, left * runs[path] / sum(runs[p] for p in after)),
                        trial_s=self.trial_s, progress=self.progress)
        repeats = dict(self.studies)[path].repeats
        groups = -(-done.counts["complete"] * repeats // max(self.group, repeats))  # what trained as one
        if groups:
            self.trial_s = max(self.trial_s, (time.perf_counter() - t0) / groups)
        return done

    def report(self, log: bool, reference: bool = True):
        from bench.report.render import make_report

        return make_report(list(self.tables), tracking_uri=self.tracking_uri, out_dir=self.out,
                           data_root=self.overrides.get("data.root"), reference=reference, log=log,
                           published=self.tables, reproduces=self.report_id)


def reproduce_uniform(setup: Setup, scales: dict[str, dict], analyze: bool, options: dict[str, dict],
                      reference: bool, log: bool) -> Reproduction:
    """Every study once, at its planned scale (`scales`; {}: the study file's own), then the report."""
    out = Reproduction(setup.report_id)
    for path, spec in setup.studies:
        print(f"\n== study {spec.name} ({path}) ==")
        done = setup.run(path, scales.get(spec.name, {}))
        out.studies.append(done)
        if not done.ok:
            return out
        if analyze:
            _analyze(setup, spec.name, options)
    out.report = setup.report(log, reference)
    return out


def _analyze(setup: Setup, name: str, options: dict[str, dict]) -> int:
    """Run the analyses study `name`'s tables need; returns how many runs were analysed."""
    if needed_analyses(setup.tables[name]):
        from bench.perf.budget import REPORT_S

        deadline = setup.deadline - REPORT_S if setup.deadline is not None else None
        n = run_analyses(setup.tracking_uri, name, setup.tables[name], options, setup.overrides.get("data.root"),
                         setup.overrides.get("device", "auto"), setup.progress, deadline)
        print(f"{name}: {n} run(s) analysed")
        return n
    return 0


# Racing the open claims: successive halving's shape, with claims, not configurations, as what stops.


@dataclass
class Claims:
    """A study's published claims after a round: all of them, those still open, and the runs that training on
    could still move (the configurations and baselines of open claims on per-epoch `eval/*` metrics)."""

    open: int
    total: int
    runs: set[str] = field(default_factory=set)


def open_claims(report, name: str) -> Claims:
    """Study `name`'s claims in `report`: cells compared with a baseline (baselines and rows not run are none)."""
    out = Claims(0, 0)
    for sr in report.studies:
        if sr.study.name != name:
            continue
        for c in sr.published:
            base = next((r.group for r in c.rows if r.is_baseline), None)
            for r in c.rows:
                for cell in r.cells.values():
                    if cell.diff is None:
                        continue
                    out.total += 1
                    if cell.settled:
                        continue
                    out.open += 1
                    if cell.metric.startswith("eval/"):  # an analysis' value has no epochs to train on to
                        out.runs |= {run.run_id for g in (r.group, base) if g for run in g.usable}
    return out


def race(setup: Setup, budget_s: float, round1: dict[str, dict], state_file: Path, analyze: bool,
         options: dict[str, dict], reference: bool, log: bool, spent_s: float = 0.0) -> Reproduction:
    """Spend `budget_s` in rounds: round 1 trains every study at `round1`; after each round every claim is
    judged at every epoch; the runs that serve only settled claims stop, the runs behind open claims (their
    configurations and baselines) are extended (the same runs trained on) to twice their study's epochs, up
    to the report's own, while the budget lasts.

    Every round is printed and kept in `state_file`, so the same command resumes where it stopped (the
    time already spent counts)."""
    import json

    state = json.loads(state_file.read_text()) if state_file.is_file() else {"spent_s": spent_s, "rounds": []}
    clock = time.perf_counter() - state["spent_s"]
    setup.deadline = clock + budget_s
    left = lambda: budget_s - (time.perf_counter() - clock)  # noqa: E731
    out = Reproduction(setup.report_id, rounds=state["rounds"])
    kept = _Kept(state_file, state, lambda: budget_s - left())
    full = {spec.name: _report_epochs(spec) for _, spec in setup.studies}
    last = state["rounds"][-1] if state["rounds"] else {}
    epochs, run_epoch_s = dict(last.get("epochs", {})), dict(last.get("run_epoch_s", {}))
    with kept.beating():
        if not state["rounds"]:
            round1_done = state.setdefault("round1", {})  # study -> seconds per run and epoch, once it finished
            for path, spec in setup.studies:
                epochs[spec.name] = round1.get(spec.name, {}).get("optim.epochs", full[spec.name])
                if spec.name in round1_done:  # an earlier call finished it
                    run_epoch_s[spec.name] = round1_done[spec.name]
                    continue
                print(f"\n== round 1: study {spec.name} ({path}) ==")
                t0, before = time.perf_counter(), _completed(setup, spec.name)
                done = setup.run(path, round1.get(spec.name, {}))
                out.studies.append(done)
                if not done.ok:
                    return out
                runs = (done.counts["complete"] - before) * spec.repeats  # trained in this call
                with kept.lock:  # the heartbeat writes the same state
                    run_epoch_s[spec.name] = round1_done[spec.name] = (
                        (time.perf_counter() - t0) / epochs[spec.name] / runs if runs > 0
                        else max(round1_done.values(), default=0.0))
                kept.save()
        return _rounds(setup, out, kept, epochs, run_epoch_s, full, left, budget_s, analyze, options, reference, log)


def _rounds(setup: Setup, out: Reproduction, kept: "_Kept", epochs: dict[str, int], run_epoch_s: dict[str, float],
            full: dict[str, int], left, budget_s: float, analyze: bool, options: dict[str, dict], reference: bool,
            log: bool) -> Reproduction:
    """After round 1: judge, extend the runs behind open claims, and again, while the budget lasts."""
    from bench.perf.budget import REPORT_S
    from bench.studies.extend import extend_study

    extended: dict[str, list[int]] = {}
    while True:
        report = setup.report(log, reference)  # each round's report is the latest, on the parent runs too
        claims = {name: open_claims(report, name) for name in epochs}
        record = {"round": len(out.rounds) + 1, "epochs": dict(epochs), "run_epoch_s": dict(run_epoch_s),
                  "extended": extended, "spent_s": round(budget_s - left(), 1), "claims": report_summary(report)}
        if not out.rounds or out.rounds[-1]["epochs"] != epochs:
            with kept.lock:
                out.rounds.append(record)
            kept.save()
            print(f"round {record['round']}: epochs {epochs}; {record['claims']}; "
                  f"{_duration(record['spent_s'])} of {_duration(budget_s)} spent", flush=True)
        chosen = _next_round(claims, epochs, full, run_epoch_s, left() - REPORT_S - _analyses_s(setup, analyze))
        if not chosen:
            break
        extended = {}
        for name, target in chosen.items():
            runs = claims[name].runs
            print(f"\n== round {len(out.rounds) + 1}: study {name}: {claims[name].open} of {claims[name].total} "
                  f"claim(s) open; extending the {len(runs)} run(s) behind them {epochs[name]} -> {target} "
                  f"epochs ==", flush=True)
            t0 = time.perf_counter()
            result = extend_study(name, target, storage_url=setup.storage, tracking_uri=setup.tracking_uri,
                                  runs=runs, progress=setup.progress)
            print(result.text())
            trained = sum(len(e.run_ids) * (e.epochs - e.from_epochs) for e in result.extended)
            if trained:
                run_epoch_s[name] = max(run_epoch_s[name], (time.perf_counter() - t0) / trained)
            extended[name] = [target, len(runs)]
            epochs[name] = target
    analysed = sum(_analyze(setup, spec.name, options) for _, spec in setup.studies) if analyze else 0
    out.report = setup.report(log, reference) if analysed else report  # the last round's, unless analyses added
    return out


def _analyses_s(setup: Setup, analyze: bool) -> float:
    """Time to keep for the analyses at the end of a race: each run they need at what one took here (from the
    runs analysed so far), or `ANALYSIS_S` where none has run; 0 without `analyze`."""
    if not analyze or not any(needed_analyses(t) for t in setup.tables.values()):
        return 0.0
    from bench.analysis import common
    from bench.report.baseline import matching
    from bench.report.load import load_study_runs

    client, total = common.open_store(setup.tracking_uri), 0.0
    for name, tables in setup.tables.items():
        study = load_study_runs(client, name)
        for analysis, rows in needed_analyses(tables).items():
            runs = [r for params in rows for g in matching(study.groups, params) for r in g.usable]
            took = [r.final[f"analysis/{analysis}/time_s"] for r in runs if f"analysis/{analysis}/time_s" in r.final]
            todo = sum(not any(m.startswith(f"analysis/{analysis}/") for m in r.final) for r in runs)
            total += todo * (sum(took) / len(took) if took else ANALYSIS_S)
    return total


def _next_round(claims: dict[str, Claims], epochs: dict[str, int], full: dict[str, int],
                run_epoch_s: dict[str, float], left_s: float) -> dict[str, int]:
    """Study -> the epochs to extend the runs behind its open claims to: doubling (at most the report's epochs),
    as far as the time left allows, the studies with the most open claims first."""
    chosen = {}
    for name in sorted(epochs, key=lambda n: -claims[n].open):
        if not claims[name].runs or epochs[name] >= full[name]:
            continue
        for target in range(min(2 * epochs[name], full[name]), epochs[name], -1):
            cost = run_epoch_s[name] * len(claims[name].runs) * (target - epochs[name])
            if cost <= left_s:
                chosen[name], left_s = target, left_s - cost
                break
    return chosen


def report_summary(report) -> str:
    from bench.report.published import claims_line

    return claims_line([c for sr in report.studies for c in sr.published])


def _report_epochs(spec: StudySpec) -> int:
    """The epochs the study file trains (the report's own), before any override."""
    from bench.run_config import build_config

    return build_config(spec.base).optim.epochs


class _Kept:
    """A race's state file: its rounds and the time spent, rewritten (atomically) after each study and round,
    and every `EVERY_S` seconds meanwhile, so a reproduction killed mid-round resumes counting what it spent."""

    EVERY_S = 30.0

    def __init__(self, path: Path, state: dict, spent):
        import threading

        self.path, self.state, self.spent, self.lock = path, state, spent, threading.Lock()

    def save(self) -> None:
        import json
        import os

        with self.lock:
            self.state["spent_s"] = round(self.spent(), 1)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.state, indent=1))
            os.replace(tmp, self.path)

    @contextlib.contextmanager
    def beating(self):
        import threading

        stop = threading.Event()

        def every_while() -> None:
            while not stop.wait(self.EVERY_S):
                self.save()

        beat = threading.Thread(target=every_while, daemon=True, name="race-state")
        self.save()
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join()
            self.save()


def _completed(setup: Setup, name: str) -> int:
    """Complete trials of study `name` so far (0 before it exists)."""
    import optuna

    from bench.studies.invocation import counts
    from bench.studies.storage import read_storage

    try:
        return counts(optuna.load_study(study_name=name, storage=read_storage(setup.storage)))["complete"]
    except Exception:  # no storage or no such study yet: nothing completed
        return 0


def _duration(seconds: float) -> str:
    from bench.perf.estimate import fmt_duration

    return fmt_duration(seconds)


__all__ = ["Reproduction", "Setup", "default_studies_dir", "find_studies", "needed_analyses", "race",
           "reproduce_uniform", "run_analyses"]
