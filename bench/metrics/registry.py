"""Every metric a run logs, in one table: its name, direction, format, meaning and what it needs.

Study validation (objective names, their default directions, conditional-only metrics), report
columns and plots, the benchmark and the training progress bar read this table; nothing else lists
metric names. A new metric is one `Metric(...)` line here plus the code that computes it (evaluator).
"""

from __future__ import annotations

import difflib
import enum
import math
import re
from dataclasses import dataclass

NUM_CLASSES = 10  # MNIST and Fashion-MNIST: per-class metrics expand to class_acc_0 .. class_acc_9
CLASS = "{c}"  # in a metric name: one logged metric per class (class_acc_{c} -> class_acc_0 .. class_acc_9)


class Direction(enum.StrEnum):
    """Which values are better. Optuna's spelling ("maximize"/"minimize") is derived, never stored."""

    MAX = "max"  # higher is better
    MIN = "min"  # lower is better
    HALF = "half"  # 0.5 is best (a discriminator that can no longer tell real from fake)
    NONE = "none"  # a diagnostic: neither better nor worse

    @property
    def optuna(self) -> str | None:
        """"maximize" / "minimize", or None when the metric has no better side."""
        return {"max": "maximize", "min": "minimize"}.get(self.value)

    @classmethod
    def from_optuna(cls, text: str) -> "Direction":
        """"maximize" -> MAX, "minimize" -> MIN."""
        try:
            return {"maximize": cls.MAX, "minimize": cls.MIN}[text]
        except KeyError:
            raise ValueError(f"direction {text!r}: expected 'maximize' or 'minimize'") from None

    @property
    def text(self) -> str:
        return {"max": "higher", "min": "lower", "half": "closest to 0.5", "none": "diagnostic"}[self.value]


class Needs(enum.Flag):
    """What a metric needs besides generated images."""

    NOTHING = 0
    CONDITIONAL = enum.auto()  # a class-conditional model (images generated per requested label)
    UNCONDITIONAL = enum.auto()  # an unconditional model (conditional ones log the per-class metrics instead)
    REAL_FEATURES = enum.auto()  # the evaluator's features of real test images
    DISCRIMINATOR = enum.auto()  # the trained discriminator

    @property
    def text(self) -> str:
        words = {Needs.CONDITIONAL: "conditional model", Needs.UNCONDITIONAL: "unconditional model",
                 Needs.REAL_FEATURES: "real features", Needs.DISCRIMINATOR: "discriminator"}
        return ", ".join(w for flag, w in words.items() if flag in self) or "—"


@dataclass(frozen=True)
class Metric:
    name: str  # as logged, without the group prefix; "{c}" stands for a class index
    label: str  # report column and plot title
    direction: Direction
    description: str
    digits: int = 3  # decimals shown
    needs: Needs = Needs.NOTHING
    group: str = "eval"  # "eval": every evaluated epoch; "time": once, at the end of a run
    column: bool = True  # a report column (when logged); per-class metrics never are (they are plotted)
    core: bool = False  # a report column even when no run logged it (shown as n/a)
    progress: bool = False  # shown on the training progress bar
    reference: str | None = None  # the bench.evaluator.real_scores key of real data's value
    ceiling: bool = False  # real data's value is the best a GAN can reach (published values become fractions)

    @property
    def key(self) -> str:
        """The logged name, e.g. "eval/fid"."""
        return f"{self.group}/{self.name}"

    @property
    def per_class(self) -> bool:
        return CLASS in self.name

    @property
    def per_epoch(self) -> bool:
        """Logged at every evaluation (so it can drive pruning), not only at the end."""
        return self.group == "eval"

    @property
    def fmt(self) -> str:
        return f"{{:.{self.digits}f}}"

    def text(self, v: float | None) -> str:
        return "n/a" if v is None or not math.isfinite(v) else self.fmt.format(v)

    def keys(self, num_classes: int = NUM_CLASSES) -> list[str]:
        """Every logged name: one, or one per class."""
        if not self.per_class:
            return [self.key]
        return [self.key.replace(CLASS, str(c)) for c in range(num_classes)]

    def for_class(self, c: int) -> str:
        """The logged name of class c's value (a per-class metric)."""
        return self.name.replace(CLASS, str(c))


_D, _CONDITIONAL, _UNCONDITIONAL = Needs.DISCRIMINATOR, Needs.CONDITIONAL, Needs.UNCONDITIONAL
_REAL = Needs.REAL_FEATURES
MAX, MIN, HALF, NONE = Direction.MAX, Direction.MIN, Direction.HALF, Direction.NONE

