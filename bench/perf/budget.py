"""Planning a run of studies to a time budget: the largest scale whose estimated time fits.

A scale is (epochs, training images, evaluation samples). The study files carry the report's scale: its
epochs on the whole training set, evaluated on the study's sample counts. Evaluation is held to at most
a third of the time (its sample counts shrink, down to a tenth, when one evaluation per run would take
more). Then a budget shrinks the epochs first and keeps the whole set, so every cell keeps the report's
relative number of steps (batch 32 still takes 4x the steps of batch 128); only when one epoch of the
whole set does not fit does it train on a class-balanced subset. Times come from
`bench.perf.estimate` (measured throughput on this machine), so the plan is an estimate and says so.
Measuring is part of the budget: it stops at a tenth of it (counted from the start of planning), the
configurations not timed by then are estimated from similar timed ones, and the time it took is left out
of the time to train.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

from bench.errors import InputError
from bench.perf.estimate import PER_IMAGE, SIMILAR, Estimate, fmt_duration

UNITS_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}
MIN_IMAGES = 1000  # the smallest subset a plan trains on (100 digits per class)
EVAL_SHARE = 1 / 3  # evaluation may take at most this share of the time left
MIN_EVAL_FRACTION = 0.1  # evaluation sample counts shrink at most to a tenth (1,000 of 10,000 images)
# What a run costs besides its iterations and evaluations (MLflow run, model summary, sample grids, curve
# plots, checkpoints), and the report at the end: measured on a 2-core CPU (docs/performance.md).
RUN_OVERHEAD_S = 4.0
REPORT_S = 30.0  # report 002 with 18-42 runs at 1 epoch: 15-28 s, idle and beside two busy processes
MEASURE_SHARE = 0.1  # measuring throughput may take at most this share of the budget
ROUND1_SHARE = 0.5  # a racing reproduction plans its first round (one epoch) into this share of the budget


def parse_duration(text: str, field: str = "--budget") -> float:
    """'20m', '2h', '1.5h', '90s' (or plain seconds) as seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", str(text).lower())
    if not m or m.group(2) not in ("", *UNITS_S) or float(m.group(1)) <= 0:
        raise InputError(f"{field}={text!r}: give a positive duration such as 20m, 2h or 90s")
    return float(m.group(1)) * UNITS_S.get(m.group(2), 1)


@dataclass(frozen=True)
class Scale:
    epochs: int
    train_images: int | None = None  # None: the whole training set
    eval_fraction: float = 1.0  # of the study's evaluation sample counts

    def text(self, full_images: int) -> str:
        images = f"{self.train_images:,} of {full_images:,}" if self.train_images else f"all {full_images:,}"
        evaluated = "" if self.eval_fraction == 1 else f"; evaluated on {self.eval_fraction:.0%} of the study's samples"
        return f"{self.epochs} epoch{'s' * (self.epochs != 1)} on {images} training images{evaluated}"


def epochs_at(row: Estimate, scale: Scale) -> int:
    """A study never trains longer than its report did."""
    return min(scale.epochs, row.epochs)


