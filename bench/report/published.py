"""Published numbers beside ours: a report's values per configuration (the study file's `[published]`),
the measured ones, both as a fraction of their own evaluator's real-data value, and a verdict per
published comparison.

Each published row is compared with the study's baseline row: the report's difference (row minus
baseline, both published) against ours (mean over seeds, Welch's 95% CI and p-value from
`bench.report.stats.compare`). Verdicts:

- "same direction, significant": our difference has the published sign and p < 0.05;
- "same direction, not significant": the published sign, p >= 0.05 (or no test: fewer than 2 seeds);
- "reversed": the opposite sign, with "(significant)" when p < 0.05;
- "published tie": the report's two values are equal; ours is then significant or not;
- "no measured difference": our two means are equal.

Before any of these, `bench.report.judge` decides whether the runs' scale can test the claim at all
(nothing learned, or a collapse the runs were too short to reach): then the verdict is "not judgeable at
this scale", with the scale the report trained at and, from the runs' own timing, what it would cost here.

The same verdict is given at every epoch all the comparison's runs evaluated (`Cell.trajectory`), each
epoch judged as that many epochs of training; a claim is settled when `judge.settled` says so.

Fractions put two evaluators on one scale: IS / that evaluator's IS of real test images, accuracy-like
metrics (TARR, per-class accuracies) / that evaluator's real test accuracy. The report's own ceiling is
in its table's `reference`; ours is the report's reference row (our evaluator on real data).
"""

from __future__ import annotations

import csv
import html
import io
import math
import tomllib
from dataclasses import dataclass, field
from typing import Any

from bench.metrics import registry
from bench.report import judge, trajectory
from bench.report.load import Group, StudyData
from bench.report.stats import Diff, Stat, compare, summarize
from bench.report.table import Table, p_text
from bench.studies.spec import PublishedTable, short_label as row_label, with_report_epochs

OUR_REFERENCE_KEY = {"is": "is", "accuracy": "test_accuracy"}  # bench.evaluator.real_scores keys
NOT_MEASURED = "not measured"


def ceiling_kind(metric: str) -> str | None:
    """Which real-data value a metric is divided by: "is" or "accuracy" (others get no fraction)."""
    if metric.startswith("analysis/"):  # a retrained classifier's test accuracy (e.g. analysis/retrain/.../test_acc)
        return "accuracy" if metric.endswith(("test_acc", "/real_only", "/cas")) else None
    known = registry.lookup(metric)
    if known is None or not known.ceiling:
        return None
    return "is" if known.reference == "is" else "accuracy"


def metric_label(metric: str) -> str:
    if metric.startswith("analysis/"):  # analysis/retrain/mix/gen10/test_acc -> retrain mix/gen10
        return metric.removeprefix("analysis/").removesuffix("/test_acc").replace("/", " ", 1)
    return registry.label(metric)


def _fmt(metric: str, v: float | None) -> str:
    known = registry.lookup(metric)
    return known.text(v) if known else "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"


@dataclass
class Cell:
    """One metric of one published row: published vs measured, and the verdict against the baseline."""

    metric: str
    published: float
    measured: Stat
    published_frac: float | None = None
    measured_frac: float | None = None
    published_diff: float | None = None  # row minus the baseline row, both published
    diff: Diff | None = None  # ours: row minus baseline (Welch)
    verdict: str = ""
    trajectory: list[judge.Mark] = field(default_factory=list)  # the verdict at each epoch all its runs evaluated

    @property
    def judged(self) -> bool:
        """A direction verdict was given (not a baseline, not unmeasured, not beyond this scale)."""
        return self.diff is not None and not self.verdict.startswith((judge.NOT_JUDGEABLE, NOT_MEASURED))

    @property
    def beyond_scale(self) -> bool:
        return self.verdict.startswith(judge.NOT_JUDGEABLE)

    @property
    def settled(self) -> bool:
        return self.judged and judge.settled(self.trajectory)


