"""The comparison table (one row per configuration, best values, differences to the baseline) and its verdict,
with each configuration's verdict on each objective at every epoch it and its baseline evaluated."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.metrics import registry
from bench.metrics.registry import Direction
from bench.report import judge
from bench.report.common import ALPHA, COLUMNS, CORE_METRICS, Column, REFERENCE_MAP
from bench.report.baseline import baseline_of
from bench.report.load import Group, varied_keys
from bench.report.stats import Diff, Stat, compare, summarize
from bench.report.trajectory import aligned_final, epoch_diffs


@dataclass
class Row:
    label: str
    group: Group | None
    stats: dict[str, Stat]
    diffs: dict[str, Diff] = field(default_factory=dict)
    best: set[str] = field(default_factory=set)
    is_baseline: bool = False
    base: Row | None = None  # the baseline row this row's differences are to
    reference: dict[str, float] | None = None  # the real-data row
    trajectories: dict[str, list[judge.Mark]] = field(default_factory=dict)  # objective -> verdict per epoch

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
            known = registry.lookup(metric)
            cols.append(Column(metric, registry.label(metric), Direction.from_optuna(direction),
                               known.fmt if known else "{:.4g}"))
    return cols


def _final_pair(r: Row, metric: str) -> tuple[Stat, Stat]:
    """A row's and its baseline's final values, at the last epoch both evaluated where they stopped apart."""
    at = aligned_final(r.group, r.base.group, metric)
    return (at[1], at[2]) if at else (r.stats[metric], r.base.stats[metric])


def build_table(title: str, groups: list[Group], objectives: list[tuple[str, str]],
                baselines: list[Group],
                baseline_note: str, reference: dict[str, float] | None = None, reference_note: str = "",
                label_fn=None) -> Table:
    """`baselines`: none, one, or one per stratum (see `baseline.resolve_baseline`)."""
    cols = columns_for(groups, objectives)
    strata = varied_keys(baselines) if len(baselines) > 1 else []
    rows = []
    for g in groups:
        stats = {c.metric: summarize(g.values(c.metric)) for c in cols}
        rows.append(Row(label=label_fn(g) if label_fn else g.label, group=g, stats=stats,
                        is_baseline=any(g is b for b in baselines)))
    by_group = {id(r.group): r for r in rows}
    for r in rows:
        base_group = baseline_of(r.group, baselines, strata)
        r.base = by_group.get(id(base_group)) if base_group is not None else None
        if r.base is not None and not r.is_baseline:
            r.diffs = {c.metric: compare(*_final_pair(r, c.metric)) for c in cols}
            r.trajectories = {c.metric: trajectory(r.group, r.base.group, c, direction)
                              for metric, direction in objectives for c in cols if c.metric == metric}
    for c in cols:
        best = best_row(c, rows)
        if best is not None:
            best.best.add(c.metric)
    if reference:
        ref_stats = {c.metric: summarize([reference[REFERENCE_MAP[c.metric]]] if c.metric in REFERENCE_MAP
                                         and REFERENCE_MAP[c.metric] in reference else []) for c in cols}
        rows.append(Row(label="real data (reference)", group=None, stats=ref_stats, reference=reference))
    return Table(title, cols, rows, baseline_note, reference_note)


def best_row(c: Column, rows: list[Row]) -> Row | None:
    """The row strictly better than every other one in column `c` *as displayed*, or None: values
    that print the same (IS 1.01 and 1.01) tie, and a tie for the top marks nothing."""
    if c.direction == Direction.NONE:
        return None
    shown = [(float(c.text(r.stats[c.metric].mean)), r) for r in rows if math.isfinite(r.stats[c.metric].mean)]
    if len(shown) < 2:
        return None
    badness = {Direction.MAX: lambda v: -v, Direction.MIN: lambda v: v,
               Direction.HALF: lambda v: abs(v - 0.5)}[c.direction]
    ranked = sorted(shown, key=lambda t: badness(t[0]))
    return ranked[0][1] if badness(ranked[0][0]) < badness(ranked[1][0]) else None


def precise(c: Column, v: float) -> str:
    """`c`'s format with at least two significant digits: a difference of 0.0042 is never "0.00"."""
    text = c.text(v)
    digits = text.lstrip("+-").replace(".", "").lstrip("0")
    if not math.isfinite(v) or v == 0 or len(digits) >= 2:
        return text
    return f"{v:.2g}"