def run_seconds(row: Estimate, scale: Scale, full_images: int) -> float:
    """One run of this configuration at `scale`: its iterations plus its evaluations."""
    e = epochs_at(row, scale)
    images = scale.train_images or full_images
    iters = max(1, images // row.batch_size // row.d_steps)
    evals = len({*range(row.eval_every, e + 1, row.eval_every), e})
    return e * iters * row.iter_s + evals * row.eval_s * scale.eval_fraction


def seconds_at(rows: list[Estimate], scale: Scale, full_images: int) -> float:
    return REPORT_S + sum(r.runs * (run_seconds(r, scale, full_images) + RUN_OVERHEAD_S) for r in rows)


def report_fraction(row: Estimate, scale: Scale, full_images: int) -> float:
    """The scale's training images seen, as a fraction of the report's (its epochs on the whole set)."""
    return epochs_at(row, scale) * (scale.train_images or full_images) / (row.epochs * full_images)


@dataclass
class Plan:
    scale: Scale
    rows: list[Estimate]
    full_images: int
    budget_s: float
    spent_s: float  # already spent measuring
    partial: bool = False  # the smallest scale does not fit: what fits trains (baselines first), the rest waits

    @property
    def estimated_s(self) -> float:
        return seconds_at(self.rows, self.scale, self.full_images)

    @property
    def runs(self) -> int:
        return sum(r.runs for r in self.rows)

    def overrides(self, study_rows: list[Estimate]) -> dict:
        """The dotted overrides that train one study (its configurations' estimates) at this scale."""
        out: dict = {"optim.epochs": min(self.scale.epochs, max(r.epochs for r in study_rows))}
        if self.scale.train_images:
            out["data.train_subset"] = self.scale.train_images
        f = self.scale.eval_fraction
        if f < 1:
            sizes = study_rows[0].eval_sizes
            out["eval.n_samples"] = max(sizes["splits"], round(sizes["n_samples"] * f))
            out["eval.n_real"] = max(sizes["splits"], round(sizes["n_real"] * f))
            out["eval.n_per_class"] = max(2, round(sizes["n_per_class"] * f))
        return out

    def text(self) -> str:
        fractions = sorted({round(report_fraction(r, self.scale, self.full_images), 4) for r in self.rows})
        frac = " to ".join(f"{f:.1%}" for f in (fractions[0], fractions[-1]) if f is not None)
        if len(fractions) == 1:
            frac = f"{fractions[0]:.1%}"
        grouped = [r for r in self.rows if r.group > 1]
        return "\n".join([
            f"budget {fmt_duration(self.budget_s)}: {fmt_duration(self.spent_s)} spent measuring this machine's "
            f"throughput, {fmt_duration(self.budget_s - self.spent_s)} left to train"]
            + self.timed_text()
            + [f"plan: {self.scale.text(self.full_images)} (each study at most its report's epochs)",
               f"  {frac} of the reports' training (images seen), {self.runs} runs, "
               f"estimated {fmt_duration(self.estimated_s)} (from measured throughput)"]
            + ([f"  more than the budget even at this smallest scale: each study trains its baseline first, then as "
                f"many configurations as fit in its share of the time; the rest stay queued (not measured) for a "
                f"larger budget"] if self.partial else [])
            + ([f"  runs train in groups of up to {max(r.group for r in grouped)} "
                + ("(timed as groups)" if all(r.group_timed for r in grouped)
                   else "(groups not all timed: those charged one-by-one times)")] if grouped else []))

    def timed_text(self) -> list[str]:
        """How many configurations were timed, and what the rest were estimated from (none: all timed)."""
        left = {how: sum(r.estimated_from == how for r in self.rows) for how in (SIMILAR, PER_IMAGE)}
        if not any(left.values()):
            return []
        timed = len(self.rows) - sum(left.values())
        return [f"  {timed} of {len(self.rows)} configurations timed; the rest estimated from "
                + " and from ".join(f"{how} ({n})" for how, n in left.items() if n)]


def plan(rows: list[Estimate], full_images: int, budget_s: float, spent_s: float = 0.0, *,
         epochs: int | None = None, train_images: int | None = None) -> Plan:
    """The largest scale that fits: most epochs on the whole set, else one epoch (or the given epochs) on the
    largest subset. `epochs` / `train_images`: fixed by the user; only the other is planned."""
    left = budget_s - spent_s
    f = eval_fraction(rows, left)
    if epochs is not None and train_images is not None:
        return Plan(Scale(epochs, train_images, f), rows, full_images, budget_s, spent_s)
    most = max(r.epochs for r in rows)
    images = train_images if train_images is not None and train_images < full_images else None
    for e in ([epochs] if epochs is not None else range(most, 0, -1)):
        if seconds_at(rows, Scale(e, images, f), full_images) <= left:
            return Plan(Scale(e, images, f), rows, full_images, budget_s, spent_s)
    if train_images is not None:  # the user fixed the images: one epoch of them, even over the budget
        return Plan(Scale(epochs or 1, images, f), rows, full_images, budget_s, spent_s)
    e = epochs or 1
    lo, hi = MIN_IMAGES, full_images
    smallest = Scale(e, lo, f)
    if seconds_at(rows, smallest, full_images) > left:
        one = min(seconds_at([r], smallest, full_images) for r in rows)  # the cheapest configuration's runs
        if one > left:
            raise InputError(f"--budget={fmt_duration(budget_s)}: too small for these studies here; at the smallest "
                             f"scale ({smallest.text(full_images)}) not even one configuration's runs fit: they "
                             f"need about {fmt_duration(one + spent_s)}, all {sum(r.runs for r in rows)} runs about "
                             f"{fmt_duration(seconds_at(rows, smallest, full_images) + spent_s)}")
        return Plan(smallest, rows, full_images, budget_s, spent_s, partial=True)
    while hi - lo > 100:  # bisect the subset size to the nearest 100 images
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if seconds_at(rows, Scale(e, mid, f), full_images) <= left else (lo, mid)
    return Plan(Scale(e, lo // 100 * 100, f), rows, full_images, budget_s, spent_s)


def eval_fraction(rows: list[Estimate], left_s: float) -> float:
    """The share of the study's evaluation samples that keeps one evaluation per run within EVAL_SHARE of the
    time left (1: all of them), in steps of 5%, never under MIN_EVAL_FRACTION."""
    one_each = sum(r.runs * r.eval_s for r in rows)
    if one_each <= EVAL_SHARE * left_s:
        return 1.0
    return max(MIN_EVAL_FRACTION, int(EVAL_SHARE * left_s / one_each * 20) / 20)


def plan_scales(specs: list, budget: str, overrides: dict, plans_dir: Path, *, group: int = 1,
                epochs: int | None = None, train_images: int | None = None, share: float = 1.0,
                plan_only: bool = False, progress: bool = True) -> dict[str, dict]:
    """The overrides (epochs, subset, evaluation sizes) each study trains at to fit `share` of `budget` here
    (a racing reproduction's first round: half of it; all of it where not even the smallest scale fits half).

    Throughput is measured as `study estimate` measures it, for runs in groups of up to `group`, for at most
    MEASURE_SHARE of the budget (the rest of the configurations estimated from similar timed ones); the
    time measuring took is not planned for training. The plan is printed, and kept in `plans_dir` (beside
    the store) so that the same command, run again, resumes at the same scale instead of measuring again.
    `plan_only`: measure and print, keep nothing.
    """
    import hashlib
    import json

    from bench import experiment
    from bench.perf import estimate

    budget_s = parse_duration(budget)
    overrides = {k: v for k, v in overrides.items() if k not in ("optim.epochs", "data.train_subset")}
    key = json.dumps([sorted(s.name for s in specs), budget, epochs, train_images, overrides]
                     + ([group] if group > 1 else []) + ([share] if share != 1 else []), sort_keys=True, default=str)
    kept = Path(plans_dir) / f"{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"
    if kept.is_file() and not plan_only:
        scales = json.loads(kept.read_text())
        print(f"budget {budget}: resuming the plan of this command's first run ({kept}; delete it to plan "
              f"again): " + "; ".join(f"{name}: {s}" for name, s in scales.items()))
        return scales
    t0 = time.perf_counter()
    print(f"budget {budget}: measuring this machine's throughput for {len(specs)} stud"
          f"{'y' if len(specs) == 1 else 'ies'} (at most {fmt_duration(budget_s * MEASURE_SHARE)})", flush=True)
    ctx = experiment.prepare(estimate.configurations(specs[0], overrides)[0][1], progress=False)
    timings = estimate.Timings(deadline=t0 + budget_s * MEASURE_SHARE)
    rows = {s.name: estimate.estimate(s, overrides, ctx.train_full, ctx.test, timings=timings, progress=progress,
                                      group_size=group) for s in specs}
    every = [r for rs in rows.values() for r in rs]
    spent = time.perf_counter() - t0
    chosen = None
    if share < 1:
        with contextlib.suppress(InputError):
            chosen = plan(every, len(ctx.train_full), budget_s * share, spent, epochs=epochs, train_images=train_images)
        if chosen is None or chosen.partial:
            print(f"round 1: even its smallest scale is more than {share:.0%} of the budget; it may take all of it")
            chosen = None
    chosen = chosen or plan(every, len(ctx.train_full), budget_s, spent, epochs=epochs, train_images=train_images)
    print(chosen.text(), flush=True)
    scales = {name: chosen.overrides(rs) for name, rs in rows.items()}
    if not plan_only:
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(json.dumps(scales, indent=1))
    return scales
