"""Comparison reports: "which technique helps, by how much, and is it real?" from what MLflow holds.

`gan-bench report STUDY [STUDY ...]` reads each study's runs (the parent run tagged `role=parent`,
one child run per trial and seed tagged `role=trial`, see `bench.tracking.TAG_*`) and writes:

- the table: one row per configuration (seeds pooled by the `config_label` tag), mean +/- std,
  a 95% t-interval over seeds, n, the best value per column marked, the difference to the
  baseline row with a Welch t-test p-value, and a reference row computed on real data;
- plots (matplotlib `Figure` objects saved as PNG);
- one self-contained HTML page (images embedded as base64) with each study's question,
  table, plots and a generated verdict;

and logs the same files under `report/` on each study's parent run.

Statistics, stated once (the page repeats them):
- a run's value for a metric is its value at the last logged step (the final epoch);
- std is the sample standard deviation (ddof=1); the 95% CI is `scipy.stats.t.interval`
  with n-1 degrees of freedom around the mean (n/a for n < 2);
- difference to the baseline: mean(config) - mean(baseline); p-value and CI from Welch's
  t-test (`scipy.stats.ttest_ind(equal_var=False)`) when both sides have >= 2 seeds, else
  "n/a" (no test: a bootstrap over 1 seed cannot say anything either).

Only FINISHED runs count. FAILED, KILLED (pruned) and unfinished runs, and seeds that other
configurations have but this one lacks, are listed and marked, never a crash. A diverged run
(tag `diverged=true`) finished with its last finite evaluation: it counts and is marked.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import math
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from bench.tracking import (TAG_CONFIG, TAG_CONFIG_ID, TAG_DIVERGED, TAG_ROLE, TAG_TRIAL, figure_to_png,
                            mask_uri, safe_name)

CONFIDENCE = 0.95
ALPHA = 0.05
NOTE_TAG = "mlflow.note.content"
PARENT_ID_TAG = "mlflow.parentRunId"
# Per-step curves that get plots (train/<key>).
LOSS_KEYS = ("loss_d", "loss_g")
D_OUT_KEYS = ("d_real", "d_fake")
# Config keys that do not change results (never make two studies incomparable).
IGNORED_KEYS = {"seed", "data.root", "data.download", "device", "train.log_every", "eval.every"}


@dataclass(frozen=True)
class Column:
    metric: str
    label: str
    direction: str  # "max", "min", "half" (closest to 0.5 is best) or "none"
    fmt: str = "{:.3f}"

    def text(self, v: float | None) -> str:
        return "n/a" if v is None or not math.isfinite(v) else self.fmt.format(v)


COLUMNS = (
    Column("eval/tarr", "TARR", "max"),
    Column("eval/is", "IS", "max", "{:.2f}"),
    Column("eval/class_acc_geomean", "per-class acc. (geo. mean)", "max"),
    Column("eval/fid", "FID", "min", "{:.2f}"),
    Column("eval/d_acc_real_test", "D acc. real (test)", "half"),
    Column("eval/d_acc_fake_test", "D acc. fake (test)", "half"),
    Column("eval/classes_covered", "classes covered", "max", "{:.1f}"),
    Column("eval/class_kl", "class KL to uniform", "min"),
    Column("time/train_s", "train time (s)", "min", "{:.1f}"),
)
# The columns every report has, even when no run logged them (shown as n/a).
CORE_METRICS = ("eval/is", "eval/fid", "eval/d_acc_real_test", "eval/d_acc_fake_test", "time/train_s")
EVAL_PLOT_METRICS = ("eval/tarr", "eval/is", "eval/class_acc_geomean", "eval/fid", "eval/d_acc_real_test",
                     "eval/d_acc_fake_test", "eval/classes_covered", "eval/class_kl")
# Reference row: which real-data score stands in each column (bench.evaluator.real_scores).
REFERENCE_MAP = {"eval/tarr": "test_accuracy", "eval/is": "is", "eval/class_acc_geomean": "class_acc_geomean",
                 "eval/fid": "fid_train_test", **{f"eval/class_acc_{i}": f"class_acc_{i}" for i in range(10)}}


class ReportError(ValueError):
    """Bad report input (unknown study, bad filter or baseline): exit 2, naming the value."""


# ---------------------------------------------------------------------------
# Statistics


@dataclass
class Stat:
    """Summary of one metric over seeds."""

    values: list[float]
    mean: float = math.nan
    std: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan

    @property
    def n(self) -> int:
        return len(self.values)


def summarize(values: list[float]) -> Stat:
    """Mean, sample std (ddof=1) and the 95% t-interval over seeds (n/a below 2 seeds)."""
    from scipy import stats

    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    s = Stat(vals)
    if not vals:
        return s
    arr = np.asarray(vals, dtype=np.float64)
    s.mean = float(arr.mean())
    if len(arr) >= 2:
        s.std = float(arr.std(ddof=1))
        if s.std > 0:
            lo, hi = stats.t.interval(CONFIDENCE, len(arr) - 1, loc=s.mean, scale=stats.sem(arr))
            s.ci_low, s.ci_high = float(lo), float(hi)
        else:
            s.ci_low = s.ci_high = s.mean
    return s


@dataclass
class Diff:
    """A configuration minus the baseline, with the test that says whether it is real."""

    diff: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    p: float = math.nan
    test: str = "n/a"
    n: tuple[int, int] = (0, 0)

    @property
    def tested(self) -> bool:
        return math.isfinite(self.p)


def compare(a: Stat, b: Stat) -> Diff:
    """a - b; Welch's t-test (unequal variances) when both have >= 2 values, else no test."""
    from scipy import stats

    d = Diff(n=(a.n, b.n))
    if a.n == 0 or b.n == 0:
        d.test = "n/a (no finished runs)"
        return d
    d.diff = a.mean - b.mean
    if a.n < 2 or b.n < 2:
        d.test = "n/a (fewer than 2 seeds)"
        return d
    if a.std == 0 and b.std == 0:
        d.test = "n/a (no variance)"
        return d
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(a.values, b.values, equal_var=False)
        ci = res.confidence_interval(CONFIDENCE)
    d.p, d.ci_low, d.ci_high = float(res.pvalue), float(ci.low), float(ci.high)
    d.test = "Welch"
    return d


def final_value(history) -> float | None:
    """The value at the last logged step (latest timestamp breaks ties), from a metric history."""
    if not history:
        return None
    return max(history, key=lambda m: (m.step, m.timestamp)).value


# ---------------------------------------------------------------------------
# Reading a study from MLflow


@dataclass
class RunData:
    run_id: str
    name: str
    status: str
    seed: str
    tags: dict[str, str]
    params: dict[str, str]  # dotted config keys
    error: str | None = None
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # metric -> [(step, value)]
    final: dict[str, float] = field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        return self.tags.get(TAG_DIVERGED, "").lower() == "true"

    @property
    def usable(self) -> bool:
        return self.status == "FINISHED"

    def state(self) -> str:
        return {"FINISHED": "finished", "FAILED": "failed", "KILLED": "pruned/killed"}.get(
            self.status, f"unfinished ({self.status.lower()})")


@dataclass
class Group:
    """One configuration: the runs that differ only by seed."""

    label: str
    runs: list[RunData]
    config_id: str | None = None
    study: str = ""
    missing_seeds: list[str] = field(default_factory=list)

    @property
    def usable(self) -> list[RunData]:
        return [r for r in self.runs if r.usable]

    @property
    def params(self) -> dict[str, str]:
        return (self.usable or self.runs)[0].params if self.runs else {}

    def values(self, metric: str) -> list[float]:
        return [r.final[metric] for r in self.usable if metric in r.final]

    def status_text(self) -> str:
        counts: dict[str, int] = {}
        for r in self.runs:
            counts[r.state()] = counts.get(r.state(), 0) + 1
        parts = [f"{counts.pop('finished', 0)} finished"] + [f"{v} {k}" for k, v in sorted(counts.items())]
        div = sum(r.diverged for r in self.usable)
        if div:
            parts.append(f"{div} diverged")
        if self.missing_seeds:
            parts.append(f"missing seed {', '.join(self.missing_seeds)}")
        return ", ".join(parts)

    @property
    def flagged(self) -> bool:
        return any(not r.usable or r.diverged for r in self.runs) or bool(self.missing_seeds)