@dataclass
class PubRow:
    label: str  # the report's name for the row
    params: dict[str, Any]
    group: Group | None  # our configuration (None: not run)
    is_baseline: bool
    cells: dict[str, Cell] = field(default_factory=dict)

    @property
    def ours(self) -> str:
        return self.group.label if self.group else "not run"


@dataclass
class Comparison:
    """One published table of one study, beside what the study measured."""

    study: str
    spec: PublishedTable
    rows: list[PubRow]
    baseline: str  # our baseline configuration's label, or why there is none
    our_reference: dict[str, float] | None
    notes: list[str] = field(default_factory=list)
    scale: judge.Scale | None = None   # what our runs trained (the baseline's)
    report_scale: judge.Scale | None = None  # what the report trained

    @property
    def title(self) -> str:
        return f"Report {self.spec.report}, {self.spec.table}"

    @property
    def metrics(self) -> list[str]:
        seen: list[str] = []
        for r in self.spec.rows:
            seen += [m for m in r.values if m not in seen]
        return seen


# ---------------------------------------------------------------------------
# Reading the published tables of a study run


def published_from_parent(client, study: StudyData) -> tuple[list[PublishedTable], str]:
    """The `[published]` tables of the study file logged on the parent run (study.toml), and a note if unreadable."""
    import tempfile

    from pydantic import TypeAdapter, ValidationError

    if study.parent is None:
        return [], ""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(study.parent.info.run_id, "study.toml", tmp)
            with open(path, "rb") as f:
                raw = tomllib.load(f)
    except Exception:  # no study.toml (a study made by hand): nothing published
        return [], ""
    tables = raw.get("published")
    if tables is None:
        return [], ""
    try:
        found = TypeAdapter(list[PublishedTable]).validate_python([tables] if isinstance(tables, dict) else tables)
        return with_report_epochs(found, raw.get("base", {})), ""
    except ValidationError as e:
        return [], f"the study file's [published] section does not load ({e.errors()[0]['msg']}); not compared"


# ---------------------------------------------------------------------------
# Comparing


def _matching(groups: list[Group], params: dict[str, Any]) -> list[Group]:
    from bench.report.baseline import matching

    return matching(groups, params)


def _untested(d: Diff) -> str:
    return f" (no test: {d.test.removeprefix('n/a (').removesuffix(')')})"


def _verdict(published_diff: float, d: Diff) -> str:
    """The judge's mark (direction and significance) of a finite difference, in words."""
    m = judge.mark(0, published_diff, d)
    untested = "" if d.tested else _untested(d)
    if published_diff == 0:
        return "published tie; ours " + ("significant" if m.significant else "not significant" if d.tested
                                         else "not tested")
    if m.direction == judge.TIE:
        return "no measured difference" + untested
    if m.direction == judge.SAME:
        return "same direction, " + ("significant" if m.significant else "not significant" + untested)
    return "reversed" + (" (significant)" if m.significant else " (not significant)" if d.tested else untested)


def full_images(group: Group) -> int:
    """The size of the training set the runs drew from (the report trained on all of it)."""
    from bench.data import DATASETS

    return DATASETS[group.params.get("data.dataset", "mnist")].train_size


def run_scale(group: Group | None) -> judge.Scale | None:
    """What a configuration's runs trained: their epochs over their training images (params as logged)."""
    if group is None:
        return None
    subset = group.params.get("data.train_subset")
    try:
        images = int(subset) if subset not in (None, "", "None") else full_images(group)
        return judge.Scale(int(group.params.get("optim.epochs", 1)), images)
    except (KeyError, ValueError):
        return None


