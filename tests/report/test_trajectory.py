"""Verdicts over training: the settle rule on hand-made trajectories, the mark a difference gets, and a
published claim judged at every epoch its hand-made runs evaluated."""

import math

from bench.report.judge import REVERSED, SAME, SETTLE_SCALES, TIE, Mark, mark, settled
from bench.report.load import Group, RunData, StudyData
from bench.report.published import claims_line, compare_table, epoch_rows, markdown, verdict_lines
from bench.report.stats import Diff
from bench.report.table import build_table, epoch_rows as study_epoch_rows
from bench.report.trajectory import html_row, text_row
from bench.studies.spec import PublishedTable


def marks(*verdicts: tuple[int | None, bool]) -> list[Mark]:
    return [Mark(e, d, s, f"verdict {e}") for e, (d, s) in enumerate(verdicts, start=1)]


def test_a_claim_with_the_same_judged_verdict_at_its_last_two_epochs_is_settled():
    t = marks((None, False), (TIE, False), (SAME, True), (SAME, True))
    assert SETTLE_SCALES == 2 and settled(t)
    assert text_row(t) == "e1 – · e2 ≈ · e3 ✓* · e4 ✓* (settled)"
    assert settled(marks((REVERSED, False), (REVERSED, False)))  # reversed, not significant, twice: settled too


def test_a_flipping_claim_is_open():
    flips = marks((SAME, True), (REVERSED, True), (SAME, True), (REVERSED, True))
    assert not settled(flips) and text_row(flips) == "e1 ✓* · e2 ✗* · e3 ✓* · e4 ✗*"
    # the same direction whose significance changes is not settled either
    assert not settled(marks((SAME, True), (SAME, True), (SAME, False)))
    assert not settled(marks((SAME, True), (SAME, True), (None, False)))  # judged, then not judgeable


def test_a_never_judgeable_claim_and_a_single_epoch_are_open():
    never = marks((None, False), (None, False), (None, False))
    assert not settled(never) and text_row(never) == "e1 – · e2 – · e3 –"
    assert not settled(marks((SAME, True))) and not settled([])
    assert text_row([]) == "" and html_row([]) == ""


def test_html_cells_carry_the_epoch_and_verdict_in_their_title():
    row = html_row(marks((None, False), (SAME, True), (SAME, True)))
    assert row.count('<span class="mk ') == 3 and 'class="mk same sig" title="epoch 3: verdict 3"' in row
    assert 'class="mk nj" title="epoch 1: verdict 1">–<' in row and '<span class="settled">settled</span>' in row


def test_the_mark_of_a_difference_against_the_claimed_one():
    sig, weak, untested = Diff(diff=0.3, p=0.01), Diff(diff=0.3, p=0.4), Diff(diff=0.3)
    assert (mark(1, 0.5, sig).direction, mark(1, 0.5, sig).significant) == (SAME, True)
    assert (mark(1, -0.5, sig).direction, mark(1, -0.5, weak).significant) == (REVERSED, False)
    assert mark(1, 0.5, untested).significant is False  # no test (fewer than 2 seeds): not significant
    assert mark(1, 0.0, sig).direction == TIE and mark(1, 0.0, sig).significant  # a published tie, ours significant
    assert mark(1, 0.5, Diff(diff=0.0, p=1.0)).direction == TIE
    nj = mark(2, 0.5, sig, "nothing learned")
    assert not nj.judged and nj.text.startswith("not judgeable at this scale: nothing learned")
    assert not mark(2, 0.5, Diff()).judged  # no value at this epoch


# ---------------------------------------------------------------------------
# A published claim over the epochs of hand-made runs

# TARR per seed (rows) and epoch (columns): the baseline has not learned at epoch 1 (at its chance floor)
BASE = [[0.10, 0.50, 0.80], [0.11, 0.52, 0.82], [0.09, 0.51, 0.81]]
ROWS = {
    "up": [[0.10, 0.60, 0.90], [0.10, 0.62, 0.91], [0.11, 0.61, 0.92]],  # higher from epoch 2 on, as published
    "flip": [[0.12, 0.60, 0.70], [0.10, 0.61, 0.71], [0.10, 0.62, 0.72]],  # higher at epoch 2, lower at 3
}


def group(label: str, lr: float, tarr: list[list[float]]) -> Group:
    params = {"optim.lr_g": str(lr), "optim.epochs": "3", "data.train_subset": "6000", "data.dataset": "mnist"}
    runs = [RunData(run_id=f"{label}-{i}", name=label, status="FINISHED", seed=str(i), tags={}, params=params,
                    history={"eval/tarr": list(enumerate(seq, start=1))}, final={"eval/tarr": seq[-1]})
            for i, seq in enumerate(tarr)]
    return Group(label=label, runs=runs)