@dataclass
class StudyData:
    name: str
    experiment_id: str
    parent: Any | None  # mlflow Run
    groups: list[Group]
    objectives: list[tuple[str, str]]  # (metric, "maximize"|"minimize")
    space_keys: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def question(self) -> str:
        return self.parent.data.tags.get(NOTE_TAG, "") if self.parent else ""

    @property
    def runs(self) -> list[RunData]:
        return [r for g in self.groups for r in g.runs]

    def tag(self, key: str, default: str = "") -> str:
        return self.parent.data.tags.get(key, default) if self.parent else default


def _dotted(key: str) -> str:
    return key.replace("/", ".")


def param_value(text: str | None) -> Any:
    """A logged param (MLflow stores `str(value)`) back as a value: True/False, None, numbers, else the string."""
    if text is None:
        return None
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    try:
        v = json.loads(text)
    except json.JSONDecodeError:
        return text
    return v if isinstance(v, (int, float, list, dict)) else text


def _search_all(client, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000,
                                  page_token=token, order_by=["attributes.start_time ASC"])
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _history(client, run_id: str, metric: str) -> list[tuple[int, float]]:
    hist = client.get_metric_history(run_id, metric)
    last: dict[int, tuple[int, float]] = {}
    for m in sorted(hist, key=lambda m: (m.step, m.timestamp)):
        last[m.step] = (m.timestamp, m.value)  # one value per step: the latest
    return [(step, v) for step, (_, v) in sorted(last.items())]


def _wanted(metric: str) -> bool:
    return (metric.startswith("eval/") or metric.startswith("time/")
            or metric in {f"train/{k}" for k in LOSS_KEYS + D_OUT_KEYS})


def _parse_objectives(text: str) -> list[tuple[str, str]]:
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        metric, _, direction = part.partition(":")
        direction = direction.strip().lower() or "maximize"
        out.append((metric.strip(), "minimize" if direction.startswith("min") else "maximize"))
    return out


def _json_tag(text: str, default):
    try:
        return json.loads(text) if text else default
    except json.JSONDecodeError:
        return default