def cost_at(groups: list[Group], ours: judge.Scale, report: judge.Scale) -> str:
    """What these configurations' runs would take at the report's scale here, from their own timing."""
    train_s = sum(r.final.get("time/train_s", math.nan) for g in groups for r in g.usable)
    eval_s = sum(r.final.get("time/eval_s", math.nan) for g in groups for r in g.usable)
    seconds = train_s / ours.fraction_of(report) + eval_s * report.epochs / ours.epochs
    runs = sum(len(g.usable) for g in groups)
    if not math.isfinite(seconds):
        return f"the report's scale ({report.text()})"
    return f"the report's scale ({report.text()}): about {_minutes(seconds)} for these {runs} runs on this machine"


def _labels_unlearned(row: Group, base: Group) -> str | None:
    """Why an analysis of these configurations' generated digits tests nothing yet (`judge.unlearned_labels`)."""
    for who, g in (("this row's", row), ("the baseline's", base)):
        why = judge.unlearned_labels(summarize(g.values(judge.LABELS)).mean)  # no value: nan, unlearned
        if why:
            return f"{who} {why.removeprefix('the ')}"
    return None


def analysis_cost(groups: list[Group], metric: str) -> str:
    """What one run's analysis took here (`analysis/<name>/time_s`, the mean over the runs analysed so far)."""
    name = metric.split("/")[1]
    took = [t for g in groups for t in g.values(f"analysis/{name}/time_s")]
    if not took:
        return (f"the {name} analysis' time per run is unmeasured here (`gan-bench analyze {name} --run RUN_ID` "
                "times one)")
    return f"the {name} analysis takes about {_minutes(sum(took) / len(took))} a run here"


