"""Can this scale test a published claim? One rule, with its thresholds, applied before same / reversed.

A claim is judged only when the measured runs learned what it is about:

* a metric at its chance floor has not been learned at this scale: TARR, a per-class accuracy or their
  geometric mean at most 1/10 + `ACCURACY_MARGIN` (the geometric mean is 0 as soon as one class is never
  produced, and about 0.09 when every class is at chance), IS at most `IS_FLOOR` (one class told apart,
  or none). With our baseline at its floor there is nothing to
  compare with; with our row at its floor while the report's row learned, a run that has not started is
  compared with one that finished.
* a published collapse (the report's row at its floor while its baseline learned) is late behaviour:
  fewer epochs than the report trained cannot test it, unless ours has collapsed already.

Such comparisons get no direction verdict; the report says what scale (and, from the runs' own
timing, what time on this machine) would test them. A study's own comparison (a configuration against
its baseline, no published numbers) has only the first part of the rule: `unlearned_baseline`.

The runs evaluate after every epoch, so each comparison has a verdict at each epoch all its runs
evaluated: a trajectory of `Mark`s. A claim is **settled** when its last `SETTLE_SCALES` evaluated
epochs gave the same judged verdict, direction and significance (p < `ALPHA`) both; a claim whose
direction or significance still changes between epochs, or that is not judgeable at its last epochs,
is open.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.report.common import ALPHA
from bench.report.stats import Diff

ACCURACY_MARGIN = 0.05  # a 10-class accuracy this close to chance (0.1) has not been learned
IS_FLOOR = 1.5          # an Inception Score of a single class is 1; 1.5 tells fewer than two classes apart
NOT_JUDGEABLE = "not judgeable at this scale"
SETTLE_SCALES = 2       # a claim is settled when this many last evaluated epochs agree


def floor(metric: str) -> float | None:
    """The value at or below which `metric` says nothing was learned (None: no such floor)."""
    name = metric.removeprefix("eval/")
    per_class = name.startswith("class_acc_") and name.removeprefix("class_acc_").isdigit()
    if name in ("tarr", "class_acc_geomean") or per_class:
        return 0.1 + ACCURACY_MARGIN
    if name == "is":
        return IS_FLOOR
    return None


def at_floor(metric: str, value: float | None) -> bool:
    f = floor(metric)
    return f is not None and value is not None and math.isfinite(value) and value <= f + 1e-12


@dataclass(frozen=True)
class Scale:
    """How much training a set of runs had: epochs over training images (a subset or the whole set)."""

    epochs: int
    images: int

    def fraction_of(self, other: "Scale") -> float:
        return self.epochs * self.images / (other.epochs * other.images)

    def text(self) -> str:
        return f"{self.epochs} epoch{'s' * (self.epochs != 1)} on {self.images:,} images"


LABELS = "eval/tarr"  # whether a conditional generator draws the digit it is asked for


def unlearned_labels(tarr: float | None) -> str | None:
    """Why an analysis of a configuration's generated digits (retraining a classifier on them, ...) cannot test
    a claim yet: its generators have not learned labels (TARR at its chance floor, or not measured), or None."""
    if tarr is None or not math.isfinite(tarr) or at_floor(LABELS, tarr):
        return "the generators have not learned labels yet (TARR at its chance floor)"
    return None


def unlearned_baseline(metric: str, measured_base: float) -> str | None:
    """Why nothing can be compared with our baseline at this scale (it is at its chance floor), or None."""
    return "nothing learned (our baseline is at its chance floor)" if at_floor(metric, measured_base) else None


def untestable(metric: str, published_row: float, published_base: float, measured_row: float,
               measured_base: float, ours: Scale, report: Scale) -> str | None:
    """Why this scale cannot test the claim "row differs from baseline as published", or None if it can."""
    if floor(metric) is None:
        return None
    base_why = unlearned_baseline(metric, measured_base)
    if base_why:
        return base_why
    if at_floor(metric, published_row) and not at_floor(metric, published_base):  # a published collapse
        if at_floor(metric, measured_row):
            return None  # ours collapsed too: testable at any scale
        if ours.epochs < report.epochs:
            return f"a collapse over training: needs the report's {report.epochs} epochs (ours: {ours.epochs})"
        return None
    if at_floor(metric, measured_row) and not at_floor(metric, published_row):
        return "nothing learned (this row is at its chance floor; the report's row learned)"
    return None


# ---------------------------------------------------------------------------
# Verdicts over training: one mark per evaluated epoch, and when a claim is settled

SAME, REVERSED, TIE = 1, -1, 0  # a judged mark's direction against the claim


@dataclass(frozen=True)
class Mark:
    """A comparison's verdict at one evaluated epoch."""

    epoch: int
    direction: int | None  # SAME, REVERSED or TIE; None: not judgeable at this scale
    significant: bool = False
    text: str = ""  # the verdict in words

    @property
    def judged(self) -> bool:
        return self.direction is not None


def mark(epoch: int, claimed: float, d: Diff, why_not: str | None = None, text: str = "") -> Mark:
    """The mark of difference `d` against a claimed difference (its sign is the claim; 0: a claimed tie).

    `why_not`: why this epoch cannot test the claim (`untestable`), which makes the mark not judgeable."""
    if why_not or not math.isfinite(d.diff):
        return Mark(epoch, None, text=text or f"{NOT_JUDGEABLE}: {why_not or 'no value'}")
    significant = d.tested and d.p < ALPHA
    direction = TIE if claimed == 0 or d.diff == 0 else SAME if (d.diff > 0) == (claimed > 0) else REVERSED
    return Mark(epoch, direction, significant, text)


def settled(trajectory: list[Mark]) -> bool:
    """The same judged verdict (direction and significance) at the last `SETTLE_SCALES` evaluated epochs."""
    last = trajectory[-SETTLE_SCALES:]
    return (len(last) == SETTLE_SCALES and all(m.judged for m in last)
            and len({(m.direction, m.significant) for m in last}) == 1)
