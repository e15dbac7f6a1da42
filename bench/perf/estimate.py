"""How long a study will take here: measured step and evaluation times, multiplied out.

For each configuration a study runs (grid cells, variants; non-grid samplers: the baseline, once
per trial of the budget) this times a few training iterations through the real loop
(`loops.harness_loop`) and one evaluation at a fraction of the study's sample counts, then
extrapolates: repeats x (epochs x iterations per epoch x seconds per iteration + evaluations x
seconds per evaluation). With grouping on (`group_size` > 1) the runs are packed into groups as the
study runner packs them, each group's iteration is timed as one batched step, and each run is charged its
share of it; evaluation stays counted per run. Evaluation cost is linear in the number of images
(generation and classifier passes), so a fifth of the images times five is a fair estimate. The figures are
estimates from measured throughput, and say so; a loaded machine inflates them.

Measuring can have a deadline (`Timings.deadline`, a budget's tenth): configurations are timed in an order
that covers each model family and batch size first, and those not timed by the deadline take the timing of
the most similar timed one (same model family, batch size and batches per iteration; else the slowest timed
one scaled per image), and say so (`Estimate.estimated_from`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

import torch

from bench.run_config import build_config, RunConfig
from bench.data import DeviceDataset
from bench.evaluator import evaluate_gan, load_or_train
from bench.perf.common import say, sync
from bench.step import build_step, grouping_refusal, iterations_per_epoch
from bench.perf.loops import group_loop, harness_loop
from bench.studies.spec import StudySpec

EVAL_FRACTION = 5  # evaluate 1/5 of the study's images and scale by 5


@dataclass
class Estimate:
    label: str
    runs: int  # MLflow runs of this configuration (trials x repeats)
    iter_s: float  # seconds per training iteration
    iters_per_epoch: int
    epochs: int
    eval_s: float  # seconds per evaluation, scaled to the full sample counts
    evals: int  # evaluations per run
    batch_size: int = 1
    d_steps: int = 1  # batches per iteration
    eval_every: int = 1
    eval_sizes: dict = field(default_factory=lambda: {"n_samples": 10_000, "n_per_class": 1_000, "n_real": 10_000,
                                                      "splits": 10})
    group: int = 1  # runs in the largest group this configuration trains in (1: one by one)
    model: str = ""  # model family, to match configurations not timed by the deadline
    estimated_from: str = ""  # "" when timed here; else what its timing was taken from (SIMILAR or PER_IMAGE)
    group_timed: bool = True  # False: its group was not timed by the deadline; charged one-by-one times

    @property
    def run_s(self) -> float:
        return self.epochs * self.iters_per_epoch * self.iter_s + self.evals * self.eval_s

    @property
    def total_s(self) -> float:
        return self.runs * self.run_s


SIMILAR = "the same model and batch size"
PER_IMAGE = "the slowest timed, per image"


@dataclass
class Timings:
    """Measured seconds by what they depend on (`_timing_key`), shared by the studies of one plan, and when
    measuring stops: after `deadline` (a time.perf_counter() value; None: never) nothing more is timed, except
    a first training step and a first evaluation, without which nothing can be estimated."""
    deadline: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    steps: list[Estimate] = field(default_factory=list)  # rows whose iteration was timed: matches for the rest
    evals: list[Estimate] = field(default_factory=list)  # rows whose evaluation was timed
    longest_s: float = 0.0  # the longest one timing took so far (between two calls of `may_time`)
    _asked: float | None = None

    def may_time(self, needed: bool = False) -> bool:
        """Whether to time one more thing now, that is, whether one more timing as long as the longest so far
        ends before the deadline; `needed`: nothing can be estimated without it."""
        now = time.perf_counter()
        if self._asked is not None:
            self.longest_s = max(self.longest_s, now - self._asked)
        self._asked = now
        return needed or self.deadline is None or now + self.longest_s < self.deadline


def configurations(spec: StudySpec, overrides: dict) -> list[tuple[str, RunConfig, int]]:
    """(label, config, MLflow runs) for every configuration the study will train."""
    if spec.sampler.type == "grid":
        cells = spec.grid()
        return [(spec.short_label(cell) or "base", build_config(spec.base, spec.config_overrides(cell, overrides)),
                 spec.repeats) for cell in cells]
    cell = {k: p.choices[0] if p.choices else p.low for k, p in spec.search_space.items() if not p.when}
    cell.update(spec.baseline or {})
    cfg = build_config(spec.base, spec.config_overrides(cell, overrides))
    return [(f"baseline x {spec.n_trials} trials", cfg, spec.n_trials * spec.repeats)]


def _eval_seconds(cfg: RunConfig, train_full: DeviceDataset, test: DeviceDataset) -> float:
    e = cfg.eval
    small = e.model_copy(update={
        "n_samples": max(e.splits, e.n_samples // EVAL_FRACTION), "n_real": max(e.splits, e.n_real // EVAL_FRACTION),
        "n_per_class": max(2, e.n_per_class // EVAL_FRACTION)})
    evaluator = load_or_train(cfg.data.dataset, train_full, test, cfg.eval, progress=False).to(test.device)
    torch.manual_seed(cfg.seed)
    gan = build_step(cfg, test).gan
    sync(test.device)
    t0 = time.perf_counter()
    evaluate_gan(gan, evaluator, test, small, cfg.model.latent_dim, seed=cfg.seed)
    sync(test.device)
    return (time.perf_counter() - t0) * EVAL_FRACTION


def _timing_key(cfg: RunConfig, *sections: str) -> str:
    """What a timing depends on: the config without the values that cost nothing (rates, betas, seed, epochs)."""
    tree = cfg.model_dump()
    tree.pop("seed")
    for k in ("epochs", "lr", "lr_g", "lr_d", "beta1_g", "beta2_g", "beta1_d", "beta2_d"):
        tree["optim"].pop(k)
    return json.dumps({k: tree[k] for k in sections or tree}, sort_keys=True, default=str)


def estimate(spec: StudySpec, overrides: dict, train_full: DeviceDataset, test: DeviceDataset,
             steps: int = 6, warmup: int = 2, progress: bool = True, timings: Timings | None = None,
             group_size: int = 1) -> list[Estimate]:
    """Seconds per iteration and per evaluation of each configuration the study trains, measured, or taken
    from similar measured ones after `timings.deadline`. `timings` (shared across studies) keeps the timings
    of configurations that differ only in rates, seeds or epochs. `group_size` > 1: runs train in groups of
    up to that many (`study run --group-size`); each run's seconds per iteration are then its share of its
    group's."""
    timings = Timings() if timings is None else timings
    out, trials, setups = [], [], []
    for label, cfg, runs in configurations(spec, overrides):
        data = train_full if cfg.data.train_subset is None else train_full.subset(cfg.data.train_subset)
        epochs = cfg.optim.epochs
        evals = len({*range(cfg.eval.every, epochs + 1, cfg.eval.every), epochs})
        out.append(Estimate(label, runs, math.nan, iterations_per_epoch(cfg, data), epochs, math.nan, evals,
                            cfg.optim.batch_size, cfg.techniques.d_steps, cfg.eval.every,
                            {k: getattr(cfg.eval, k) for k in ("n_samples", "n_per_class", "n_real", "splits")},
                            model=cfg.model.name))
        setups.append((cfg, data))
        seeds = [cfg.model_copy(update={"seed": cfg.seed + k}) for k in range(spec.repeats)]
        trials += [(len(out) - 1, seeds)] * (runs // spec.repeats)
    left = 0
    for i in _timing_order(out, timings):
        (cfg, data), row = setups[i], out[i]
        step_key, eval_key = _timing_key(cfg), _timing_key(cfg, "model", "eval")
        if step_key not in timings.seconds and timings.may_time(needed=not timings.steps):
            say(progress, f"  timing {spec.name}: {row.label}")
            timed = harness_loop(cfg, data, steps, warmup)
            timings.seconds[step_key] = timed["seconds"] / timed["steps"]
        if eval_key not in timings.seconds and timings.may_time(needed=not timings.evals):
            timings.seconds[eval_key] = _eval_seconds(cfg, train_full, test)
        row.iter_s = timings.seconds.get(step_key, math.nan)
        row.eval_s = timings.seconds.get(eval_key, math.nan)
        timings.steps += [row] if step_key in timings.seconds else []
        timings.evals += [row] if eval_key in timings.seconds else []
        left += step_key not in timings.seconds or eval_key not in timings.seconds
    if left:
        say(progress, f"  measuring time is up: {left} of {len(out)} configurations of {spec.name} estimated from "
                      "similar timed ones")
        fill_untimed(out, timings)
    if group_size > 1:
        _charge_groups(out, pack_groups(trials, group_size), train_full, timings, steps, warmup, progress,
                       spec.name)
    return out


def _kind(row: Estimate) -> tuple:
    """What makes two configurations' iterations comparable: model family, batch size, batches per iteration."""
    return row.model, row.batch_size, row.d_steps


def _timing_order(rows: list[Estimate], timings: Timings) -> list[int]:
    """Row indices, each kind not yet timed first, so that a deadline leaves a close match for the rest."""
    seen = {_kind(r) for r in timings.steps}
    first, later = [], []
    for i, r in enumerate(rows):
        (later if _kind(r) in seen else first).append(i)
        seen.add(_kind(r))
    return first + later


def _eval_images(row: Estimate) -> int:
    s = row.eval_sizes
    return s["n_samples"] + s["n_real"] + 10 * s["n_per_class"]


def fill_untimed(rows: list[Estimate], timings: Timings) -> None:
    """Rows not timed take the slowest timed one of their kind (model, batch size, batches per iteration) or,
    without one, the slowest timed seconds per image (per training image; per evaluated image of the same
    model, else of any): an estimate that errs long, so that a plan still fits its budget."""
    for r in rows:
        how = []
        if math.isnan(r.iter_s):
            same = [t.iter_s for t in timings.steps if _kind(t) == _kind(r)]
            images = r.batch_size * r.d_steps
            r.iter_s = max(same) if same else images * max(t.iter_s / (t.batch_size * t.d_steps)
                                                            for t in timings.steps)
            how.append(SIMILAR if same else PER_IMAGE)
        if math.isnan(r.eval_s):
            same = [t for t in timings.evals if t.model == r.model]
            r.eval_s = _eval_images(r) * max(t.eval_s / _eval_images(t) for t in same or timings.evals)
            how.append(SIMILAR if same else PER_IMAGE)
        if how:
            r.estimated_from = PER_IMAGE if PER_IMAGE in how else SIMILAR


def pack_groups(trials: list[tuple[int, list[RunConfig]]], size: int) -> list[list[tuple[int, list[RunConfig]]]]:
    """Trials (configuration index, its runs' configs) in queue order, packed as the study runner packs them
    (`workers.claim_groups`): a group takes the first waiting trial, then each later one whose runs fit it
    (`grouping_refusal`) while it has at most `size` runs. A trial whose own runs cannot group trains alone."""
    left, groups = list(trials), []
    while left:
        group = [left.pop(0)]
        runs = list(group[0][1])
        if len(runs) == 1 or grouping_refusal(runs) is None:
            for trial in list(left):
                if len(runs) + len(trial[1]) <= size and grouping_refusal(runs + trial[1]) is None:
                    group.append(trial)
                    runs += trial[1]
                    left.remove(trial)
        groups.append(group)
    return groups


def _charge_groups(rows: list[Estimate], groups: list, train_full: DeviceDataset, timings: Timings, steps: int,
                   warmup: int, progress: bool, name: str) -> None:
    """Each run's seconds per iteration become its share of its group's measured iteration (mean over the
    configuration's runs). Groups that cannot train as one (a refused technique), or that the deadline left
    untimed, keep the sequential times."""
    share: dict[int, list[float]] = {}
    for group in groups:
        cfgs = [c for _, cs in group for c in cs]
        if len(cfgs) == 1 or grouping_refusal(cfgs) is not None:
            continue
        key = json.dumps(sorted(_timing_key(c) for c in cfgs))
        if key not in timings.seconds and timings.may_time():
            say(progress, f"  timing {name}: a group of {len(cfgs)} runs ({rows[group[0][0]].label}, ...)")
            subset = cfgs[0].data.train_subset  # the same for the whole group (its data sections are equal)
            timed = group_loop(cfgs, train_full if subset is None else train_full.subset(subset), steps, warmup)
            timings.seconds[key] = timed["seconds"] / timed["steps"]
        for i, cs in group:
            rows[i].group = max(rows[i].group, len(cfgs))
            if key in timings.seconds:
                share.setdefault(i, []).extend([timings.seconds[key] / len(cfgs)] * len(cs))
            else:
                rows[i].group_timed = False
    for i, shares in share.items():
        r = rows[i]
        r.iter_s = (sum(shares) + r.iter_s * (r.runs - len(shares))) / r.runs


def fmt_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        minutes = seconds / 60
        return f"{minutes:.0f} min" if abs(minutes - round(minutes)) < 0.05 else f"{minutes:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_table(spec: StudySpec, rows: list[Estimate], device: torch.device) -> str:
    total = sum(r.total_s for r in rows)
    lines = [f"{spec.name}: estimated {fmt_duration(total)} on {device} "
             f"({sum(r.runs for r in rows)} runs; estimate from measured throughput)",
             f"  {'configuration':<34} {'runs':>4} {'group':>5} {'s/iter':>7} {'iters/ep':>8} {'epochs':>6} "
             f"{'eval s':>7} {'per run':>8}"]
    for r in rows:
        lines.append(f"  {r.label[:34]:<34} {r.runs:>4} {r.group:>5} {r.iter_s:>7.3f} {r.iters_per_epoch:>8} "
                     f"{r.epochs:>6} {r.eval_s:>7.1f} {fmt_duration(r.run_s):>8}")
    return "\n".join(lines)


def total_seconds(rows: list[Estimate]) -> float:
    return math.fsum(r.total_s for r in rows)


def estimate_studies(specs: list, overrides: dict, steps: int, group_size: int = 1):
    """(spec, its estimates, the device) for each study, the data loaded once per device and dataset."""
    from bench import experiment

    contexts: dict = {}
    for spec in specs:
        cfg = configurations(spec, overrides)[0][1]
        key = (cfg.device, cfg.data.dataset, cfg.data.root)
        if key not in contexts:
            contexts[key] = experiment.prepare(cfg, progress=False)
        ctx = contexts[key]
        yield spec, estimate(spec, overrides, ctx.train_full, ctx.test, steps=steps, group_size=group_size), ctx.device
