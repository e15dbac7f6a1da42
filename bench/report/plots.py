"""Plots: matplotlib `Figure` objects (no pyplot state), and the set drawn for each study."""

from __future__ import annotations

import json
import math
import re
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure
import numpy as np

from bench.tracking import figure_to_png, missing_artifacts
from bench.report.common import COLUMNS, EVAL_PLOT_METRICS
from bench.report.load import Group, StudyData, param_value
from bench.report.stats import summarize


def _colors(n: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _mean_band(series: list[list[tuple[int, float]]]):
    """Steps, mean and std over runs (a step counts the runs that logged it)."""
    by_step: dict[int, list[float]] = {}
    for s in series:
        for step, v in s:
            if math.isfinite(v):
                by_step.setdefault(step, []).append(v)
    steps = sorted(by_step)
    mean = np.array([np.mean(by_step[s]) for s in steps])
    std = np.array([np.std(by_step[s], ddof=1) if len(by_step[s]) > 1 else 0.0 for s in steps])
    return np.array(steps), mean, std


def _legend(fig: Figure, groups: list[Group], colors) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[i], lw=2) for i in range(len(groups))]
    fig.legend(handles, [g.label for g in groups], loc="lower center", ncol=min(3, len(groups)), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 0.0))


def _curves(groups: list[Group], metrics: list[tuple[str, str]], xlabel: str, title: str,
            ncols: int = 3) -> Figure | None:
    from matplotlib.ticker import MaxNLocator

    metrics = [(m, t) for m, t in metrics if any(m in r.history for g in groups for r in g.usable)]
    if not metrics:
        return None
    ncols = min(ncols, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    legend_rows = math.ceil(len([g for g in groups if g.usable]) / 3)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows + 0.3 * legend_rows + 0.5))
    groups = [g for g in groups if any(m in r.history for m, _ in metrics for r in g.usable)]
    colors = _colors(len(groups))
    for i, (metric, name) in enumerate(metrics):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for g, color in zip(groups, colors):
            series = [r.history[metric] for r in g.usable if metric in r.history]
            if not series:
                continue
            x, mean, std = _mean_band(series)
            ax.plot(x, mean, color=color, marker="o" if len(x) <= 12 else None, ms=3, lw=1.5)
            if len(series) > 1:
                ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, lw=0)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title + " (line: mean over seeds; band: ±1 std)", fontsize=11)
    _legend(fig, groups, colors)
    fig.tight_layout(rect=(0, (0.3 * legend_rows + 0.2) / fig.get_figheight(), 1, 0.95))
    return fig


def plot_eval_curves(groups: list[Group]) -> Figure | None:
    names = {c.metric: c.label for c in COLUMNS}
    return _curves(groups, [(m, names[m]) for m in EVAL_PLOT_METRICS], "epoch", "Evaluation metrics per epoch")


def plot_losses(groups: list[Group]) -> Figure | None:
    return _curves(groups, [("train/loss_d", "D loss"), ("train/loss_g", "G loss")], "step", "Losses", ncols=2)


def plot_d_outputs(groups: list[Group]) -> Figure | None:
    return _curves(groups, [("train/d_real", "D(x): real"), ("train/d_fake", "D(G(z)): fake")], "step",
                   "Discriminator outputs", ncols=2)