def _minutes(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min" if seconds >= 90 \
        else f"{seconds:.0f} s"


def _why_not(cell: Cell, base_value: float, row: Stat, base: Stat, ours: judge.Scale | None,
             report: judge.Scale | None) -> str | None:
    """Why `ours` (a scale of training) cannot test the cell's claim, or None (`judge.untestable`)."""
    if ours is None or report is None:
        return None
    return judge.untestable(cell.metric, cell.published, base_value, row.mean, base.mean, ours, report)


def _judge(cell: Cell, base_value: float, row_stat: Stat, base_stat: Stat, groups: list[Group],
           ours: judge.Scale | None, report: judge.Scale | None) -> None:
    """Give the cell its verdict: beyond this scale (and what would test it), or same / reversed."""
    if not math.isfinite(cell.diff.diff):
        cell.verdict = f"{NOT_MEASURED} (no finished run logged it)"
        return
    why = _why_not(cell, base_value, row_stat, base_stat, ours, report)
    cell.verdict = (f"{judge.NOT_JUDGEABLE}: {why}; needs {cost_at(groups, ours, report)}" if why
                    else _verdict(cell.published_diff, cell.diff))


def _trajectory(cell: Cell, base_value: float, row: Group, base: Group, ours: judge.Scale | None,
                report: judge.Scale | None) -> list[judge.Mark]:
    """The cell's verdict at each epoch all its runs evaluated, each judged as that many epochs of training."""
    marks = []
    for epoch, a, b, d in trajectory.epoch_diffs(row, base, cell.metric):
        why = _why_not(cell, base_value, a, b, ours and judge.Scale(epoch, ours.images), report)
        text = "" if why else f"{_verdict(cell.published_diff, d)}; ours {_diff_text(cell.metric, d)}"
        marks.append(judge.mark(epoch, cell.published_diff, d, why, text))
    return marks


def compare_table(study: StudyData, table: Table, spec: PublishedTable) -> Comparison:
    """Match each published row to the study's configuration and compare it with the baseline row."""
    base_row = next((r for r in table.rows if r.is_baseline), None)
    base_group = base_row.group if base_row else None
    ours = run_scale(base_group)
    report = judge.Scale(spec.epochs or ours.epochs, full_images(base_group)) if ours else None
    our_ref = next((r.reference for r in table.rows if r.reference is not None), None)
    notes: list[str] = []
    rows: list[PubRow] = []
    for p in spec.rows:
        found = _matching(study.groups, p.params)
        if len(found) > 1:
            notes.append(f"{p.label or row_label(p.params)}: matches {len(found)} configurations; using {found[0].label}")
        group = found[0] if found else None
        rows.append(PubRow(p.label or row_label(p.params), dict(p.params), group,
                           group is not None and group is base_group))
    pub_base = next((r for r in rows if r.is_baseline), None)
    base_values = next((p.values for p, r in zip(spec.rows, rows) if r is pub_base), {})
    base_stats: dict[str, Stat] = {}
    for p, r in zip(spec.rows, rows):
        for metric, value in p.values.items():
            measured = summarize(r.group.values(metric)) if r.group else summarize([])
            kind = ceiling_kind(metric)
            cell = Cell(metric, value, measured)
            if kind == "is" and spec.reference.is_:
                cell.published_frac = value / spec.reference.is_
            elif kind == "accuracy" and spec.reference.accuracy:
                cell.published_frac = value / spec.reference.accuracy
            if kind and our_ref and our_ref.get(OUR_REFERENCE_KEY[kind]) and measured.n:
                cell.measured_frac = measured.mean / our_ref[OUR_REFERENCE_KEY[kind]]
            if r.is_baseline:
                cell.verdict = "baseline"
            elif r.group is None:
                cell.verdict = f"{NOT_MEASURED} (no finished run of this configuration: not in the study, or not trained yet)"
            elif base_group is None:
                cell.verdict = "no verdict: the study has no baseline configuration"
            elif metric not in base_values:
                cell.verdict = "no verdict: the report gives no value for the baseline"
            elif (metric.startswith("analysis/") and not (r.group.values(metric) and base_group.values(metric))
                  and (why := _labels_unlearned(r.group, base_group))):  # not analysed, and no use analysing yet
                cell.diff = Diff()  # a claim, not judgeable until the generators draw the digits asked for
                cell.published_diff = value - base_values[metric]
                cell.verdict = f"{judge.NOT_JUDGEABLE}: {why}; {analysis_cost(study.groups, metric)}"
            else:
                if metric not in base_stats:
                    base_stats[metric] = summarize(base_group.values(metric))
                cell.published_diff = value - base_values[metric]
                row_stat, base_stat, scale = measured, base_stats[metric], run_scale(r.group) or ours
                at = trajectory.aligned_final(r.group, base_group, metric)
                if at:  # the two stopped apart: judged at the last epoch both evaluated
                    row_stat, base_stat, scale = at[1], at[2], scale and judge.Scale(at[0], scale.images)
                cell.diff = compare(row_stat, base_stat)
                _judge(cell, base_values[metric], row_stat, base_stat, [r.group, base_group], scale, report)
                cell.trajectory = _trajectory(cell, base_values[metric], r.group, base_group, scale, report)
            r.cells[metric] = cell
    analyses = sorted({m.split("/")[1] for p in spec.rows for m in p.values if m.startswith("analysis/")})
    if analyses and not any(cell.measured.n for r in rows for cell in r.cells.values()):
        notes.append(f"not measured yet: no run carries the {', '.join(analyses)} analysis' metrics; run "
                     f"`gan-bench analyze {analyses[0]} --run RUN_ID` on each run of these configurations "
                     "(or `gan-bench reproduce REPORT --analyze`), then report again")
    if base_group is not None and pub_base is None:
        notes.append(f"our baseline ({base_group.label}) has no published row in {spec.table}: no verdicts")
    baseline = base_group.label if base_group else "none (no configuration has finished runs)"
    return Comparison(study.name, spec, rows, baseline, our_ref, notes, ours, report)


def compare_study(study: StudyData, table: Table, specs: list[PublishedTable]) -> list[Comparison]:
    return [compare_table(study, table, s) for s in specs]


# ---------------------------------------------------------------------------
# Text: verdict lines, Markdown, HTML, CSV


def _diff_text(metric: str, d: Diff) -> str:
    if not math.isfinite(d.diff):
        return "no value"
    sign = "+" if d.diff >= 0 else "-"
    text = f"{sign}{_fmt(metric, abs(d.diff))}"
    if d.tested:
        text += f" [95% CI {_fmt(metric, d.ci_low)}, {_fmt(metric, d.ci_high)}], {p_text(d)} (Welch, n={d.n[0]} vs {d.n[1]})"
    else:
        text += f" ({d.test})"
    return text


def _signed(metric: str, v: float) -> str:
    return ("+" if v >= 0 else "-") + _fmt(metric, abs(v))


def verdict_lines(c: Comparison) -> list[str]:
    """One sentence per published comparison (row x metric, baseline excluded)."""
    lines = []
    for r in c.rows:
        for cell in r.cells.values():
            if r.is_baseline or cell.diff is None:
                if not r.is_baseline:
                    lines.append(f"{c.title}: {r.label} ({metric_label(cell.metric)}): {cell.verdict}.")
                continue
            per_epoch = f" Per epoch: {trajectory.text_row(cell.trajectory)}." if cell.trajectory else ""
            lines.append(f"{c.title}: {r.label} vs baseline, {metric_label(cell.metric)}: published "
                         f"{_signed(cell.metric, cell.published_diff)}, ours {_diff_text(cell.metric, cell.diff)}: "
                         f"{cell.verdict}.{per_epoch}")
    return lines


def summary_counts(comparisons: list[Comparison]) -> dict[str, int]:
    """How many comparisons got each verdict kind (for the summary line)."""
    out: dict[str, int] = {}
    for c in comparisons:
        for r in c.rows:
            for cell in r.cells.values():
                if cell.diff is None:
                    continue
                kind = judge.NOT_JUDGEABLE if cell.beyond_scale else cell.verdict.split(" (no test")[0]
                out[kind] = out.get(kind, 0) + 1
    return out


def _cells(comparisons: list[Comparison]) -> list[Cell]:
    return [cell for c in comparisons for r in c.rows for cell in r.cells.values()]


def claim_counts(comparisons: list[Comparison]) -> tuple[int, int]:
    """(claims given a direction verdict, claims not judgeable at the runs' scale)."""
    cells = _cells(comparisons)
    return sum(cell.judged for cell in cells), sum(cell.beyond_scale for cell in cells)


def claims_line(comparisons: list[Comparison]) -> str:
    """The summary line: `claims: S settled, J judged, M not judgeable at this scale` (settled ones are judged)."""
    judged, beyond = claim_counts(comparisons)
    settled = sum(cell.settled for cell in _cells(comparisons))
    return f"claims: {settled} settled, {judged} judged, {beyond} {judge.NOT_JUDGEABLE}"


def scale_note(c: Comparison) -> str:
    """At what scale the verdicts were judged, against the report's."""
    if c.scale is None or c.report_scale is None:
        return ""
    judged, beyond = claim_counts([c])
    return (f"Judged at {c.scale.text()}, {c.scale.fraction_of(c.report_scale):.1%} of the report's "
            f"{c.report_scale.text()}: {judged} claim(s) judged, {beyond} not judgeable at this scale.")


def _measured_text(cell: Cell) -> str:
    s = cell.measured
    if not s.n:
        return "n/a"
    return _fmt(cell.metric, s.mean) + (f" ± {_fmt(cell.metric, s.std)}" if s.n >= 2 else "") + f" (n={s.n})"


def _pair(cell: Cell | None) -> str:
    """`published / measured` for one layout cell."""
    if cell is None:
        return ""
    return f"{_fmt(cell.metric, cell.published)} / {_fmt(cell.metric, cell.measured.mean) if cell.measured.n else 'n/a'}"


def _sorted_values(values: list) -> list:
    try:
        return sorted(values)
    except TypeError:
        return values


def layout(c: Comparison) -> list[tuple[str, list[str], list[list[str]]]]:
    """The table in the report's own layout: (caption, header, rows) per block; cells 'published / measured'.

    With `grid = [row key, column key]`: one grid per metric (e.g. Table 1: batch size x learning rate);
    otherwise the report's rows by its metrics."""
    if c.spec.grid:
        ky, kx = c.spec.grid
        ys = _sorted_values(list(dict.fromkeys(r.params[ky] for r in c.rows)))
        xs = _sorted_values(list(dict.fromkeys(r.params[kx] for r in c.rows)))
        blocks = []
        for metric in c.metrics:
            body = []
            for y in ys:
                line = [f"{ky.rsplit('.', 1)[-1]} {y}"]
                for x in xs:
                    r = next((r for r in c.rows if r.params[ky] == y and r.params[kx] == x), None)
                    line.append(_pair(r.cells.get(metric)) if r else "")
                body.append(line)
            blocks.append((f"{metric_label(metric)} (published / measured)",
                           [f"{ky.rsplit('.', 1)[-1]} \\ {kx.rsplit('.', 1)[-1]}", *[str(x) for x in xs]], body))
        return blocks
    head = ["setting", "ours", *[f"{metric_label(m)} (published / measured)" for m in c.metrics]]
    body = [[r.label + (" (baseline)" if r.is_baseline else ""), r.ours,
             *[_pair(r.cells.get(m)) for m in c.metrics]] for r in c.rows]
    return [("", head, body)]


DETAIL_HEAD = ["setting", "ours", "metric", "published", "measured (mean ± std)", "published / real",
               "measured / real", "Δ vs baseline: published", "Δ vs baseline: ours [95% CI], p", "verdict"]


def detail_rows(c: Comparison) -> list[list[str]]:
    out = []
    for r in c.rows:
        for cell in r.cells.values():
            frac = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
            out.append([r.label + (" (baseline)" if r.is_baseline else ""), r.ours, metric_label(cell.metric),
                        _fmt(cell.metric, cell.published), _measured_text(cell), frac(cell.published_frac),
                        frac(cell.measured_frac),
                        "" if cell.published_diff is None else _signed(cell.metric, cell.published_diff),
                        "" if cell.diff is None else _diff_text(cell.metric, cell.diff), cell.verdict])
    return out


def epoch_rows(c: Comparison) -> tuple[list[str], list[list]]:
    """(header, rows) of the verdicts per evaluated epoch: one row per compared setting, one column per metric."""
    head = ["setting", "ours", *[metric_label(m) for m in c.metrics]]
    body = [[r.label, r.ours, *[r.cells[m].trajectory if m in r.cells else "" for m in c.metrics]]
            for r in c.rows if any(cell.trajectory for cell in r.cells.values())]
    return head, body


def epoch_note(c: Comparison) -> str:
    return trajectory.settled_note([cell.trajectory for r in c.rows for cell in r.cells.values() if cell.judged])


def reference_note(c: Comparison) -> str:
    ref = c.spec.reference
    theirs = ", ".join(x for x in (f"test accuracy {ref.accuracy:g}" if ref.accuracy else "",
                                   f"real IS {ref.is_:g}" if ref.is_ else "") if x) or "not given"
    ours = ("not computed (no reference row)" if not c.our_reference else
            f"test accuracy {c.our_reference.get('test_accuracy', math.nan):.4f}, real IS "
            f"{c.our_reference.get('is', math.nan):.2f}")
    return (f"Real-data ceilings: report {c.spec.report}'s evaluator: {theirs}; ours: {ours}. "
            f"Verdicts compare each row with our baseline ({c.baseline}).")


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _md_table(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_md(x) for x in row) + " |" for row in body]
    return "\n".join(lines)