# In report-column order.
METRICS: tuple[Metric, ...] = (
    Metric("tarr", "TARR", MAX, "fraction of generated images the evaluator classifies as their requested label",
           needs=_CONDITIONAL, progress=True, reference="test_accuracy", ceiling=True),
    Metric("is", "IS", MAX, "Inception Score with the evaluator's class probabilities (10 shuffled splits)",
           digits=2, core=True, progress=True, reference="is", ceiling=True),
    Metric("is_std", "IS std", NONE, "standard deviation of IS over the splits", digits=2, column=False),
    Metric("class_acc_geomean", "per-class acc. (geo. mean)", MAX,
           "geometric mean over classes of the per-class TARR (one dead class gives 0)",
           needs=_CONDITIONAL, reference="class_acc_geomean", ceiling=True),
    Metric(f"class_acc_{CLASS}", "TARR of class {c}", MAX, "TARR of the images generated for one class",
           needs=_CONDITIONAL, reference=f"class_acc_{CLASS}", ceiling=True),
    Metric("fid", "FID", MIN, "Frechet distance between the evaluator's features of generated and real test images",
           digits=2, needs=_REAL, core=True, progress=True, reference="fid_train_test"),
    Metric("intra_fid", "intra-class FID", MIN,
           "mean over classes of the FID between generated and real test images of that class",
           digits=2, needs=_CONDITIONAL | _REAL, reference="intra_fid_train_test"),
    Metric(f"intra_fid_{CLASS}", "FID of class {c}", MIN, "FID between generated and real test images of one class",
           digits=2, needs=_CONDITIONAL | _REAL, reference=f"intra_fid_{CLASS}_train_test"),
    Metric("precision", "precision", MAX,
           "fraction of generated images inside the real images' k-NN balls (k=3; Kynkaanniemi et al. 2019)",
           needs=_REAL, reference="precision_train_test"),
    Metric("recall", "recall", MAX,
           "fraction of real images inside the generated images' k-NN balls (k=3; Kynkaanniemi et al. 2019)",
           needs=_REAL, reference="recall_train_test"),
    Metric("density", "density", MAX,
           "mean count of real k-NN balls (k=5) holding a generated image, over k; ~1 when the sets match "
           "(Naeem et al. 2020)", needs=_REAL, reference="density_train_test"),
    Metric("coverage", "coverage", MAX,
           "fraction of real images whose k-NN ball (k=5) holds a generated image (Naeem et al. 2020)",
           needs=_REAL, reference="coverage_train_test"),
    Metric("d_acc_real_test", "D acc. real (test)", HALF,
           "discriminator's accuracy on real test images (logit > 0 means real)", needs=_D, core=True),
    Metric("d_acc_fake_test", "D acc. fake (test)", HALF, "discriminator's accuracy on as many fresh generated images",
           needs=_D, core=True),
    Metric("classes_covered", "classes covered", MAX,
           "classes holding at least 1% of the generated images' predicted labels", digits=1, needs=_UNCONDITIONAL),
    Metric("class_kl", "class KL to uniform", MIN,
           "KL divergence of the predicted-label histogram from uniform (0: every class equally often)",
           needs=_UNCONDITIONAL),
    Metric("sample_std", "sample std", NONE,
           "per-pixel standard deviation over generated images, averaged (about 0: collapse to one image)",
           column=False),
    Metric("train_s", "train time (s)", MIN, "wall-clock seconds spent training (evaluation excluded)", digits=1,
           group="time", core=True),
    Metric("eval_s", "eval time (s)", MIN, "wall-clock seconds spent evaluating", digits=1, group="time",
           column=False),
)

BY_KEY: dict[str, Metric] = {m.key: m for m in METRICS}
_PATTERNS = [(re.compile(re.escape(m.key).replace(re.escape(CLASS), r"(\d+)")), m) for m in METRICS if m.per_class]


def lookup(key: str) -> Metric | None:
    """The metric logged as `key` ("eval/fid", "eval/class_acc_3"), or None."""
    if key in BY_KEY:
        return BY_KEY[key]
    return next((m for pattern, m in _PATTERNS if pattern.fullmatch(key)), None)


def get(key: str) -> Metric:
    """The metric logged as `key`; ValueError naming the closest known one otherwise."""
    metric = lookup(key)
    if metric is None:
        hint = difflib.get_close_matches(key, known_keys(), n=1)
        raise ValueError(f"unknown metric {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return metric


def known_keys(num_classes: int = NUM_CLASSES) -> list[str]:
    """Every logged metric name, per-class ones expanded."""
    return [k for m in METRICS for k in m.keys(num_classes)]


def label(key: str) -> str:
    """A metric's display label ("FID", "TARR of class 3"); the key itself when it is not in the table."""
    metric = lookup(key)
    if metric is None:
        return key
    match = re.search(r"(\d+)$", key) if metric.per_class else None
    return metric.label.replace(CLASS, match.group(1)) if match else metric.label


def reference_key(key: str) -> str | None:
    """The bench.evaluator.real_scores key holding real data's value of this metric, or None."""
    metric = lookup(key)
    if metric is None or metric.reference is None:
        return None
    match = re.search(r"(\d+)$", key) if metric.per_class else None
    return metric.reference.replace(CLASS, match.group(1)) if match else metric.reference


def columns() -> list[Metric]:
    """Metrics shown as report columns, in order (per-class ones are plotted, not tabled)."""
    return [m for m in METRICS if m.column and not m.per_class]


def curves() -> list[Metric]:
    """Per-epoch metrics drawn as curves (report and run plots)."""
    return [m for m in columns() if m.per_epoch]


def evaluated(conditional: bool, num_classes: int = NUM_CLASSES) -> list[str]:
    """Names (without eval/) that an evaluation of a conditional or unconditional model logs."""
    skip = Needs.UNCONDITIONAL if conditional else Needs.CONDITIONAL
    return [k.removeprefix(f"{m.group}/") for m in METRICS if m.per_epoch and skip not in m.needs
            for k in m.keys(num_classes)]


def progress_keys() -> list[str]:
    """Names (without eval/) shown on the training progress bar."""
    return [m.name for m in METRICS if m.progress]


def markdown_table() -> str:
    """docs/metrics.md's table (written by `python -m bench.docs`, checked by tests/test_docs.py)."""
    lines = ["| metric | better | meaning | needs |", "|---|---|---|---|"]
    for m in METRICS:
        shown = m.key.replace(CLASS, "0..9") if m.per_class else m.key
        lines.append(f"| `{shown}` | {m.direction.text} | {m.description} | {m.needs.text} |")
    return "\n".join(lines)
