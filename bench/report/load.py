"""Reading a study from MLflow: runs, their final values and histories, grouped by configuration."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from bench.errors import ReportError
from bench.tracking import TAG_CONFIG, TAG_CONFIG_ID, TAG_DIVERGED, TAG_ROLE
from bench.report.common import D_OUT_KEYS, IGNORED_KEYS, LOSS_KEYS, NOTE_TAG, PARENT_ID_TAG


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
    start_time: int = 0
    superseded: bool = False  # a later finished run of the same configuration and seed counts instead

    @property
    def diverged(self) -> bool:
        return self.tags.get(TAG_DIVERGED, "").lower() == "true"

    @property
    def usable(self) -> bool:
        return self.status == "FINISHED" and not self.superseded

    def state(self) -> str:
        if self.superseded:
            return "superseded (its seed trained again)"
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

    def values_at(self, metric: str, step: int) -> list[float]:
        """Each counted run's value of `metric` at `step` (an epoch, for `eval/*`)."""
        return [v for r in self.usable for s, v in r.history.get(metric, []) if s == step]

    def steps(self, metric: str) -> set[int]:
        """The steps at which every counted run logged `metric` (none without counted runs)."""
        runs = self.usable
        return set.intersection(*({s for s, _ in r.history.get(metric, [])} for r in runs)) if runs else set()

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


def dotted_key(key: str) -> str:
    """An MLflow param key (`optim/lr`) as the config key it stands for (`optim.lr`)."""
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
    return (metric.startswith(("eval/", "time/", "analysis/"))  # analysis/: for published values (Tables 4-7)
            or metric in {f"train/{k}" for k in LOSS_KEYS + D_OUT_KEYS})


def _parse_objectives(text: str) -> list[tuple[str, str]]:
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        metric, _, direction = part.partition(":")
        direction = direction.strip().lower() or "maximize"
        out.append((metric.strip(), "minimize" if direction.startswith("min") else "maximize"))
    return out


def json_tag(text: str, default):
    """A tag that holds JSON, decoded; `default` when it is empty or not JSON."""
    try:
        return json.loads(text) if text else default
    except json.JSONDecodeError:
        return default


def load_study_runs(client, name: str, runs_filter: str | None = None) -> StudyData:
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
        raise ReportError(f"runs filter {runs_filter!r}: not a valid MLflow filter ({e.message})",
                          field="runs") from None
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

    runs, logged = [], {}
    for r in children:
        tags = dict(r.data.tags)
        params = {dotted_key(k): v for k, v in r.data.params.items()}
        params.update({k[len("param."):]: v for k, v in tags.items() if k.startswith("param.")})
        if "extended_to_epochs" in tags:  # `study extend` trained it on; MLflow params cannot change
            params["optim.epochs"] = tags["extended_to_epochs"]
        runs.append(RunData(run_id=r.info.run_id, name=r.info.run_name or r.info.run_id, status=r.info.status,
                            seed=tags.get("seed", params.get("seed", "?")), tags=tags, params=params,
                            error=tags.get("error"), start_time=r.info.start_time or 0))
        logged[r.info.run_id] = [m for m in r.data.metrics if _wanted(m)]
    groups = _group(runs, name)  # marks superseded runs first: only the runs that count fetch their histories
    for rd in runs:
        if rd.usable:
            for metric in logged[rd.run_id]:
                rd.history[metric] = _history(client, rd.run_id, metric)
                if rd.history[metric]:
                    rd.final[metric] = rd.history[metric][-1][1]

    objectives = _parse_objectives(parent.data.tags.get("objective", "")) if parent else []
    space_keys = [dotted_key(k) for k in json_tag(parent.data.tags.get("space_keys", ""), [])] if parent else []
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
        # A retried trial (its worker died) trains its seeds again: one finished run per seed counts, the latest.
        latest: dict[str, RunData] = {}
        for r in sorted((r for r in g.runs if r.usable), key=lambda r: r.start_time):
            if r.seed in latest:
                latest[r.seed].superseded = True
            latest[r.seed] = r
        have = {r.seed for r in g.runs}
        g.missing_seeds = sorted(seeds - have, key=lambda s: (len(s), s))
        g.runs.sort(key=lambda r: (len(r.seed), r.seed, r.run_id))
    return list(groups.values())


def varied_keys(groups: list[Group]) -> list[str]:
    """Config keys whose value differs between configurations (seed and bookkeeping excluded)."""
    from bench.run_config import all_keys

    known = set(all_keys())
    keys: dict[str, set] = {}
    for g in [g for g in groups if g.usable] or groups:  # a failed or pruned stub may lack params
        for k, v in g.params.items():
            if k in known and k not in IGNORED_KEYS:
                keys.setdefault(k, set()).add(str(param_value(v)))
    return sorted(k for k, vals in keys.items() if len(vals) > 1)