def markdown(c: Comparison, level: str = "###") -> list[str]:
    out = [f"{level} Published beside measured: {c.title} ({c.study})", "", reference_note(c), ""]
    out += [scale_note(c), ""] if scale_note(c) else []
    for caption, head, body in layout(c):
        if caption:
            out += [f"*{caption}*", ""]
        out += [_md_table(head, body), ""]
    out += [_md_table(DETAIL_HEAD, detail_rows(c)), ""]
    head, body = epoch_rows(c)
    if body:
        out += ["*Verdict at each evaluated epoch*", "", trajectory.md_table(head, body), "", epoch_note(c), ""]
    out += [f"- ⚠ {n}" for n in c.notes]
    return out + ([""] if c.notes else [])


def _html_table(head: list[str], body: list[list[str]], verdict_col: int | None = None) -> str:
    e = html.escape
    rows = []
    for line in body:
        cells = []
        for i, x in enumerate(line):
            cls = ""
            if i == verdict_col:
                cls = ' class="best"' if x.startswith("same direction, significant") else (
                    ' class="rev"' if x.startswith("reversed") else
                    ' class="na"' if x.startswith(judge.NOT_JUDGEABLE) else "")
            cells.append(f"<td{cls}>{e(x)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return ('<div class="scroll"><table><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def html_section(c: Comparison, level: str = "h3") -> str:
    e = html.escape
    parts = [f'<{level} class="published">Published beside measured: {e(c.title)} ({e(c.study)})</{level}>',
             f'<p class="note">{e(reference_note(c))}</p>']
    if scale_note(c):
        parts.append(f'<p class="note">{e(scale_note(c))}</p>')
    for caption, head, body in layout(c):
        if caption:
            parts.append(f'<p class="meta">{e(caption)}</p>')
        parts.append(_html_table(head, body))
    parts.append(_html_table(DETAIL_HEAD, detail_rows(c), verdict_col=len(DETAIL_HEAD) - 1))
    head, body = epoch_rows(c)
    if body:
        parts += ['<p class="meta">Verdict at each evaluated epoch</p>', trajectory.html_table(head, body),
                  f'<p class="note">{e(epoch_note(c))}</p>']
    parts += [f'<p class="note">⚠ {e(n)}</p>' for n in c.notes]
    return "\n".join(parts)


CSS = "td.rev{background:#fdecea} td.na{color:#666;background:#f3f3f3}" + trajectory.CSS


def to_csv(comparisons: list[Comparison]) -> str:
    """One line per published row and metric; numbers unrounded."""
    buf = io.StringIO()
    fields = ["study", "report", "table", "setting", "params", "config", "baseline", "metric", "published",
              "published_frac", "measured_mean", "measured_std", "measured_n", "measured_frac", "published_diff",
              "diff", "diff_ci95_low", "diff_ci95_high", "p", "test", "verdict", "per_epoch", "settled"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    num = lambda v: "" if v is None or not math.isfinite(v) else repr(float(v))  # noqa: E731
    for c in comparisons:
        for r in c.rows:
            for cell in r.cells.values():
                d = cell.diff
                w.writerow({"study": c.study, "report": c.spec.report, "table": c.spec.table, "setting": r.label,
                            "params": row_label(r.params), "config": r.ours, "baseline": r.is_baseline,
                            "metric": cell.metric, "published": num(cell.published),
                            "published_frac": num(cell.published_frac), "measured_mean": num(cell.measured.mean),
                            "measured_std": num(cell.measured.std), "measured_n": cell.measured.n,
                            "measured_frac": num(cell.measured_frac), "published_diff": num(cell.published_diff),
                            "diff": num(d.diff if d else None), "diff_ci95_low": num(d.ci_low if d else None),
                            "diff_ci95_high": num(d.ci_high if d else None), "p": num(d.p if d else None),
                            "test": d.test if d else "", "verdict": cell.verdict,
                            "per_epoch": trajectory.text_row(cell.trajectory), "settled": cell.settled})
    return buf.getvalue()