def diff_text(c: Column, diff: float) -> str:
    """A signed difference, e.g. "+0.059", "-0.0042", "±0"."""
    if diff == 0:
        return "±0"
    return ("+" if diff > 0 else "-") + precise(c, abs(diff))


def p_text(d: Diff) -> str:
    """A comparison's p-value as text (`p<0.001`, `p=0.042`), or why it was not tested."""
    if not d.tested:
        return d.test
    return "p<0.001" if d.p < 0.001 else f"p={d.p:.3f}"


def _better(direction: str) -> float:
    """The claim a configuration is judged against: a difference to the baseline in the objective's direction."""
    return 1.0 if direction == "maximize" else -1.0


def judgement(d: Diff, direction: str) -> str:
    """Whether a tested difference is significant (the judge's mark), and if so better or worse."""
    m = judge.mark(0, _better(direction), d)
    return f"significant at {ALPHA:g}, {'better' if m.direction == judge.SAME else 'worse'}" if m.significant \
        else "not significant"


def trajectory(row: Group, base: Group, c: Column, direction: str) -> list[judge.Mark]:
    """The row's verdict against its baseline at each epoch both evaluated: better or worse, with significance.
    An epoch where the baseline has not learned (`judge.unlearned_baseline`) is not judgeable."""
    marks = []
    for epoch, _, b, d in epoch_diffs(row, base, c.metric):
        why = judge.unlearned_baseline(c.metric, b.mean)
        text = "" if why else (f"{c.label} {diff_text(c, d.diff)}, {p_text(d)}: "
                               + (judgement(d, direction) if d.tested else "no test"))
        marks.append(judge.mark(epoch, _better(direction), d, why, text))
    return marks


def epoch_rows(t: Table) -> tuple[list[str], list[list]]:
    """(header, rows) of the verdicts per evaluated epoch: one row per compared configuration, one column per
    objective (empty rows when no configuration has evaluated epochs in common with its baseline)."""
    metrics = list(dict.fromkeys(m for r in t.rows for m in r.trajectories))
    labels = [next(c.label for c in t.columns if c.metric == m) for m in metrics]
    body = [[r.label, r.base.label, *[r.trajectories.get(m, "") for m in metrics]]
            for r in t.rows if any(r.trajectories.values())]
    return ["configuration", "vs", *labels], body


def verdict(t: Table, objectives: list[tuple[str, str]], limit: int = 8) -> list[str]:
    """A few sentences: the best configuration, and each configuration vs the baseline on the objective."""
    lines = []
    rows = [r for r in t.rows if r.group is not None]
    has_base = any(r.is_baseline for r in rows)
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
        if not has_base:
            continue
        shown = 0
        for r in ranked + [r for r in rows if not r.stats[metric].n]:
            if r.is_baseline or shown >= limit:
                continue
            shown += 1
            d = r.diffs.get(metric)
            base_label = r.base.label if r.base is not None else "its baseline"
            if d is None or not math.isfinite(d.diff):
                lines.append(f"{r.label} vs {base_label}: {col.label} n/a ({r.group.status_text()}).")
                continue
            text = f"{r.label} vs {base_label}: {col.label} {diff_text(col, d.diff)}"
            if d.tested:
                text += (f" [95% CI {precise(col, d.ci_low)}, {precise(col, d.ci_high)}], {p_text(d)} (Welch's t-test, "
                         f"n={d.n[0]} vs {d.n[1]}): " + judgement(d, direction))
            else:
                text += f": no test, {d.test} (n={d.n[0]} vs {d.n[1]})"
            if r.group.flagged:
                text += f" [runs: {r.group.status_text()}]"
            lines.append(text + ".")
        if len([r for r in rows if not r.is_baseline]) > shown:
            lines.append(f"... and {len([r for r in rows if not r.is_baseline]) - shown} more configurations "
                         "(see the table).")
    excluded = [run for r in rows for run in r.group.runs if not run.usable]
    if excluded:
        kinds: dict[str, int] = {}
        for run in excluded:
            kinds[run.state()] = kinds.get(run.state(), 0) + 1
        lines.append("Not counted: " + ", ".join(f"{v} {k}" for k, v in kinds.items())
                     + " run(s); see the run list below.")
    return lines
