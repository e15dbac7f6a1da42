"""Verdicts over training: a comparison judged at every epoch that all of its runs evaluated, shown as a
compact row (`e1 ≈ · e2 ✓ · e3 ✓*`) in Markdown and as small coloured cells in HTML.

The runs log every `eval/*` metric after each evaluated epoch (step = epoch), so a run trained for N
epochs also holds its verdicts at the earlier ones. What counts as judged and when a claim is settled
are rules of `bench.report.judge` (`mark`, `settled`); this module finds the epochs and draws the rows.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterator

from bench.report import judge
from bench.report.common import ALPHA
from bench.report.judge import Mark
from bench.report.load import Group
from bench.report.stats import Diff, Stat, compare, summarize

SYMBOLS = {judge.SAME: "✓", judge.REVERSED: "✗", judge.TIE: "≈", None: "–"}
KINDS = {judge.SAME: "same", judge.REVERSED: "rev", judge.TIE: "tie", None: "nj"}
LEGEND = (f"Per epoch: ✓ same direction as the claim (for a study: better than the baseline), ✗ reversed "
          f"(worse), ≈ tie, – {judge.NOT_JUDGEABLE}, * significant (p < {ALPHA:g}). Settled: the same "
          f"judged verdict, direction and significance, at the last {judge.SETTLE_SCALES} evaluated epochs.")


def epoch_diffs(row: Group, base: Group, metric: str) -> Iterator[tuple[int, Stat, Stat, Diff]]:
    """(epoch, row, baseline, row minus baseline) at each epoch every counted run of both evaluated
    (a finite difference: an epoch whose values are all non-finite is left out)."""
    if not metric.startswith("eval/"):  # other metrics are logged once, or per step: no epochs
        return
    for epoch in sorted(row.steps(metric) & base.steps(metric)):
        a, b = summarize(row.values_at(metric, epoch)), summarize(base.values_at(metric, epoch))
        d = compare(a, b)
        if math.isfinite(d.diff):
            yield epoch, a, b, d


def aligned_final(row: Group, base: Group, metric: str) -> tuple[int, Stat, Stat] | None:
    """(epoch, row, baseline) at the last epoch both evaluated, when their runs stopped at different epochs
    (a racing reproduction stops the configurations whose claims are settled); None when they end together,
    so the final values compare as they are."""
    if not metric.startswith("eval/"):
        return None
    row_steps, base_steps = row.steps(metric), base.steps(metric)
    common = row_steps & base_steps
    if not common or max(row_steps, default=0) == max(base_steps, default=0):
        return None
    epoch = max(common)
    return epoch, summarize(row.values_at(metric, epoch)), summarize(base.values_at(metric, epoch))


def symbol(m: Mark) -> str:
    return SYMBOLS[m.direction] + ("*" if m.significant else "")


def text_row(trajectory: list[Mark]) -> str:
    """`e1 ≈ · e2 ✓ · e3 ✓*`, then "settled" when the rule says so ("" without evaluated epochs)."""
    marks = " · ".join(f"e{m.epoch} {symbol(m)}" for m in trajectory)
    return marks + (" (settled)" if judge.settled(trajectory) else "")


def html_row(trajectory: list[Mark]) -> str:
    """One small cell per epoch, coloured by its verdict, its title the epoch and the verdict in words."""
    e = html.escape
    cells = "".join(f'<span class="mk {KINDS[m.direction]}{" sig" * m.significant}" '
                    f'title="{e(f"epoch {m.epoch}: {m.text}")}">{e(symbol(m))}</span>' for m in trajectory)
    tag = '<span class="settled">settled</span>' if judge.settled(trajectory) else ""
    return f'<span class="traj">{cells}</span>{tag}' if trajectory else ""


def settled_note(trajectories: list[list[Mark]]) -> str:
    n = sum(judge.settled(t) for t in trajectories)
    return f"{n} of {len(trajectories)} comparison(s) settled. {LEGEND}"


def md_table(head: list[str], body: list[list[str | list[Mark]]]) -> str:
    """A Markdown table whose trajectory cells are compact rows."""
    cell = lambda x: (x if isinstance(x, str) else text_row(x)).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(cell, head)) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(map(cell, row)) + " |" for row in body])


def html_table(head: list[str], body: list[list[str | list[Mark]]]) -> str:
    """An HTML table whose trajectory cells are rows of coloured cells."""
    cell = lambda x: html.escape(x) if isinstance(x, str) else html_row(x)  # noqa: E731
    rows = "".join("<tr>" + "".join(f"<td>{cell(x)}</td>" for x in row) + "</tr>" for row in body)
    return ('<div class="scroll"><table class="epochs"><thead><tr>'
            + "".join(f"<th>{html.escape(h)}</th>" for h in head) + f"</tr></thead><tbody>{rows}</tbody></table></div>")


CSS = """
.traj{display:inline-flex;gap:2px;vertical-align:middle}
.mk{display:inline-block;min-width:1.5em;height:1.35em;line-height:1.35em;text-align:center;font-size:.8em;
border-radius:2px;color:#1d2330;cursor:default}
.mk.same{background:#cde8d4}.mk.same.sig{background:#2e8b57;color:#fff}
.mk.rev{background:#f6d3cf}.mk.rev.sig{background:#c0392b;color:#fff}
.mk.tie{background:#dfe4ee}.mk.tie.sig{background:#6c7a96;color:#fff}
.mk.nj{background:repeating-linear-gradient(45deg,#f3f3f3,#f3f3f3 3px,#e2e2e2 3px,#e2e2e2 6px);color:#777}
.settled{margin-left:.5em;font-size:.75em;background:#1d2330;color:#fff;border-radius:3px;padding:0 .35em}
table.epochs td{vertical-align:middle}
"""