def plot_class_accuracy(groups: list[Group], reference: dict[str, float] | None = None,
                        class_names: tuple[str, ...] | None = None) -> Figure | None:
    keys = [f"eval/class_acc_{i}" for i in range(10)]
    with_data = [g for g in groups if any(g.values(k) for k in keys)]
    if not with_data:
        return None
    bars = [(g.label, [summarize(g.values(k)) for k in keys]) for g in with_data]
    if reference and "class_acc_0" in reference:
        bars.append(("real data (reference)", [summarize([reference[f"class_acc_{i}"]]) for i in range(10)]))
    n = len(bars)
    width = 0.8 / n
    fig = Figure(figsize=(max(8.0, 1.0 + 0.9 * len(keys) * max(1, n / 3)), 4.2))
    ax = fig.add_subplot()
    colors = _colors(n)
    x = np.arange(len(keys))
    for i, (label, stats) in enumerate(bars):
        means = [s.mean if s.n else 0.0 for s in stats]
        errs = [s.std if s.n > 1 else 0.0 for s in stats]
        color = "0.3" if label.startswith("real data") else colors[i]
        ax.bar(x - 0.4 + width * (i + 0.5), means, width, yerr=errs, capsize=2, color=color, label=label)
    ax.set_xticks(x, list(class_names or [str(i) for i in range(10)]), fontsize=8)
    ax.set_ylabel("accuracy of the evaluator on class-conditioned samples", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title("Per-class accuracy at the final epoch (bar: mean over seeds; whisker: ±1 std)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(3, n), loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    fig.tight_layout()
    return fig


def _sort_values(values) -> list:
    parsed = [(param_value(v), v) for v in values]
    try:
        return [v for _, v in sorted(parsed, key=lambda t: t[0])]
    except TypeError:
        return sorted(values)


def plot_heatmap(groups: list[Group], keys: list[str], metric: str, direction: str) -> Figure | None:
    """A 2-D grid study: the objective's mean in each cell (empty cells say so)."""
    if len(keys) != 2:
        return None
    kx, ky = keys
    xs = _sort_values({g.params.get(kx) for g in groups if g.params.get(kx) is not None})
    ys = _sort_values({g.params.get(ky) for g in groups if g.params.get(ky) is not None})
    if not xs or not ys:
        return None
    grid = np.full((len(ys), len(xs)), np.nan)
    text = [["no runs"] * len(xs) for _ in ys]
    for g in groups:
        x, y = g.params.get(kx), g.params.get(ky)
        if x not in xs or y not in ys:
            continue
        s = summarize(g.values(metric))
        i, j = ys.index(y), xs.index(x)
        if s.n:
            grid[i, j] = s.mean
            text[i][j] = f"{s.mean:.3g}" + (f"\n±{s.std:.2g}" if s.n > 1 else "") + f"\nn={s.n}"
        else:
            text[i][j] = "no finished\nruns"
    fig = Figure(figsize=(max(4.5, 1.3 * len(xs) + 2.5), max(3.5, 1.0 * len(ys) + 2)))
    ax = fig.add_subplot()
    cmap = "viridis" if direction == "maximize" else "viridis_r"
    masked = np.ma.masked_invalid(grid)
    im = ax.imshow(masked, cmap=cmap, aspect="auto", origin="lower")
    finite = grid[np.isfinite(grid)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(len(ys)):
        for j in range(len(xs)):
            v = grid[i, j]
            dark = math.isfinite(v) and ((v < mid) == (direction == "maximize"))
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    ax.set_xticks(range(len(xs)), xs)
    ax.set_yticks(range(len(ys)), ys)
    ax.set_xlabel(kx)
    ax.set_ylabel(ky)
    ax.set_title(f"{metric} ({direction}) by {kx} x {ky}", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


# MLflow 3 stores `log_image(key=, step=)` as images/<key>+step+<step>+timestamp+<ms>+<uuid>.png (and a
# +compressed.webp thumbnail); older versions used % as the separator.
_IMAGE_RE = re.compile(r"^(?P<key>.+?)[+%]step[+%](?P<step>\d+)[+%]timestamp[+%](?P<ts>\d+)[+%].*\.png$")


def final_sample_image(client, run_id: str, key: str = "samples") -> tuple[str, int] | None:
    """(artifact path, step) of the last-step image logged with `log_image(key=..., step=...)`."""
    try:
        files = client.list_artifacts(run_id, "images")
    except Exception:
        return None
    best = None
    for f in files:
        m = _IMAGE_RE.match(f.path.rsplit("/", 1)[-1])
        if m and m["key"] == key and "compressed" not in f.path:
            rank = (int(m["step"]), int(m["ts"]))
            if best is None or rank > best[0]:
                best = (rank, f.path)
    return (best[1], best[0][0]) if best else None


def plot_samples(client, groups: list[Group]) -> tuple[Figure | None, list[str]]:
    """Each configuration's final-epoch sample grid (its first finished seed), side by side."""
    import os

    import matplotlib.image as mpimg

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    images, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for g in groups:
            found = None
            for r in g.usable:
                found = final_sample_image(client, r.run_id)
                if found:
                    path = client.download_artifacts(r.run_id, found[0], tmp)
                    images.append((f"{g.label}\nseed {r.seed}, epoch {found[1]}", mpimg.imread(path)))
                    break
            if not found:
                gone = missing_artifacts(client, g.usable[0].run_id) if g.usable else None
                why = "its artifacts are missing" if gone else "no finished run logged one"
                notes.append(f"{g.label}: no sample grid ({why})")
    if not images:
        return None, notes
    ncols = min(4, len(images))
    nrows = math.ceil(len(images) / ncols)
    fig = Figure(figsize=(3.6 * ncols, 3.9 * nrows))
    for i, (title, img) in enumerate(images):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle("Samples at the final epoch (fixed noise; conditional models: one row per class)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig, notes


def _trial_points(groups: list[Group], keys: list[str], metric: str):
    """(params, value) per finished run, with the varied keys parsed."""
    points = []
    for g in groups:
        for r in g.usable:
            if metric in r.final and math.isfinite(r.final[metric]):
                points.append(({k: _hashable(param_value(r.params.get(k))) for k in keys},
                               r.final[metric]))
    return points


def _hashable(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, (list, dict)) else v


def param_importances(groups: list[Group], keys: list[str], metric: str, direction: str) -> dict[str, float] | None:
    """Optuna's fANOVA importances, from an in-memory study built from the MLflow runs (one trial per run)."""
    import logging

    import optuna
    from optuna.distributions import CategoricalDistribution

    points = _trial_points(groups, keys, metric)
    varied = [k for k in keys if len({json.dumps(p[k], default=str) for p, _ in points}) > 1]
    if len(points) < 2 or not varied or len({v for _, v in points}) < 2:
        return None
    choices = {k: tuple(sorted({p[k] for p, _ in points}, key=lambda v: (str(type(v)), v if v is not None else 0)))
               for k in varied}
    optuna.logging.set_verbosity(logging.WARNING)
    study = optuna.create_study(direction=direction)
    for params, value in points:
        study.add_trial(optuna.trial.create_trial(
            params={k: params[k] for k in varied}, value=value,
            distributions={k: CategoricalDistribution(choices[k]) for k in varied}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imp = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    return dict(imp)


def plot_importances(importances: dict[str, float], metric: str) -> Figure:
    items = sorted(importances.items(), key=lambda t: t[1])
    fig = Figure(figsize=(6.5, 0.5 * len(items) + 1.6))
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel(f"importance for {metric} (fANOVA, Optuna; one point per finished run)", fontsize=8)
    ax.set_title("Parameter importances", fontsize=10)
    fig.tight_layout()
    return fig


def plot_parallel(groups: list[Group], keys: list[str], metric: str, direction: str) -> Figure | None:
    """Parallel coordinates: one line per finished run through its parameters and the objective."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    points = _trial_points(groups, keys, metric)
    if len(points) < 2 or not keys:
        return None
    axes_names = [*keys, metric]
    positions, ticks = [], []
    for k in keys:
        vals = [p[k] for p, _ in points]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
        uniq = sorted(set(vals), key=lambda v: (str(type(v)), v if v is not None else 0))
        if numeric and len(uniq) > 1:
            lo, hi = min(uniq), max(uniq)
            positions.append([(v - lo) / (hi - lo) for v in vals])
            ticks.append([((u - lo) / (hi - lo), f"{u:g}") for u in uniq] if len(uniq) <= 8 else
                         [(0.0, f"{lo:g}"), (1.0, f"{hi:g}")])
        else:
            idx = {u: (i / (len(uniq) - 1) if len(uniq) > 1 else 0.5) for i, u in enumerate(uniq)}
            positions.append([idx[v] for v in vals])
            ticks.append([(idx[u], str(u)) for u in uniq])
    obj = np.array([v for _, v in points])
    lo, hi = float(obj.min()), float(obj.max())
    span = hi - lo or 1.0
    positions.append(list((obj - lo) / span if hi > lo else np.full(len(obj), 0.5)))
    ticks.append([(0.0, f"{lo:.3g}"), (1.0, f"{hi:.3g}")] if hi > lo else [(0.5, f"{lo:.3g}")])
    fig = Figure(figsize=(max(5.0, 2.2 * len(axes_names)), 4.0))
    ax = fig.add_subplot()
    cmap = colormaps["viridis" if direction == "maximize" else "viridis_r"]
    norm = Normalize(lo, hi if hi > lo else lo + 1)
    xs = np.arange(len(axes_names))
    order = np.argsort(obj if direction == "maximize" else -obj)  # best drawn last (on top)
    for i in order:
        ax.plot(xs, [pos[i] for pos in positions], color=cmap(norm(obj[i])), alpha=0.8, lw=1.5)
    for x, tk in zip(xs, ticks):
        ax.axvline(x, color="0.4", lw=0.8)
        for y, label in tk:
            ax.text(x + 0.03, y, label, fontsize=7, va="center")
    ax.set_xticks(xs, axes_names, fontsize=8, rotation=10)
    ax.set_yticks([])
    ax.set_ylim(-0.08, 1.08)
    ax.set_xlim(-0.2, len(axes_names) - 0.6)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.colorbar(cmap_mappable(cmap, norm), ax=ax, label=metric, shrink=0.8)
    ax.set_title("Parallel coordinates (one line per finished run; colour: objective)", fontsize=10)
    fig.tight_layout()
    return fig


def cmap_mappable(cmap, norm):
    from matplotlib.cm import ScalarMappable

    sm = ScalarMappable(norm=norm, cmap=cmap)
    sm.set_array([])
    return sm


@dataclass
class Plot:
    name: str
    title: str
    png: bytes | None
    note: str = ""


def _plot(name: str, title: str, make, why_not: str) -> Plot:
    try:
        fig = make()
    except Exception as e:  # a plot must never sink the report
        return Plot(name, title, None, f"not drawn: {type(e).__name__}: {e}")
    if fig is None:
        return Plot(name, title, None, why_not)
    return Plot(name, title, figure_to_png(fig))


def study_plots(client, study: StudyData, reference: dict | None) -> list[Plot]:
    from bench.data import DATASETS

    groups = study.groups
    metric, direction = study.objectives[0]
    keys = [k for k in study.space_keys]
    dataset = next((g.params.get("data.dataset") for g in groups if g.params.get("data.dataset")), "mnist")
    names = DATASETS[dataset].class_names if dataset in DATASETS else None
    plots = [
        _plot("eval_curves", "Evaluation metrics vs epoch", lambda: plot_eval_curves(groups),
              "no finished run logged eval/* metrics"),
        _plot("losses", "G and D losses", lambda: plot_losses(groups), "no finished run logged train/loss_*"),
        _plot("d_outputs", "D(x) and D(G(z))", lambda: plot_d_outputs(groups),
              "no finished run logged train/d_real, train/d_fake"),
        _plot("class_accuracy", "Per-class accuracy", lambda: plot_class_accuracy(groups, reference, names),
              "no per-class accuracy (unconditional models log classes covered and class KL instead)"),
        _plot("heatmap", f"{metric} over the 2-D grid", lambda: plot_heatmap(groups, keys, metric, direction),
              f"not a 2-D grid study (it varies {len(keys)} key{'s' * (len(keys) != 1)}: "
              f"{', '.join(keys) or 'none'})"),
    ]
    sample_notes: list[str] = []

    def samples():
        fig, notes = plot_samples(client, groups)
        sample_notes.extend(notes)
        return fig

    gone = sorted({missing_artifacts(client, g.usable[0].run_id) for g in groups if g.usable} - {None})
    plots.append(_plot("samples", "Samples at the final epoch", samples,
                       f"the artifact folder {', '.join(gone)} is missing (moved or deleted): restore it to see the "
                       "sample grids" if gone else "no finished run logged a sample grid"))
    if sample_notes:
        plots[-1].note = "; ".join(filter(None, [plots[-1].note, *sample_notes]))
    imp_holder: dict = {}

    def importances():
        imp = param_importances(groups, keys, metric, direction)
        imp_holder["v"] = imp
        return plot_importances(imp, metric) if imp else None

    plots.append(_plot("param_importances", "Parameter importances", importances,
                       "needs at least 2 finished runs, a parameter with 2 or more values and an objective "
                       "that differs between runs"))
    plots.append(_plot("parallel_coordinates", "Parallel coordinates",
                       lambda: plot_parallel(groups, keys, metric, direction),
                       "needs at least 2 finished runs and a varied parameter"))
    return plots