def load_study(client, name: str, runs_filter: str | None = None) -> StudyData:
    """Every run of one study, grouped by configuration, with final values and histories."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        known = sorted(e.name for e in client.search_experiments())
        raise ReportError(f"study {name!r}: no MLflow experiment of that name "
                          f"(experiments: {', '.join(known) or 'none'})")
    try:
        all_runs = _search_all(client, exp.experiment_id, runs_filter or "")
    except MlflowException as e:
        raise ReportError(f"--runs {runs_filter!r}: not a valid MLflow filter ({e.message})") from None
    parents = [r for r in all_runs if r.data.tags.get(TAG_ROLE) == "parent"]
    if runs_filter and not parents:  # the filter is for trial runs; the parent is found regardless
        parents = [r for r in _search_all(client, exp.experiment_id, f"tags.{TAG_ROLE} = 'parent'")]
    parent = parents[-1] if parents else None
    notes = []
    if parent is None:
        notes.append("no parent run (tag role=parent): the study's question, objective and space are unknown, "
                     "and the report is not logged to MLflow")
    elif len(parents) > 1:
        notes.append(f"{len(parents)} parent runs; using the latest ({parent.info.run_id})")
    children = [r for r in all_runs if r.data.tags.get(TAG_ROLE) != "parent"]
    if parent is not None:  # children of another parent (an older study of the same name) are not this study's
        children = [r for r in children if r.data.tags.get(PARENT_ID_TAG, parent.info.run_id) == parent.info.run_id]

    runs = []
    for r in children:
        tags = dict(r.data.tags)
        params = {_dotted(k): v for k, v in r.data.params.items()}
        params.update({k[len("param."):]: v for k, v in tags.items() if k.startswith("param.")})
        rd = RunData(run_id=r.info.run_id, name=r.info.run_name or r.info.run_id, status=r.info.status,
                     seed=tags.get("seed", params.get("seed", "?")), tags=tags, params=params,
                     error=tags.get("error"))
        if rd.usable:
            for metric in r.data.metrics:
                if _wanted(metric):
                    rd.history[metric] = _history(client, rd.run_id, metric)
                    if rd.history[metric]:
                        rd.final[metric] = rd.history[metric][-1][1]
        runs.append(rd)

    objectives = _parse_objectives(parent.data.tags.get("objective", "")) if parent else []
    space_keys = [_dotted(k) for k in _json_tag(parent.data.tags.get("space_keys", ""), [])] if parent else []
    groups = _group(runs, name)
    if not space_keys:
        space_keys = varied_keys(groups)
    if not objectives:
        present = {m for r in runs for m in r.final}
        metric = next((m for m in ("eval/tarr", "eval/is") if m in present), "eval/is")
        objectives = [(metric, "maximize")]
        if parent is not None:
            notes.append(f"the parent run has no `objective` tag; ranking by {metric} (maximize)")
    if not runs:
        notes.append("no trial runs" + (f" match --runs {runs_filter!r}" if runs_filter else ""))
    return StudyData(name, exp.experiment_id, parent, groups, objectives, space_keys, notes)


def _group_key(r: RunData) -> str:
    return r.tags.get(TAG_CONFIG) or r.tags.get(TAG_CONFIG_ID) or re.sub(r",?seed=\d+$", "", r.name) or r.run_id


def _group(runs: list[RunData], study: str) -> list[Group]:
    groups: dict[str, Group] = {}
    for r in runs:
        key = _group_key(r)
        g = groups.setdefault(key, Group(label=key, runs=[], study=study))
        g.runs.append(r)
        g.config_id = g.config_id or r.tags.get(TAG_CONFIG_ID)
    seeds = {r.seed for r in runs}
    for g in groups.values():
        have = {r.seed for r in g.runs}
        g.missing_seeds = sorted(seeds - have, key=lambda s: (len(s), s))
        g.runs.sort(key=lambda r: (len(r.seed), r.seed, r.run_id))
    return list(groups.values())


def varied_keys(groups: list[Group]) -> list[str]:
    """Config keys whose value differs between configurations (seed and bookkeeping excluded)."""
    from bench.config import all_keys

    known = set(all_keys())
    keys: dict[str, set] = {}
    for g in [g for g in groups if g.usable] or groups:  # a failed or pruned stub may lack params
        for k, v in g.params.items():
            if k in known and k not in IGNORED_KEYS:
                keys.setdefault(k, set()).add(str(param_value(v)))
    return sorted(k for k, vals in keys.items() if len(vals) > 1)


# ---------------------------------------------------------------------------
# Baselines


def parse_params(text: str, option: str = "--baseline") -> dict[str, Any]:
    """`key=value[,key=value]` (dotted or `a/b` keys, or a leaf name like real_target) or a JSON dict."""
    from bench.config import ConfigError, all_keys, check_key, parse_value

    text = text.strip()
    if text.startswith("{"):
        try:
            items = list(json.loads(text).items())
        except (json.JSONDecodeError, AttributeError) as e:
            raise ReportError(f"{option} {text!r}: not a JSON object ({e})") from None
    else:
        items = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ReportError(f"{option} {text!r}: expected KEY=VALUE[,KEY=VALUE], got {part!r}")
            items.append((key.strip(), parse_value(value.strip())))
    if not items:
        raise ReportError(f"{option} {text!r}: no KEY=VALUE pairs")
    leaves: dict[str, list[str]] = {}
    for k in all_keys():
        leaves.setdefault(k.rsplit(".", 1)[-1], []).append(k)
    out = {}
    for key, value in items:
        key = _dotted(str(key))
        if "." not in key and len(leaves.get(key, [])) == 1:
            key = leaves[key][0]
        try:
            out[check_key(key)] = value
        except ConfigError as e:
            raise ReportError(f"{option} {text!r}: {e}") from None
    return out


def _same(logged: str | None, wanted: Any) -> bool:
    if logged is None:
        return False
    got = param_value(logged)
    num = (int, float)
    if isinstance(got, num) and isinstance(wanted, num) and not isinstance(got, bool) and not isinstance(wanted, bool):
        return math.isclose(float(got), float(wanted), rel_tol=1e-9, abs_tol=1e-12)
    return got == wanted or str(got).lower() == str(wanted).lower()


def matching(groups: list[Group], wanted: dict[str, Any]) -> list[Group]:
    return [g for g in groups if g.runs and all(_same(g.params.get(k), v) for k, v in wanted.items())]


def _objective_best(groups: list[Group], metric: str, direction: str) -> Group | None:
    scored = [(summarize(g.values(metric)).mean, g) for g in groups]
    scored = [(m, g) for m, g in scored if math.isfinite(m)]
    if not scored:
        return None
    return (max if direction == "maximize" else min)(scored, key=lambda t: t[0])[1]


def resolve_baseline(study: StudyData, wanted: dict[str, Any] | None, text: str | None) -> tuple[Group | None, str]:
    """The baseline group and a sentence saying where it came from."""
    sources = []
    if wanted:
        sources.append((wanted, f"--baseline {text}"))
    tag = _json_tag(study.tag("baseline"), None)
    if isinstance(tag, dict) and tag:
        sources.append(({_dotted(k): v for k, v in tag.items()}, "the study's baseline"))
    for params, where in sources:
        found = matching(study.groups, params)
        if len(found) > 1:
            raise ReportError(f"{where}: matches {len(found)} configurations of study {study.name!r} "
                              f"({'; '.join(g.label for g in found)}); add keys to pick one")
        if found:
            return found[0], f"baseline: {found[0].label} ({where})"
        study.notes.append(f"{where} ({json.dumps(params)}) matches no configuration of this study")
    metric, direction = study.objectives[0]
    best = _objective_best(study.groups, metric, direction)
    if best is None:
        return None, "no baseline: no configuration has finished runs"
    return best, (f"no baseline given: differences are to the best configuration by {metric} ({best.label}); "
                  "pass --baseline KEY=VALUE to compare with a baseline")


# ---------------------------------------------------------------------------
# The table


@dataclass
class Row:
    label: str
    group: Group | None
    stats: dict[str, Stat]
    diffs: dict[str, Diff] = field(default_factory=dict)
    best: set[str] = field(default_factory=set)
    is_baseline: bool = False
    reference: dict[str, float] | None = None  # the real-data row

    @property
    def n(self) -> int:
        return len(self.group.usable) if self.group else 0


@dataclass
class Table:
    title: str
    columns: list[Column]
    rows: list[Row]
    baseline_note: str
    reference_note: str = ""

    def row(self, label: str) -> Row:
        return next(r for r in self.rows if r.label == label)


def columns_for(groups: list[Group], objectives: list[tuple[str, str]]) -> list[Column]:
    present = {m for g in groups for r in g.usable for m in r.final}
    keep = set(CORE_METRICS) | present
    cols = [c for c in COLUMNS if c.metric in keep]
    for metric, direction in objectives:
        if all(c.metric != metric for c in cols):
            cols.append(Column(metric, metric, "max" if direction == "maximize" else "min", "{:.4g}"))
    return cols


def build_table(title: str, groups: list[Group], objectives: list[tuple[str, str]], baseline: Group | None,
                baseline_note: str, reference: dict[str, float] | None = None, reference_note: str = "",
                label_fn=None) -> Table:
    cols = columns_for(groups, objectives)
    rows = []
    for g in groups:
        stats = {c.metric: summarize(g.values(c.metric)) for c in cols}
        rows.append(Row(label=label_fn(g) if label_fn else g.label, group=g, stats=stats,
                        is_baseline=g is baseline))
    base = next((r for r in rows if r.is_baseline), None)
    if base is not None:
        for r in rows:
            if not r.is_baseline:
                r.diffs = {c.metric: compare(r.stats[c.metric], base.stats[c.metric]) for c in cols}
    for c in cols:
        scored = [(r.stats[c.metric].mean, r) for r in rows if math.isfinite(r.stats[c.metric].mean)]
        if len(scored) < 2 or c.direction == "none":
            continue
        key = {"max": lambda t: -t[0], "min": lambda t: t[0], "half": lambda t: abs(t[0] - 0.5)}[c.direction]
        best = key(min(scored, key=key))
        ties = [r for v, r in scored if math.isclose(key((v, r)), best, rel_tol=1e-12, abs_tol=1e-15)]
        if len(ties) == len(scored):
            continue  # every row ties: nothing is best
        for v, r in scored:
            if math.isclose(key((v, r)), best, rel_tol=1e-12, abs_tol=1e-15):
                r.best.add(c.metric)
    if reference:
        ref_stats = {c.metric: summarize([reference[REFERENCE_MAP[c.metric]]] if c.metric in REFERENCE_MAP
                                         and REFERENCE_MAP[c.metric] in reference else []) for c in cols}
        rows.append(Row(label="real data (reference)", group=None, stats=ref_stats, reference=reference))
    return Table(title, cols, rows, baseline_note, reference_note)


def _p_text(d: Diff) -> str:
    if not d.tested:
        return d.test
    return f"p<0.001" if d.p < 0.001 else f"p={d.p:.3f}"


def _cell(row: Row, c: Column) -> tuple[str, str, str]:
    """(mean ± std, 95% CI, difference to the baseline) texts for one cell."""
    s = row.stats[c.metric]
    if row.reference is not None:
        return (c.text(s.mean) if s.n else "—"), "", ""
    if s.n == 0:
        return "n/a", "", ""
    text = c.text(s.mean)
    ci = ""
    if s.n >= 2:
        text += f" ± {c.text(s.std)}"
        ci = f"CI [{c.text(s.ci_low)}, {c.text(s.ci_high)}]"
    if row.group and s.n < row.n:
        text += f" (n={s.n})"
    d = row.diffs.get(c.metric)
    diff = ""
    if row.is_baseline:
        diff = "baseline"
    elif d is not None and math.isfinite(d.diff):
        sign = "+" if d.diff >= 0 else "-"
        diff = f"Δ {sign}{c.text(abs(d.diff))}"
        if d.tested:
            diff += f" [{c.text(d.ci_low)}, {c.text(d.ci_high)}], {_p_text(d)} (Welch)"
        else:
            diff += f", {d.test}"
    return text, ci, diff


def table_csv(tables: list[tuple[str, Table]]) -> str:
    """One line per row; numbers unrounded. `study` says which study (or "comparison")."""
    buf = io.StringIO()
    cols: list[Column] = []
    for _, t in tables:
        cols += [c for c in t.columns if c.metric not in {x.metric for x in cols}]
    order = [c.metric for c in COLUMNS]
    cols.sort(key=lambda c: order.index(c.metric) if c.metric in order else len(order))
    fields = ["study", "config", "kind", "n", "runs"]
    for c in cols:
        m = c.metric
        fields += [f"{m} mean", f"{m} std", f"{m} ci95_low", f"{m} ci95_high", f"{m} n", f"{m} best",
                   f"{m} diff", f"{m} diff_ci95_low", f"{m} diff_ci95_high", f"{m} p", f"{m} test"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    num = lambda v: "" if v is None or not math.isfinite(v) else repr(float(v))  # noqa: E731
    for study, t in tables:
        for r in t.rows:
            kind = "reference" if r.reference is not None else "baseline" if r.is_baseline else "config"
            line = {"study": study, "config": r.label, "kind": kind, "n": r.n if r.group else "",
                    "runs": r.group.status_text() if r.group else ""}
            for c in t.columns:
                m, s = c.metric, r.stats[c.metric]
                line.update({f"{m} mean": num(s.mean), f"{m} std": num(s.std), f"{m} ci95_low": num(s.ci_low),
                             f"{m} ci95_high": num(s.ci_high), f"{m} n": s.n, f"{m} best": c.metric in r.best})
                d = r.diffs.get(m)
                if d is not None:
                    line.update({f"{m} diff": num(d.diff), f"{m} diff_ci95_low": num(d.ci_low),
                                 f"{m} diff_ci95_high": num(d.ci_high), f"{m} p": num(d.p), f"{m} test": d.test})
            w.writerow(line)
    return buf.getvalue()


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def table_markdown(t: Table) -> str:
    head = ["configuration", "n", *[c.label for c in t.columns]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in t.rows:
        label = r.label + (" (baseline)" if r.is_baseline else "") + (" ⚠" if r.group and r.group.flagged else "")
        cells = [f"*{_md_escape(label)}*" if r.reference is not None else _md_escape(label),
                 str(r.n) if r.group else "—"]
        for c in t.columns:
            value, ci, diff = _cell(r, c)
            if c.metric in r.best:
                value = f"**{value}** ★"
            cells.append("<br>".join(_md_escape(x) for x in (value, ci, diff) if x))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_html(t: Table) -> str:
    e = html.escape
    head = "".join(f"<th>{e(x)}</th>" for x in ["configuration", "n", *[c.label for c in t.columns]])
    body = []
    for r in t.rows:
        cls = "reference" if r.reference is not None else "baseline" if r.is_baseline else ""
        label = e(r.label)
        if r.is_baseline:
            label += ' <span class="tag">baseline</span>'
        if r.group and r.group.flagged:
            label += f' <span class="warn" title="{e(r.group.status_text())}">⚠ {e(r.group.status_text())}</span>'
        cells = [f'<th scope="row">{label}</th>', f"<td>{r.n if r.group else '—'}</td>"]
        for c in t.columns:
            value, ci, diff = _cell(r, c)
            best = c.metric in r.best
            d = r.diffs.get(c.metric)
            sig = " sig" if d is not None and d.tested and d.p < ALPHA else ""
            inner = (f'<span class="v">{e(value)}{" ★" if best else ""}</span>'
                     + (f'<span class="ci">{e(ci)}</span>' if ci else "")
                     + (f'<span class="d{sig}">{e(diff)}</span>' if diff else ""))
            cells.append(f'<td class="{"best" if best else ""}">{inner}</td>')
        body.append(f'<tr class="{cls}">' + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


# ---------------------------------------------------------------------------
# Verdicts


def verdict(t: Table, objectives: list[tuple[str, str]], limit: int = 8) -> list[str]:
    """A few sentences: the best configuration, and each configuration vs the baseline on the objective."""
    lines = []
    rows = [r for r in t.rows if r.group is not None]
    base = next((r for r in rows if r.is_baseline), None)
    ref = next((r for r in t.rows if r.reference is not None), None)
    for metric, direction in objectives:
        col = next((c for c in t.columns if c.metric == metric), None)
        if col is None:
            continue
        ranked = sorted((r for r in rows if r.stats[metric].n), key=lambda r: r.stats[metric].mean,
                        reverse=direction == "maximize")
        if not ranked:
            lines.append(f"{col.label}: no finished run logged {metric}; nothing to compare.")
            continue
        top = ranked[0]
        s = top.stats[metric]
        line = (f"Best {col.label} ({direction}): {top.label} with {col.text(s.mean)}"
                + (f" ± {col.text(s.std)}" if s.n >= 2 else "") + f" over {s.n} seed{'s' * (s.n != 1)}")
        if ref is not None and ref.stats[metric].n:
            line += f" (real data: {col.text(ref.stats[metric].mean)})"
        lines.append(line + ".")
        if base is None:
            continue
        shown = 0
        for r in ranked + [r for r in rows if not r.stats[metric].n]:
            if r.is_baseline or shown >= limit:
                continue
            shown += 1
            d = r.diffs.get(metric)
            if d is None or not math.isfinite(d.diff):
                lines.append(f"{r.label} vs {base.label}: {col.label} n/a ({r.group.status_text()}).")
                continue
            sign = "+" if d.diff >= 0 else "-"
            text = f"{r.label} vs {base.label}: {col.label} {sign}{col.text(abs(d.diff))}"
            if d.tested:
                better = (d.diff > 0) == (direction == "maximize")
                text += (f" [95% CI {col.text(d.ci_low)}, {col.text(d.ci_high)}], {_p_text(d)} (Welch's t-test, "
                         f"n={d.n[0]} vs {d.n[1]}): "
                         + (f"significant at {ALPHA:g}, {'better' if better else 'worse'}" if d.p < ALPHA
                            else "not significant"))
            else:
                text += f": no test, {d.test} (n={d.n[0]} vs {d.n[1]})"
            if r.group.flagged:
                text += f" [runs: {r.group.status_text()}]"
            lines.append(text + ".")
        if len([r for r in rows if not r.is_baseline]) > shown:
            lines.append(f"... and {len(rows) - 1 - shown} more configurations (see the table).")
    excluded = [run for r in rows for run in r.group.runs if not run.usable]
    if excluded:
        kinds: dict[str, int] = {}
        for run in excluded:
            kinds[run.state()] = kinds.get(run.state(), 0) + 1
        lines.append("Not counted: " + ", ".join(f"{v} {k}" for k, v in kinds.items())
                     + " run(s); see the run list below.")
    return lines


# ---------------------------------------------------------------------------
# Plots (matplotlib Figure objects; no pyplot state)


def _colors(n: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _mean_band(series: list[list[tuple[int, float]]]):
    """Steps, mean and std over runs (a step counts the runs that logged it)."""
    by_step: dict[int, list[float]] = {}
    for s in series:
        for step, v in s:
            if math.isfinite(v):
                by_step.setdefault(step, []).append(v)
    steps = sorted(by_step)
    mean = np.array([np.mean(by_step[s]) for s in steps])
    std = np.array([np.std(by_step[s], ddof=1) if len(by_step[s]) > 1 else 0.0 for s in steps])
    return np.array(steps), mean, std


def _legend(fig: Figure, groups: list[Group], colors) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[i], lw=2) for i in range(len(groups))]
    fig.legend(handles, [g.label for g in groups], loc="lower center", ncol=min(3, len(groups)), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 0.0))


def _curves(groups: list[Group], metrics: list[tuple[str, str]], xlabel: str, title: str,
            ncols: int = 3) -> Figure | None:
    from matplotlib.ticker import MaxNLocator

    metrics = [(m, t) for m, t in metrics if any(m in r.history for g in groups for r in g.usable)]
    if not metrics:
        return None
    ncols = min(ncols, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    legend_rows = math.ceil(len([g for g in groups if g.usable]) / 3)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows + 0.3 * legend_rows + 0.5))
    groups = [g for g in groups if any(m in r.history for m, _ in metrics for r in g.usable)]
    colors = _colors(len(groups))
    for i, (metric, name) in enumerate(metrics):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for g, color in zip(groups, colors):
            series = [r.history[metric] for r in g.usable if metric in r.history]
            if not series:
                continue
            x, mean, std = _mean_band(series)
            ax.plot(x, mean, color=color, marker="o" if len(x) <= 12 else None, ms=3, lw=1.5)
            if len(series) > 1:
                ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, lw=0)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title + " (line: mean over seeds; band: ±1 std)", fontsize=11)
    _legend(fig, groups, colors)
    fig.tight_layout(rect=(0, (0.3 * legend_rows + 0.2) / fig.get_figheight(), 1, 0.95))
    return fig


def plot_eval_curves(groups: list[Group]) -> Figure | None:
    names = {c.metric: c.label for c in COLUMNS}
    return _curves(groups, [(m, names[m]) for m in EVAL_PLOT_METRICS], "epoch", "Evaluation metrics per epoch")


def plot_losses(groups: list[Group]) -> Figure | None:
    return _curves(groups, [("train/loss_d", "D loss"), ("train/loss_g", "G loss")], "step", "Losses", ncols=2)


def plot_d_outputs(groups: list[Group]) -> Figure | None:
    return _curves(groups, [("train/d_real", "D(x): real"), ("train/d_fake", "D(G(z)): fake")], "step",
                   "Discriminator outputs", ncols=2)


def plot_class_accuracy(groups: list[Group], reference: dict[str, float] | None = None,
                        class_names: tuple[str, ...] | None = None) -> Figure | None:
    keys = [f"eval/class_acc_{i}" for i in range(10)]
    with_data = [g for g in groups if any(g.values(k) for k in keys)]
    if not with_data:
        return None
    bars = [(g.label, [summarize(g.values(k)) for k in keys]) for g in with_data]
    if reference and "class_acc_0" in reference:
        bars.append(("real data (reference)", [summarize([reference[f"class_acc_{i}"]]) for i in range(10)]))
    n = len(bars)
    width = 0.8 / n
    fig = Figure(figsize=(max(8.0, 1.0 + 0.9 * len(keys) * max(1, n / 3)), 4.2))
    ax = fig.add_subplot()
    colors = _colors(n)
    x = np.arange(len(keys))
    for i, (label, stats) in enumerate(bars):
        means = [s.mean if s.n else 0.0 for s in stats]
        errs = [s.std if s.n > 1 else 0.0 for s in stats]
        color = "0.3" if label.startswith("real data") else colors[i]
        ax.bar(x - 0.4 + width * (i + 0.5), means, width, yerr=errs, capsize=2, color=color, label=label)
    ax.set_xticks(x, list(class_names or [str(i) for i in range(10)]), fontsize=8)
    ax.set_ylabel("accuracy of the evaluator on class-conditioned samples", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title("Per-class accuracy at the final epoch (bar: mean over seeds; whisker: ±1 std)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(3, n), loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    fig.tight_layout()
    return fig


def _sort_values(values) -> list:
    parsed = [(param_value(v), v) for v in values]
    try:
        return [v for _, v in sorted(parsed, key=lambda t: t[0])]
    except TypeError:
        return sorted(values)


def plot_heatmap(groups: list[Group], keys: list[str], metric: str, direction: str) -> Figure | None:
    """A 2-D grid study: the objective's mean in each cell (empty cells say so)."""
    if len(keys) != 2:
        return None
    kx, ky = keys
    xs = _sort_values({g.params.get(kx) for g in groups if g.params.get(kx) is not None})
    ys = _sort_values({g.params.get(ky) for g in groups if g.params.get(ky) is not None})
    if not xs or not ys:
        return None
    grid = np.full((len(ys), len(xs)), np.nan)
    text = [["no runs"] * len(xs) for _ in ys]
    for g in groups:
        x, y = g.params.get(kx), g.params.get(ky)
        if x not in xs or y not in ys:
            continue
        s = summarize(g.values(metric))
        i, j = ys.index(y), xs.index(x)
        if s.n:
            grid[i, j] = s.mean
            text[i][j] = f"{s.mean:.3g}" + (f"\n±{s.std:.2g}" if s.n > 1 else "") + f"\nn={s.n}"
        else:
            text[i][j] = "no finished\nruns"
    fig = Figure(figsize=(max(4.5, 1.3 * len(xs) + 2.5), max(3.5, 1.0 * len(ys) + 2)))
    ax = fig.add_subplot()
    cmap = "viridis" if direction == "maximize" else "viridis_r"
    masked = np.ma.masked_invalid(grid)
    im = ax.imshow(masked, cmap=cmap, aspect="auto", origin="lower")
    finite = grid[np.isfinite(grid)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(len(ys)):
        for j in range(len(xs)):
            v = grid[i, j]
            dark = math.isfinite(v) and ((v < mid) == (direction == "maximize"))
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    ax.set_xticks(range(len(xs)), xs)
    ax.set_yticks(range(len(ys)), ys)
    ax.set_xlabel(kx)
    ax.set_ylabel(ky)
    ax.set_title(f"{metric} ({direction}) by {kx} x {ky}", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


# MLflow 3 stores `log_image(key=, step=)` as images/<key>+step+<step>+timestamp+<ms>+<uuid>.png (and a
# +compressed.webp thumbnail); older versions used % as the separator.
_IMAGE_RE = re.compile(r"^(?P<key>.+?)[+%]step[+%](?P<step>\d+)[+%]timestamp[+%](?P<ts>\d+)[+%].*\.png$")


def final_sample_image(client, run_id: str, key: str = "samples") -> tuple[str, int] | None:
    """(artifact path, step) of the last-step image logged with `log_image(key=..., step=...)`."""
    try:
        files = client.list_artifacts(run_id, "images")
    except Exception:
        return None
    best = None
    for f in files:
        m = _IMAGE_RE.match(f.path.rsplit("/", 1)[-1])
        if m and m["key"] == key and "compressed" not in f.path:
            rank = (int(m["step"]), int(m["ts"]))
            if best is None or rank > best[0]:
                best = (rank, f.path)
    return (best[1], best[0][0]) if best else None


def plot_samples(client, groups: list[Group]) -> tuple[Figure | None, list[str]]:
    """Each configuration's final-epoch sample grid (its first finished seed), side by side."""
    import os

    import matplotlib.image as mpimg

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    images, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for g in groups:
            found = None
            for r in g.usable:
                found = final_sample_image(client, r.run_id)
                if found:
                    path = client.download_artifacts(r.run_id, found[0], tmp)
                    images.append((f"{g.label}\nseed {r.seed}, epoch {found[1]}", mpimg.imread(path)))
                    break
            if not found:
                notes.append(f"{g.label}: no sample grid (no finished run logged one)")
    if not images:
        return None, notes
    ncols = min(4, len(images))
    nrows = math.ceil(len(images) / ncols)
    fig = Figure(figsize=(3.6 * ncols, 3.9 * nrows))
    for i, (title, img) in enumerate(images):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle("Samples at the final epoch (fixed noise; conditional models: one row per class)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig, notes


def _trial_points(groups: list[Group], keys: list[str], metric: str):
    """(params, value) per finished run, with the varied keys parsed."""
    points = []
    for g in groups:
        for r in g.usable:
            if metric in r.final and math.isfinite(r.final[metric]):
                points.append(({k: _hashable(param_value(r.params.get(k))) for k in keys},
                               r.final[metric]))
    return points


def _hashable(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, (list, dict)) else v


def param_importances(groups: list[Group], keys: list[str], metric: str, direction: str) -> dict[str, float] | None:
    """Optuna's fANOVA importances, from an in-memory study built from the MLflow runs (one trial per run)."""
    import logging

    import optuna
    from optuna.distributions import CategoricalDistribution

    points = _trial_points(groups, keys, metric)
    varied = [k for k in keys if len({json.dumps(p[k], default=str) for p, _ in points}) > 1]
    if len(points) < 2 or not varied or len({v for _, v in points}) < 2:
        return None
    choices = {k: tuple(sorted({p[k] for p, _ in points}, key=lambda v: (str(type(v)), v if v is not None else 0)))
               for k in varied}
    optuna.logging.set_verbosity(logging.WARNING)
    study = optuna.create_study(direction=direction)
    for params, value in points:
        study.add_trial(optuna.trial.create_trial(
            params={k: params[k] for k in varied}, value=value,
            distributions={k: CategoricalDistribution(choices[k]) for k in varied}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imp = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    return dict(imp)


def plot_importances(importances: dict[str, float], metric: str) -> Figure:
    items = sorted(importances.items(), key=lambda t: t[1])
    fig = Figure(figsize=(6.5, 0.5 * len(items) + 1.6))
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel(f"importance for {metric} (fANOVA, Optuna; one point per finished run)", fontsize=8)
    ax.set_title("Parameter importances", fontsize=10)
    fig.tight_layout()
    return fig


def plot_parallel(groups: list[Group], keys: list[str], metric: str, direction: str) -> Figure | None:
    """Parallel coordinates: one line per finished run through its parameters and the objective."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    points = _trial_points(groups, keys, metric)
    if len(points) < 2 or not keys:
        return None
    axes_names = [*keys, metric]
    positions, ticks = [], []
    for k in keys:
        vals = [p[k] for p, _ in points]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
        uniq = sorted(set(vals), key=lambda v: (str(type(v)), v if v is not None else 0))
        if numeric and len(uniq) > 1:
            lo, hi = min(uniq), max(uniq)
            positions.append([(v - lo) / (hi - lo) for v in vals])
            ticks.append([((u - lo) / (hi - lo), f"{u:g}") for u in uniq] if len(uniq) <= 8 else
                         [(0.0, f"{lo:g}"), (1.0, f"{hi:g}")])
        else:
            idx = {u: (i / (len(uniq) - 1) if len(uniq) > 1 else 0.5) for i, u in enumerate(uniq)}
            positions.append([idx[v] for v in vals])
            ticks.append([(idx[u], str(u)) for u in uniq])
    obj = np.array([v for _, v in points])
    lo, hi = float(obj.min()), float(obj.max())
    span = hi - lo or 1.0
    positions.append(list((obj - lo) / span if hi > lo else np.full(len(obj), 0.5)))
    ticks.append([(0.0, f"{lo:.3g}"), (1.0, f"{hi:.3g}")] if hi > lo else [(0.5, f"{lo:.3g}")])
    fig = Figure(figsize=(max(5.0, 2.2 * len(axes_names)), 4.0))
    ax = fig.add_subplot()
    cmap = colormaps["viridis" if direction == "maximize" else "viridis_r"]
    norm = Normalize(lo, hi if hi > lo else lo + 1)
    xs = np.arange(len(axes_names))
    order = np.argsort(obj if direction == "maximize" else -obj)  # best drawn last (on top)
    for i in order:
        ax.plot(xs, [pos[i] for pos in positions], color=cmap(norm(obj[i])), alpha=0.8, lw=1.5)
    for x, tk in zip(xs, ticks):
        ax.axvline(x, color="0.4", lw=0.8)
        for y, label in tk:
            ax.text(x + 0.03, y, label, fontsize=7, va="center")
    ax.set_xticks(xs, axes_names, fontsize=8, rotation=10)
    ax.set_yticks([])
    ax.set_ylim(-0.08, 1.08)
    ax.set_xlim(-0.2, len(axes_names) - 0.6)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.colorbar(cmap_mappable(cmap, norm), ax=ax, label=metric, shrink=0.8)
    ax.set_title("Parallel coordinates (one line per finished run; colour: objective)", fontsize=10)
    fig.tight_layout()
    return fig


def cmap_mappable(cmap, norm):
    from matplotlib.cm import ScalarMappable

    sm = ScalarMappable(norm=norm, cmap=cmap)
    sm.set_array([])
    return sm


# ---------------------------------------------------------------------------
# The reference row (real data through the evaluator)


def reference_scores(groups: list[Group], data_root: str | None, cache: dict,
                     progress=lambda message: None) -> tuple[dict | None, str]:
    """bench.evaluator.real_scores for the dataset and evaluator the runs used, or None and why not."""
    from bench.config import ConfigError, all_keys, build_config
    from bench.data import DataError

    run = next((r for g in groups for r in g.usable), None)
    if run is None:
        return None, "reference row skipped: no finished run to take the dataset and evaluator settings from"
    known = set(all_keys())
    overrides = {k: param_value(v) for k, v in run.params.items() if k in known}
    overrides.update({"data.download": False, "device": "auto"})
    if data_root:
        overrides["data.root"] = data_root
    try:
        cfg = build_config(overrides=overrides)
    except ConfigError as e:
        return None, f"reference row skipped: the runs' config does not load here ({e})"
    key = (cfg.data.dataset, cfg.data.root, cfg.eval.model_dump_json())
    if key not in cache:
        from bench import experiment
        from bench.evaluator import cache_dir, evaluator_key, real_scores

        if not (cache_dir() / "evaluators" / f"{evaluator_key(cfg.data.dataset, cfg.eval)}.pt").exists():
            progress(f"training the {cfg.data.dataset} evaluator for the reference row (once; it is cached)")
        try:
            ctx = experiment.prepare(cfg, progress=False)
        except DataError as e:
            cache[key] = (None, f"reference row skipped: data not found ({e}); pass --data-root")
        else:
            scores = real_scores(ctx.evaluator, ctx.train_full, ctx.test, cfg.eval)
            cache[key] = (scores, f"reference row: {cfg.data.dataset} real data through the evaluator "
                                  f"{ctx.evaluator.meta.get('key', '')} (TARR column: the evaluator's test accuracy; "
                                  f"IS of {min(cfg.eval.n_real, len(ctx.test))} real test images; FID real train "
                                  "vs real test; per-class accuracy on the test split)")
    return cache[key]


# ---------------------------------------------------------------------------
# Cross-study comparison


def base_config(study: StudyData) -> dict[str, str]:
    from bench.config import all_keys

    known = set(all_keys())
    varied = set(study.space_keys) | set(varied_keys(study.groups)) | IGNORED_KEYS
    params = max((g.params for g in study.groups), key=len, default={})  # a pruned stub may lack params
    return {k: v for k, v in params.items() if k in known and k not in varied}


def comparable(studies: list[StudyData]) -> list[str]:
    """Keys that two studies fix to different values (empty: they share a base configuration)."""
    diffs = []
    bases = [(s.name, base_config(s)) for s in studies]
    for i, (na, a) in enumerate(bases):
        for nb, b in bases[i + 1:]:
            for k in sorted(set(a) & set(b)):
                if not _same(a[k], param_value(b[k])):
                    diffs.append(f"{k}: {a[k]} ({na}) vs {b[k]} ({nb})")
    return diffs


def combined_groups(studies: list[StudyData]) -> list[Group]:
    """Every study's configurations; identical configurations (same config_id) pooled, one run per seed."""
    pooled: dict[str, Group] = {}
    for s in studies:
        for g in s.groups:
            key = g.config_id or f"{s.name}:{g.label}"
            label = f"{s.name}: {g.label}"
            if key not in pooled:
                pooled[key] = Group(label=label, runs=list(g.runs), config_id=g.config_id, study=s.name,
                                    missing_seeds=list(g.missing_seeds))
                continue
            p = pooled[key]
            p.label += f" = {label}"
            seeds = {r.seed for r in p.usable}
            p.runs += [r for r in g.runs if not (r.usable and r.seed in seeds)]
    return list(pooled.values())


# ---------------------------------------------------------------------------
# The report


@dataclass
class Plot:
    name: str
    title: str
    png: bytes | None
    note: str = ""


@dataclass
class StudyReport:
    study: StudyData
    table: Table
    verdict: list[str]
    plots: list[Plot]


@dataclass
class Report:
    studies: list[StudyReport]
    comparison: tuple[Table, list[str]] | None  # (table, verdict)
    comparison_note: str
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    logged_to: list[str] = field(default_factory=list)


def _plot(name: str, title: str, make, why_not: str) -> Plot:
    try:
        fig = make()
    except Exception as e:  # a plot must never sink the report
        return Plot(name, title, None, f"not drawn: {type(e).__name__}: {e}")
    if fig is None:
        return Plot(name, title, None, why_not)
    return Plot(name, title, figure_to_png(fig))


def study_plots(client, study: StudyData, reference: dict | None) -> list[Plot]:
    from bench.data import DATASETS

    groups = study.groups
    metric, direction = study.objectives[0]
    keys = [k for k in study.space_keys]
    dataset = next((g.params.get("data.dataset") for g in groups if g.params.get("data.dataset")), "mnist")
    names = DATASETS[dataset].class_names if dataset in DATASETS else None
    plots = [
        _plot("eval_curves", "Evaluation metrics vs epoch", lambda: plot_eval_curves(groups),
              "no finished run logged eval/* metrics"),
        _plot("losses", "G and D losses", lambda: plot_losses(groups), "no finished run logged train/loss_*"),
        _plot("d_outputs", "D(x) and D(G(z))", lambda: plot_d_outputs(groups),
              "no finished run logged train/d_real, train/d_fake"),
        _plot("class_accuracy", "Per-class accuracy", lambda: plot_class_accuracy(groups, reference, names),
              "no per-class accuracy (unconditional models log classes covered and class KL instead)"),
        _plot("heatmap", f"{metric} over the 2-D grid", lambda: plot_heatmap(groups, keys, metric, direction),
              f"not a 2-D grid study (it varies {len(keys)} key{'s' * (len(keys) != 1)}: "
              f"{', '.join(keys) or 'none'})"),
    ]
    sample_notes: list[str] = []

    def samples():
        fig, notes = plot_samples(client, groups)
        sample_notes.extend(notes)
        return fig

    plots.append(_plot("samples", "Samples at the final epoch", samples, "no finished run logged a sample grid"))
    if sample_notes:
        plots[-1].note = "; ".join(filter(None, [plots[-1].note, *sample_notes]))
    imp_holder: dict = {}

    def importances():
        imp = param_importances(groups, keys, metric, direction)
        imp_holder["v"] = imp
        return plot_importances(imp, metric) if imp else None

    plots.append(_plot("param_importances", "Parameter importances", importances,
                       "needs at least 2 finished runs, a parameter with 2 or more values and an objective "
                       "that differs between runs"))
    plots.append(_plot("parallel_coordinates", "Parallel coordinates",
                       lambda: plot_parallel(groups, keys, metric, direction),
                       "needs at least 2 finished runs and a varied parameter"))
    return plots


def build_report(client, names: list[str], *, out_dir: Path, runs_filter: str | None = None,
                 baseline: str | None = None, data_root: str | None = None, reference: bool = True,
                 progress=print) -> Report:
    wanted = parse_params(baseline) if baseline else None
    studies = [load_study(client, n, runs_filter) for n in names]
    if wanted is not None and not any(matching(s.groups, wanted) for s in studies):
        labels = "; ".join(f"{s.name}: " + ", ".join(g.label for g in s.groups) for s in studies)
        raise ReportError(f"--baseline {baseline!r}: matches no configuration (configurations: {labels or 'none'})")
    ref_cache: dict = {}
    reports = []
    baselines: dict[str, Group | None] = {}
    for s in studies:
        progress(f"{s.name}: {len(s.runs)} runs in {len(s.groups)} configurations")
        base, note = resolve_baseline(s, wanted, baseline)
        baselines[s.name] = base
        ref, ref_note = (reference_scores(s.groups, data_root, ref_cache, progress) if reference
                         else (None, "reference row skipped (--no-reference)"))
        table = build_table(s.name, s.groups, s.objectives, base, note, ref, ref_note)
        plots = study_plots(client, s, ref)
        reports.append(StudyReport(s, table, verdict(table, s.objectives), plots))

    comparison, comparison_note = None, ""
    with_runs = [s for s in studies if any(g.usable for g in s.groups)]
    if len(studies) > 1 and len(with_runs) < 2:
        comparison_note = "No combined table: fewer than two of the studies have finished runs."
    elif len(studies) > 1:
        studies = with_runs
        diffs = comparable(studies)
        if diffs:
            comparison_note = ("No combined table: the studies do not share a base configuration ("
                               + "; ".join(diffs[:8]) + (" ..." if len(diffs) > 8 else "") + ").")
        else:
            groups = combined_groups(studies)
            objectives = studies[0].objectives
            chosen = [baselines[s.name] for s in studies]
            base_ids = {b.config_id for b in chosen if b is not None}
            base = None
            if wanted is not None:
                found = matching(groups, wanted)
                base = found[0] if found else None
                note = f"baseline: {base.label} (--baseline {baseline})" if base else ""
            elif len(base_ids) == 1 and None not in base_ids and all(b is not None for b in chosen):
                base = next(g for g in groups if g.config_id in base_ids)
                note = f"baseline: {base.label} (every study's baseline is this configuration)"
            if base is None:
                base = _objective_best(groups, *objectives[0])
                note = f"differences are to the best configuration by {objectives[0][0]}"
            ref = next((r.table.rows[-1].reference for r in reports if r.table.rows and r.table.rows[-1].reference),
                       None)
            table = build_table("comparison", groups, objectives, base, note, ref)
            comparison = (table, verdict(table, objectives))
            comparison_note = ("The studies share a base configuration (they differ only in the keys each varies); "
                               "identical configurations are pooled across studies, one run per seed.")
    return Report(reports, comparison, comparison_note, out_dir)


# ---------------------------------------------------------------------------
# Writing: CSV, Markdown, PNG, HTML; logging to MLflow


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0 auto;max-width:1400px;
padding:1.2em 2em;color:#1d2330;line-height:1.45}
h1{margin-bottom:.1em}h2{border-bottom:2px solid #d7dbe3;padding-bottom:.2em;margin-top:2.2em}
.meta{color:#5a6372;font-size:.9em}.question{font-size:1.15em;background:#f2f5fa;border-left:4px solid #4b7bd1;
padding:.5em .9em;margin:.6em 0}
.verdict{background:#f7faf2;border:1px solid #cfe0b8;border-radius:6px;padding:.4em 1.2em}
.verdict li{margin:.25em 0}.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.86em;margin:.6em 0}
th,td{border:1px solid #d7dbe3;padding:.35em .55em;vertical-align:top;text-align:left}
thead th{background:#eef1f6;position:sticky;top:0}
td .v{display:block;white-space:nowrap}td .ci{display:block;color:#3d4654;font-size:.85em;white-space:nowrap}
td .d{display:block;color:#5a6372;font-size:.85em}
td .d.sig{color:#14632e;font-weight:600}
td.best{background:#e6f4ea}td.best .v{font-weight:700}
tr.baseline th{background:#fff8e1}tr.reference{font-style:italic;background:#f6f6f6}
.tag{background:#f0c36d;border-radius:3px;padding:0 .35em;font-size:.8em;font-style:normal}
.warn{color:#a4480a;font-size:.85em;display:block;font-weight:normal}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #e3e6ec}
figcaption{color:#5a6372;font-size:.9em}.note{color:#5a6372;font-size:.9em}
details{margin:.6em 0}code{background:#f2f4f7;padding:0 .25em;border-radius:3px}
"""


def _run_list_html(study: StudyData) -> str:
    e = html.escape
    rows = []
    for g in study.groups:
        for r in g.runs:
            flag = "" if r.usable and not r.diverged else ' class="flag"'
            state = r.state() + (", diverged" if r.diverged else "")
            err = f"<br><small>{e(r.error[:300])}</small>" if r.error else ""
            rows.append(f"<tr{flag}><td>{e(g.label)}</td><td>{e(r.seed)}</td><td>{e(r.tags.get(TAG_TRIAL, ''))}"
                        f"</td><td>{e(state)}{err}</td><td><code>{e(r.run_id)}</code></td><td>{e(r.name)}</td></tr>")
        if g.missing_seeds:
            rows.append(f'<tr class="flag"><td>{e(g.label)}</td><td>{e(", ".join(g.missing_seeds))}</td><td></td>'
                        "<td>missing (no run)</td><td></td><td></td></tr>")
    return ("<details><summary>Runs ({} finished of {})</summary><div class=\"scroll\"><table><thead><tr>"
            "<th>configuration</th><th>seed</th><th>trial</th><th>state</th><th>run id</th><th>run name</th></tr></thead><tbody>{}"
            "</tbody></table></div></details>").format(sum(r.usable for r in study.runs), len(study.runs),
                                                      "".join(rows))


METHODS = ("Each run's value is its metric at the last logged step (the final epoch); seeds of a configuration are "
           "pooled. Cells: mean ± sample std (ddof=1) [95% confidence interval, Student t with n−1 degrees of "
           "freedom]. Δ: difference to the baseline row with the 95% CI and p-value of Welch's t-test "
           "(scipy.stats.ttest_ind, equal_var=False), computed only when both sides have at least 2 seeds, otherwise "
           "n/a (no test). ★ marks the best value per column (highest for TARR, IS, per-class accuracy, classes "
           "covered; lowest for FID, class KL, train time; closest to 0.5 for D's test accuracies, where D can no "
           "longer tell real from fake). Only FINISHED runs count; failed, pruned and unfinished runs and missing "
           "seeds are listed and marked ⚠; diverged runs count (their last finite evaluation) and are marked.")


def render_html(report: Report, tracking_uri: str) -> str:
    e = html.escape
    names = ", ".join(s.study.name for s in report.studies)
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
             f"<title>gan-bench report: {e(names)}</title><style>{CSS}</style></head><body>",
             f"<h1>gan-bench report: {e(names)}</h1>",
             f"<p class=\"meta\">Generated {e(time.strftime('%Y-%m-%d %H:%M:%S'))} from MLflow store "
             f"<code>{e(mask_uri(tracking_uri))}</code>.</p><p class=\"note\">{e(METHODS)}</p>"]
    for sr in report.studies:
        s = sr.study
        parts.append(f'<section id="study-{e(safe_name(s.name))}"><h2>Study: {e(s.name)}</h2>')
        if s.question:
            parts.append(f'<p class="question">{e(s.question)}</p>')
        meta = [f"objective: {', '.join(f'{m} ({d})' for m, d in s.objectives)}",
                f"varied: {', '.join(s.space_keys) or 'nothing'}"]
        for k in ("sampler", "pruner"):
            if s.tag(k):
                meta.append(f"{k}: {s.tag(k)}")
        if s.parent is not None:
            meta.append(f"parent run: {s.parent.info.run_id}")
        parts.append(f'<p class="meta">{e(" · ".join(meta))}</p>')
        parts.append("<h3>Verdict</h3><ul class=\"verdict\">" + "".join(f"<li>{e(v)}</li>" for v in sr.verdict)
                     + "</ul>")
        parts.append("<h3>Table</h3>" + table_html(sr.table))
        parts.append(f'<p class="note">{e(sr.table.baseline_note)}</p>')
        if sr.table.reference_note:
            parts.append(f'<p class="note">{e(sr.table.reference_note)}</p>')
        for n in s.notes:
            parts.append(f'<p class="note">⚠ {e(n)}</p>')
        parts.append(_run_list_html(s))
        parts.append("<h3>Plots</h3>")
        for p in sr.plots:
            if p.png:
                b64 = base64.b64encode(p.png).decode()
                parts.append(f'<figure id="{e(safe_name(s.name))}-{e(p.name)}"><img alt="{e(p.title)}" '
                             f'src="data:image/png;base64,{b64}"><figcaption>{e(p.title)}'
                             + (f" — {e(p.note)}" if p.note else "") + "</figcaption></figure>")
            else:
                parts.append(f'<p class="note">{e(p.title)}: {e(p.note)}</p>')
        parts.append("</section>")
    if report.comparison is not None or report.comparison_note:
        parts.append('<section id="comparison"><h2>Comparison across studies</h2>')
        parts.append(f'<p class="note">{e(report.comparison_note)}</p>')
        if report.comparison is not None:
            table, lines = report.comparison
            parts.append("<ul class=\"verdict\">" + "".join(f"<li>{e(v)}</li>" for v in lines) + "</ul>")
            parts.append(table_html(table) + f'<p class="note">{e(table.baseline_note)}</p>')
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(report: Report) -> str:
    out = [f"# gan-bench report: {', '.join(s.study.name for s in report.studies)}", "", METHODS, ""]
    for sr in report.studies:
        s = sr.study
        out += [f"## Study: {s.name}", ""]
        if s.question:
            out += [f"> {s.question}", ""]
        out += [f"- {v}" for v in sr.verdict] + ["", table_markdown(sr.table), "", sr.table.baseline_note, ""]
        if sr.table.reference_note:
            out += [sr.table.reference_note, ""]
        out += [f"- ⚠ {n}" for n in s.notes]
        flagged = [(g, r) for g in s.groups for r in g.runs if not r.usable or r.diverged]
        if flagged:
            out += ["", "Runs not counted or marked:", ""]
            out += [f"- {g.label}, seed {r.seed}: {r.state()}{', diverged' if r.diverged else ''} ({r.run_id})"
                    + (f": {r.error[:200]}" if r.error else "") for g, r in flagged]
        out.append("")
        for p in sr.plots:
            if p.png:
                out.append(f"![{p.title}](plots/{safe_name(s.name)}/{p.name}.png)")
            else:
                out.append(f"- {p.title}: {p.note}")
        out.append("")
    if report.comparison is not None or report.comparison_note:
        out += ["## Comparison across studies", "", report.comparison_note, ""]
        if report.comparison is not None:
            table, lines = report.comparison
            out += [f"- {v}" for v in lines] + ["", table_markdown(table), "", table.baseline_note, ""]
    return "\n".join(out)


def write_report(report: Report, tracking_uri: str) -> dict[str, Path]:
    out = report.out_dir
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    tables = [(sr.study.name, sr.table) for sr in report.studies]
    if report.comparison is not None:
        tables.append(("comparison", report.comparison[0]))
    files["csv"] = out / "table.csv"
    files["csv"].write_text(table_csv(tables))
    files["md"] = out / "report.md"
    files["md"].write_text(render_markdown(report))
    for sr in report.studies:
        folder = out / "plots" / safe_name(sr.study.name)
        folder.mkdir(parents=True, exist_ok=True)
        for p in sr.plots:
            if p.png:
                path = folder / f"{p.name}.png"
                path.write_bytes(p.png)
                files[f"{sr.study.name}/{p.name}"] = path
    files["html"] = out / "report.html"
    files["html"].write_text(render_html(report, tracking_uri), encoding="utf-8")
    report.files = files
    return files


def log_report(client, report: Report) -> list[str]:
    """The report folder as artifacts `report/...` of each study's parent run."""
    logged = []
    for sr in report.studies:
        if sr.study.parent is not None:
            client.log_artifacts(sr.study.parent.info.run_id, str(report.out_dir), "report")
            logged.append(sr.study.parent.info.run_id)
    report.logged_to = logged
    return logged


# ---------------------------------------------------------------------------
# CLI


def cmd_report(args: argparse.Namespace) -> int:
    from bench.cli import InputError, tracking_uri_from_args
    from bench.tracking import TrackingError, client as make_client

    uri = tracking_uri_from_args(args)
    db = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
    if db is not None and not db.exists():
        raise InputError(f"--tracking-uri {uri!r}: no MLflow store at {db} (run a study first, or pass the store)")
    out = Path(args.out) if args.out else Path("reports") / safe_name("+".join(args.studies))
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r}: exists and is not a folder")
    try:
        c = make_client(uri)
        report = build_report(c, args.studies, out_dir=out, runs_filter=args.runs, baseline=args.baseline,
                              data_root=args.data_root, reference=not args.no_reference,
                              progress=lambda m: print(m, file=sys.stderr))
    except ReportError as e:
        raise InputError(str(e)) from None
    except (InputError, TrackingError):
        raise
    except Exception as e:
        from mlflow.exceptions import MlflowException

        if isinstance(e, MlflowException):
            raise TrackingError(f"tracking store {mask_uri(uri)!r}: {e.message}") from None
        raise
    files = write_report(report, uri)
    if not args.no_log:
        logged = log_report(c, report)
        for run_id in logged:
            print(f"logged to parent run {run_id} under report/")
    for sr in report.studies:
        print(f"\n== {sr.study.name} ==")
        if sr.study.question:
            print(sr.study.question)
        for line in sr.verdict:
            print(f"  - {line}")
    if report.comparison is not None:
        print("\n== comparison ==")
        for line in report.comparison[1]:
            print(f"  - {line}")
    elif report.comparison_note:
        print(f"\n{report.comparison_note}")
    print(f"\nreport: {files['html'].resolve()}\ntable: {files['csv']}  markdown: {files['md']}")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="comparison tables, plots and an HTML page for one or more studies",
        description="Tables with confidence intervals and p-values, curves, sample grids and a verdict per study, "
                    "from the runs in MLflow; written to --out (CSV, Markdown, PNG, one self-contained HTML) and "
                    "logged under report/ on each study's parent run.")
    p.add_argument("studies", nargs="+", metavar="STUDY", help="study name(s) (= MLflow experiment names)")
    p.add_argument("--runs", metavar="FILTER",
                   help="MLflow search filter for the trial runs, e.g. \"tags.seed != '2'\" or "
                        "\"params.`optim/epochs` = '5'\"")
    p.add_argument("--baseline", metavar="PARAMS",
                   help="the baseline configuration, e.g. techniques.real_target=1.0 (several: comma-separated; "
                        "default: the study's `baseline` tag, else the best configuration)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: reports/<study names>)")
    p.add_argument("--tracking-uri",
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)")
    p.add_argument("--data-root", help="data for the real-data reference row (default: the runs' data root)")
    p.add_argument("--no-reference", action="store_true", help="no real-data reference row")
    p.add_argument("--no-log", action="store_true", help="do not log the report to the parent runs")
    p.set_defaults(func=cmd_report)