def comparison():
    groups = [group("base", 2e-4, BASE), group("up", 1e-4, ROWS["up"]), group("flip", 5e-4, ROWS["flip"])]
    study = StudyData("lr", "0", None, groups, [("eval/tarr", "maximize")], ["optim.lr_g"])
    table = build_table("lr", groups, study.objectives, [groups[0]], "baseline")
    spec = PublishedTable.model_validate({"report": "009", "table": "Table 1", "epochs": 3, "rows": [
        {"params": {"optim.lr_g": 2e-4}, "eval/tarr": 0.90}, {"params": {"optim.lr_g": 1e-4}, "eval/tarr": 0.95},
        {"params": {"optim.lr_g": 5e-4}, "eval/tarr": 0.95}]})
    return compare_table(study, table, spec), table


def test_a_published_claim_is_judged_at_every_epoch_and_settles():
    c, _ = comparison()
    up, flip = (next(r for r in c.rows if r.ours == name).cells["eval/tarr"] for name in ("up", "flip"))
    assert [m.epoch for m in up.trajectory] == [1, 2, 3]
    assert text_row(up.trajectory) == "e1 – · e2 ✓* · e3 ✓* (settled)" and up.settled
    assert up.trajectory[0].text == "not judgeable at this scale: nothing learned (our baseline is at its chance floor)"
    assert up.trajectory[-1].text.startswith(up.verdict)  # the last epoch's verdict is the final one
    assert text_row(flip.trajectory) == "e1 – · e2 ✓* · e3 ✗*" and not flip.settled
    assert flip.verdict == "reversed (significant)"
    assert claims_line([c]) == "claims: 1 settled, 2 judged, 0 not judgeable at this scale"
    head, body = epoch_rows(c)
    assert head == ["setting", "ours", "TARR"] and [b[0] for b in body] == ["lr_g=0.0001", "lr_g=0.0005"]
    md = "\n".join(markdown(c))
    assert "| lr_g=0.0001 | up | e1 – · e2 ✓* · e3 ✓* (settled) |" in md
    assert "1 of 2 comparison(s) settled" in md
    assert verdict_lines(c)[-1].endswith("reversed (significant). Per epoch: e1 – · e2 ✓* · e3 ✗*.")


def test_a_study_verdict_is_judged_at_every_epoch():
    _, table = comparison()
    head, body = study_epoch_rows(table)
    assert head == ["configuration", "vs", "TARR"]
    rows = {b[0]: b[2] for b in body}
    assert set(rows) == {"up", "flip"}  # the baseline is not compared with itself
    assert text_row(rows["up"]) == "e1 – · e2 ✓* · e3 ✓* (settled)"  # ✓: better than the baseline
    assert text_row(rows["flip"]) == "e1 – · e2 ✓* · e3 ✗*"
    worse = rows["flip"][-1]
    assert worse.text.startswith("TARR -0.10") and worse.text.endswith("significant at 0.05, worse")
    assert math.isclose(table.row("flip").diffs["eval/tarr"].diff, -0.10, abs_tol=1e-9)


def test_a_row_that_stopped_early_is_judged_at_the_last_epoch_it_shares_with_the_baseline():
    """A racing reproduction stops the runs of settled claims: 'flip' trained 2 epochs, the baseline 3. Its final
    verdict is epoch 2's (higher, as published), not its epoch-2 values against the baseline's epoch 3."""
    stopped = [seq[:2] for seq in ROWS["flip"]]
    groups = [group("base", 2e-4, BASE), group("flip", 5e-4, stopped)]
    for r in groups[1].runs:
        r.params = {**r.params, "optim.epochs": "2"}
    study = StudyData("lr", "0", None, groups, [("eval/tarr", "maximize")], ["optim.lr_g"])
    table = build_table("lr", groups, study.objectives, [groups[0]], "baseline")
    assert math.isclose(table.row("flip").diffs["eval/tarr"].diff, 0.10, abs_tol=1e-9)  # the study table too
    spec = PublishedTable.model_validate({"report": "009", "table": "Table 1", "epochs": 3, "rows": [
        {"params": {"optim.lr_g": 2e-4}, "eval/tarr": 0.90}, {"params": {"optim.lr_g": 5e-4}, "eval/tarr": 0.95}]})
    cell = next(r for r in compare_table(study, table, spec).rows if r.ours == "flip").cells["eval/tarr"]
    assert math.isclose(cell.diff.diff, 0.10, abs_tol=1e-9)  # epoch 2: 0.61 vs 0.51 (epoch 3's 0.81 would reverse it)
    assert cell.verdict == "same direction, significant" and text_row(cell.trajectory) == "e1 – · e2 ✓*"
