"""Constants shared by every part of the report: confidence level, tag names, table columns, the error type."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.errors import ReportError  # noqa: F401  (re-exported: its historical home)


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
