"""Writing the report: CSV, Markdown, PNG and one self-contained HTML page; logging it to MLflow."""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import sys
import time
from pathlib import Path

from bench.errors import ReportError
from bench.tracking import TAG_CONFIG, TAG_TRIAL, mask_uri, safe_name
from bench.report.common import ALPHA, COLUMNS, Column
from bench.report.load import StudyData
from bench.report.table import Row, Table, diff_text, epoch_rows, p_text, precise
from bench.report.build import Report, build_report
from bench.report import published, trajectory


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
        diff = f"Δ {diff_text(c, d.diff)}"
        if d.tested:
            diff += f" [{precise(c, d.ci_low)}, {precise(c, d.ci_high)}], {p_text(d)} (Welch)"
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
.summary{font-weight:600}
""" + published.CSS


def _run_list_html(study: StudyData, tracking_uri: str) -> str:
    """Every run of the study, each linked to its page in the MLflow UI, each configuration to its seeds'
    curves in the UI's chart view."""
    from bench.ui import run_url, runs_chart_url

    e = html.escape
    rows = []
    for g in study.groups:
        label = g.runs[0].tags.get(TAG_CONFIG) if g.runs else None
        config = (f'<a href="{e(runs_chart_url(tracking_uri, study.experiment_id, _config_filter(label)))}">'
                  f"{e(g.label)}</a>" if label is not None else e(g.label))
        for r in g.runs:
            flag = "" if r.usable and not r.diverged else ' class="flag"'
            state = r.state() + (", diverged" if r.diverged else "")
            err = f"<br><small>{e(r.error[:300])}</small>" if r.error else ""
            link = f'<a href="{e(run_url(tracking_uri, study.experiment_id, r.run_id))}"><code>{e(r.run_id)}</code></a>'
            rows.append(f"<tr{flag}><td>{config}</td><td>{e(r.seed)}</td><td>{e(r.tags.get(TAG_TRIAL, ''))}"
                        f"</td><td>{e(state)}{err}</td><td>{link}</td><td>{e(r.name)}</td></tr>")
        if g.missing_seeds:
            rows.append(f'<tr class="flag"><td>{e(g.label)}</td><td>{e(", ".join(g.missing_seeds))}</td><td></td>'
                        "<td>missing (no run)</td><td></td><td></td></tr>")
    return ("<details><summary>Runs ({} counted of {})</summary><div class=\"scroll\"><table><thead><tr>"
            "<th>configuration</th><th>seed</th><th>trial</th><th>state</th><th>run id</th><th>run name</th></tr></thead><tbody>{}"
            "</tbody></table></div></details>").format(sum(r.usable for r in study.runs), len(study.runs),
                                                      "".join(rows))


def _config_filter(label: str) -> str:
    """An MLflow search filter for one configuration's runs (its `config_label` tag, quotes escaped)."""
    return f"tags.{TAG_CONFIG} = '{label.replace(chr(39), chr(92) + chr(39))}'"


METHODS = ("Each run's value is its metric at the last logged step (the final epoch); seeds of a configuration are "
           "pooled. Cells: mean ± sample std (ddof=1) [95% confidence interval, Student t with n−1 degrees of "
           "freedom]. Δ: difference to the baseline row with the 95% CI and p-value of Welch's t-test "
           "(scipy.stats.ttest_ind, equal_var=False), computed only when both sides have at least 2 seeds, otherwise "
           "n/a (no test). ★ marks the best value per column (highest for TARR, IS, per-class accuracy, classes "
           "covered; lowest for FID, class KL, train time; closest to 0.5 for D's test accuracies, where D can no "
           "longer tell real from fake). Only FINISHED runs count, one per seed (the latest, where a retried trial "
           "trained a seed again); failed, pruned, unfinished and superseded runs and missing seeds are listed and "
           "marked ⚠; diverged runs count (their last finite evaluation) and are marked.")


def _comparisons(report: Report) -> list[published.Comparison]:
    return [c for sr in report.studies for c in sr.published]


def _epochs_note(body: list[list]) -> str:
    return trajectory.settled_note([x for row in body for x in row[2:] if x])  # columns 2+: the trajectories


def epochs_html(t: Table) -> str:
    """The table's verdicts per evaluated epoch as coloured cells ("" when there are none)."""
    head, body = epoch_rows(t)
    if not body:
        return ""
    return ("<h3>Verdict at each evaluated epoch</h3>" + trajectory.html_table(head, body)
            + f'<p class="note">{html.escape(_epochs_note(body))}</p>')


def epochs_markdown(t: Table) -> list[str]:
    head, body = epoch_rows(t)
    if not body:
        return []
    return ["### Verdict at each evaluated epoch", "", trajectory.md_table(head, body), "", _epochs_note(body), ""]


