"""Constants shared by every part of the report: confidence level, tag names, table columns."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.metrics import registry
from bench.metrics.registry import Direction


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
    direction: Direction
    fmt: str = "{:.3f}"

    def text(self, v: float | None) -> str:
        return "n/a" if v is None or not math.isfinite(v) else self.fmt.format(v)

    @classmethod
    def of(cls, m: registry.Metric) -> "Column":
        return cls(m.key, m.label, m.direction, m.fmt)


# Everything below comes from the metric registry (bench.metrics.registry).
COLUMNS = tuple(Column.of(m) for m in registry.columns())
# The columns every report has, even when no run logged them (shown as n/a).
CORE_METRICS = tuple(m.key for m in registry.columns() if m.core)
EVAL_PLOT_METRICS = tuple(m.key for m in registry.curves())
# Reference row: which real-data score stands in each column (bench.evaluator.real_scores).
REFERENCE_MAP = {k: registry.reference_key(k) for m in registry.METRICS if m.reference for k in m.keys()}