def render_html(report: Report, tracking_uri: str) -> str:
    e = html.escape
    names = ", ".join(s.study.name for s in report.studies)
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
             f"<title>gan-bench report: {e(names)}</title><style>{CSS}</style></head><body>",
             f"<h1>gan-bench report: {e(names)}</h1>",
             f"<p class=\"meta\">Generated {e(time.strftime('%Y-%m-%d %H:%M:%S'))} from MLflow store "
             f"<code>{e(mask_uri(tracking_uri))}</code>.</p><p class=\"note\">{e(METHODS)}</p>"]
    if _comparisons(report):
        parts.append(f'<p class="summary">{e(published.claims_line(_comparisons(report)))}</p>')
    if report.reproduces:
        parts.append(f'<section id="reproduction"><h2>Report {e(report.reproduces)}: published beside measured</h2>')
        parts += [published.html_section(c) for sr in report.studies for c in sr.published]
        parts.append("</section>")
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
        parts.append(epochs_html(sr.table))
        parts.append("<h3>Table</h3>" + table_html(sr.table))
        parts.append(f'<p class="note">{e(sr.table.baseline_note)}</p>')
        if sr.table.reference_note:
            parts.append(f'<p class="note">{e(sr.table.reference_note)}</p>')
        if not report.reproduces:  # a reproduction shows them once, at the top
            parts += [published.html_section(c) for c in sr.published]
        for n in s.notes:
            parts.append(f'<p class="note">⚠ {e(n)}</p>')
        parts.append(_run_list_html(s, tracking_uri))
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
            parts.append(epochs_html(table))
            parts.append(table_html(table) + f'<p class="note">{e(table.baseline_note)}</p>')
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(report: Report) -> str:
    out = [f"# gan-bench report: {', '.join(s.study.name for s in report.studies)}", "", METHODS, ""]
    if _comparisons(report):
        out += [f"**{published.claims_line(_comparisons(report))}**", ""]
    if report.reproduces:
        out += [f"## Report {report.reproduces}: published beside measured", ""]
        for sr in report.studies:
            for c in sr.published:
                out += published.markdown(c)
    for sr in report.studies:
        s = sr.study
        out += [f"## Study: {s.name}", ""]
        if s.question:
            out += [f"> {s.question}", ""]
        out += [f"- {v}" for v in sr.verdict] + [""] + epochs_markdown(sr.table)
        out += [table_markdown(sr.table), "", sr.table.baseline_note, ""]
        if sr.table.reference_note:
            out += [sr.table.reference_note, ""]
        if not report.reproduces:
            for c in sr.published:
                out += published.markdown(c)
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
            out += [f"- {v}" for v in lines] + [""] + epochs_markdown(table)
            out += [table_markdown(table), "", table.baseline_note, ""]
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
    comparisons = _comparisons(report)
    if comparisons:
        files["published_csv"] = out / "published.csv"
        files["published_csv"].write_text(published.to_csv(comparisons))
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


def make_report(studies: list[str], *, tracking_uri: str, out_dir: str | Path | None = None,
                runs_filter: str | None = None, baseline: str | None = None, data_root: str | None = None,
                reference: bool = True, log: bool = True, published: dict | None = None,
                reproduces: str | None = None) -> Report:
    """Tables, plots and one HTML page for `studies` from their MLflow runs, written to `out_dir`
    (default reports/<names>; `Report.files` by kind: html, csv, md, published_csv) and, when `log`, logged
    under report/ on each study's parent run (`Report.logged_to`; not on a read-only store). Where a damaged
    store cannot read some studies, the others are reported (`Report.left_out` says which and why).
    `published` and `reproduces`: a reproduction's tables (study name -> tables) and its report."""
    from bench.errors import InputError, TrackingError
    from bench.tracking import client, read_only, store_fault

    uri = tracking_uri
    db = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
    if db is not None and not db.exists():
        raise InputError(f"tracking_uri={uri!r}: no MLflow store at {db} (run a study first, or give the store)",
                         field="tracking_uri")
    out = Path(out_dir) if out_dir else Path("reports") / safe_name("+".join(studies))
    if out.exists() and not out.is_dir():
        raise InputError(f"out={str(out)!r}: exists and is not a folder", field="out")
    c = client(uri)

    def build(names: list[str]) -> Report:
        return build_report(c, names, out_dir=out, runs_filter=runs_filter, baseline=baseline, data_root=data_root,
                            reference=reference, published=published, progress=lambda m: print(m, file=sys.stderr))

    try:
        built = _readable(c, studies, build, runs_filter, uri)
    except ReportError as e:
        raise InputError(str(e), field=e.field) from None
    except Exception as e:
        from mlflow.exceptions import MlflowException

        if isinstance(e, MlflowException) and store_fault(e, uri) is None:
            raise TrackingError(f"tracking store {mask_uri(uri)!r}: {e.message}") from None
        raise
    if log and read_only(uri):
        print(f"not logged to the parent runs: the MLflow store {uri[len('sqlite:///'):]} is read-only",
              file=sys.stderr)
        log = False
    built.reproduces = reproduces
    built.files = write_report(built, uri)
    built.logged_to = log_report(c, built) if log else []
    return built


def _readable(c, studies: list[str], build, runs_filter: str | None, uri: str) -> Report:
    """The report of every study the store can read. Where it fails on some studies' runs (a damaged part of
    the store), the others are reported alone, each study left out named in `Report.left_out`."""
    from bench.report.load import load_study_runs
    from bench.tracking import store_fault

    try:
        return build(studies)
    except Exception as e:
        if len(studies) == 1 or store_fault(e, uri) is None:
            raise
    readable, left_out = [], []
    for name in studies:
        try:
            load_study_runs(c, name, runs_filter)
            readable.append(name)
        except Exception as e:
            fault = store_fault(e, uri)
            if fault is None or len(left_out) == len(studies) - 1:  # none readable: that is the error
                raise
            left_out.append(f"study {name!r} is not in this report: {fault}")
    built = build(readable)
    built.left_out = left_out
    return built
