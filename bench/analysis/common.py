"""What every analysis shares: load a finished run, generate from it, and log results back to it.

* `load_run` rebuilds a run from MLflow: its `config.json`, the two checkpoints (loaded with
  `weights_only=True`) and, through `experiment.prepare`, the data and the same cached evaluator.
* `best_trial_run` resolves a study name to the run of the study's best trial.
* `AnalysisResult` is what an analysis returns (metrics, tables, figures, notes); `publish` logs it
  under `analysis/<name>/` of the analysed run. Analyses never log themselves, so they are easy
  to test and to call from a notebook.
* Generation helpers work for every family, including conditional generators fed an embedding
  vector directly (`forward_embedding`) and nets wrapped for virtual batch norm.
* D's verdicts: `d_logits` / `d_probabilities` (D as training sees it) and `verdict_grid`, images
  framed and titled with sigmoid(D(x)).
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import nn
from bench.progress import bar as progress_bar

from bench.errors import InputError
from bench.run_config import build_config, RunConfig
from bench.data import DeviceDataset
from bench.experiment import Context, prepare
from bench.step import build_gan
from bench.models import GAN, WithReference, as_trained, sample_latent
from bench.tracking import TAG_ROLE, TAG_STUDY, TAG_TRIAL, client as mlflow_client, mask_uri, no_download_bars

ARTIFACT_PREFIX = "analysis"
CHECKPOINTS = {"generator": "checkpoints/generator.pt", "discriminator": "checkpoints/discriminator.pt"}
OBJECTIVE_TAG = "objective"  # on a study's parent run: "<metric>:<maximize|minimize>"
BATCH = 2000  # images per generator / evaluator call


# ---------------------------------------------------------------------------
# Loading a run


@dataclass
class LoadedRun:
    """A finished run rebuilt for analysis: both nets in eval mode on `ctx.device`."""

    run_id: str
    tracking_uri: str
    cfg: RunConfig
    gan: GAN
    ctx: Context

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    @property
    def num_classes(self) -> int:
        return self.ctx.test.num_classes

    @property
    def latent_dim(self) -> int:
        return self.cfg.model.latent_dim

    @property
    def latent_prior(self) -> str:
        return self.cfg.model.latent_prior


def open_store(tracking_uri: str):
    """An MlflowClient, refusing a SQLite path with no database (MLflow would create an empty one)."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        if not db.is_file():
            raise InputError(f"tracking store {mask_uri(tracking_uri)!r}: no MLflow database at {db}",
                             field="tracking_uri")
    return mlflow_client(tracking_uri)


def get_run(client, run_id: str, tracking_uri: str):
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        run = None
    if run is None or run.info.lifecycle_stage == "deleted":
        raise InputError(f"run {run_id!r}: no such run in the tracking store {mask_uri(tracking_uri)!r}",
                         field="run_id")
    return run


def load_run(run_id: str, tracking_uri: str, *, data_root: str | None = None, device: str = "auto",
             progress: bool = True) -> LoadedRun:
    """Rebuild run `run_id`: config, generator and discriminator weights, data and evaluator.

    `data_root` replaces the run's data root (the run may come from another machine); `device`
    is where to analyse ("auto": the GPU if there is one), whatever device the run trained on.
    """
    import mlflow.artifacts

    client = open_store(tracking_uri)
    get_run(client, run_id, tracking_uri)
    with tempfile.TemporaryDirectory(prefix="gan-bench-analysis-") as tmp, no_download_bars():
        files = {}
        for name in ("config.json", *CHECKPOINTS.values()):
            try:
                files[name] = Path(mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=name, dst_path=tmp, tracking_uri=tracking_uri))
            except Exception as e:  # MlflowException or OSError, depending on the artifact store
                raise InputError(f"run {run_id!r}: cannot download artifact {name!r} "
                                 f"(runs logged without checkpoints cannot be analysed): {e}",
                                 field="run_id") from None
        overrides: dict[str, Any] = {"device": device}
        if data_root:
            overrides["data.root"] = data_root
        cfg = build_config(json.loads(files["config.json"].read_text()), overrides)
        ctx = prepare(cfg, progress=progress)
        gan = build_gan(cfg, num_classes=ctx.train_full.num_classes)
        for role, net in (("generator", gan.generator), ("discriminator", gan.discriminator)):
            net.to(ctx.device)
            state = torch.load(files[CHECKPOINTS[role]], map_location=ctx.device, weights_only=True)
            net.load_state_dict(state)
            net.eval()
    return LoadedRun(run_id, tracking_uri, cfg, gan, ctx)


# ---------------------------------------------------------------------------
# A study's best trial's run


def parse_objective(text: str) -> tuple[str, str]:
    """'eval/tarr:maximize' -> ('eval/tarr', 'maximize')."""
    metric, sep, direction = text.rpartition(":")
    if not sep or not metric or direction not in ("maximize", "minimize"):
        raise InputError(f"objective {text!r}: expected METRIC:maximize or METRIC:minimize", field="objective")
    return metric, direction


def _search(client, experiment_ids: list[str], filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def best_trial_run(tracking_uri: str, study: str, objective: str | None = None) -> tuple[str, str]:
    """(run id, explanation) of the best trial of `study`.

    Trial runs are tagged `study=NAME, role=trial` (one run per trial and seed, `trial=N`); the
    objective comes from `objective`, else from the parent run's `objective` tag (as bench.studies
    writes it: "metric:direction[,metric:direction...]"; with several, the first one ranks). A
    trial scores the mean objective over its finished seed runs; of the best trial, the best seed
    run is used.
    """
    client = open_store(tracking_uri)
    quoted = study.replace("'", "\\'")
    exp = client.get_experiment_by_name(study)
    exp_ids = [exp.experiment_id] if exp else [e.experiment_id for e in client.search_experiments()]
    if objective is None:
        parents = _search(client, exp_ids, f"tags.{TAG_STUDY} = '{quoted}' and tags.{TAG_ROLE} = 'parent'")
        tagged = [p.data.tags[OBJECTIVE_TAG] for p in parents if OBJECTIVE_TAG in p.data.tags]
        if not tagged:
            raise InputError(f"study {study!r}: no parent run with an {OBJECTIVE_TAG!r} tag; "
                             "give an objective (METRIC:maximize|minimize), or a run id", field="study")
        objective = tagged[0].split(",")[0].strip()
    metric, direction = parse_objective(objective)
    trials = _search(client, exp_ids, f"tags.{TAG_STUDY} = '{quoted}' and tags.{TAG_ROLE} = 'trial' "
                                      "and attributes.status = 'FINISHED'")
    scored = [r for r in trials if math.isfinite(r.data.metrics.get(metric, math.nan))]
    if not scored:
        raise InputError(f"study {study!r}: no finished trial run has the metric {metric!r}", field="study")
    sign = 1.0 if direction == "maximize" else -1.0
    by_trial: dict[str, list] = {}
    for r in scored:
        by_trial.setdefault(r.data.tags.get(TAG_TRIAL, r.info.run_id), []).append(r)

    def mean(rs: list) -> float:
        return sum(r.data.metrics[metric] for r in rs) / len(rs)

    trial, runs = max(by_trial.items(), key=lambda kv: sign * mean(kv[1]))
    best = max(runs, key=lambda r: sign * r.data.metrics[metric])
    why = (f"study {study!r}: best trial {trial} ({direction} {metric}: mean {mean(runs):.4f} over "
           f"{len(runs)} run(s)); run {best.info.run_id} ({metric}={best.data.metrics[metric]:.4f})")
    return best.info.run_id, why


# ---------------------------------------------------------------------------
# Generating


def embedding_generator(G: nn.Module) -> nn.Module | None:
    """The conditional generator that can be fed embedding vectors (see cgan.py), else None."""
    net = G.net if isinstance(G, WithReference) else G
    return net if hasattr(net, "forward_embedding") and hasattr(net, "label_embedding") else None


def embedding_table(G: nn.Module) -> torch.Tensor:
    """(num_classes, embed_dim): the vectors the generator conditions on, one per label."""
    net = embedding_generator(G)
    if net is None:
        raise ValueError("this generator has no label embedding")
    return net.label_embedding.weight.detach()


@torch.inference_mode()
def generate_from_embedding(G: nn.Module, z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """G(z, e) with embedding vectors e (B, embed_dim) in place of labels, in chunks."""
    net = embedding_generator(G)
    if net is None:
        raise ValueError("this generator has no label embedding")
    out = []
    for zc, ec in zip(z.split(BATCH), e.split(BATCH)):
        if isinstance(G, WithReference):  # the VBN reference batch goes through with every call
            z_all = torch.cat([G.ref_input.to(zc.dtype), zc])
            e_all = torch.cat([net.label_embedding(G.ref_labels), ec])
            out.append(net.forward_embedding(z_all, e_all)[G.n_ref:])
        else:
            out.append(net.forward_embedding(zc, ec))
    return torch.cat(out)


@torch.inference_mode()
def generate(G: nn.Module, z: torch.Tensor, y: torch.Tensor | None = None, progress: bool = False,
             desc: str = "generating") -> torch.Tensor:
    """G(z, y) in chunks (y None for unconditional nets)."""
    out = []
    chunks = range(0, len(z), BATCH)
    for i in progress_bar(chunks, desc=desc, enabled=progress and len(chunks) >= 2, leave=False):
        out.append(G(z[i:i + BATCH], None if y is None else y[i:i + BATCH]))
    return torch.cat(out) if out else z.new_zeros((0, 1, 28, 28))


def noise(n: int, dim: int, gen: torch.Generator, device, prior: str = "normal") -> torch.Tensor:
    """Noise drawn on the CPU (same numbers on any device), moved to `device`. Latent draws pass
    the run's `model.latent_prior`; exploration noise (report 003's N(0, sigma I)) stays normal."""
    return sample_latent(n, dim, prior, generator=gen, device=device)


def balanced(data: DeviceDataset, n: int, seed: int, option: str) -> DeviceDataset:
    """A class-balanced subset; a size the classes cannot fill is an input error naming the option
    (a field of the analysis' `Options`)."""
    try:
        return data.subset(n, seed=seed)
    except ValueError as e:
        raise InputError(f"{option}: {e}", field=option) from None


# ---------------------------------------------------------------------------
# The discriminator's verdicts


@torch.inference_mode()
def d_logits(D: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, seed: int = 0) -> torch.Tensor:
    """D's logits (on the CPU) as training sees it (dropout on: see `models.as_trained`), in chunks."""
    with as_trained(D, seed):
        return torch.cat([D(images[i:i + BATCH], None if labels is None else labels[i:i + BATCH])
                          for i in range(0, len(images), BATCH)]).float().cpu()


def d_probabilities(D: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, seed: int = 0) -> torch.Tensor:
    """sigmoid(D(x)): D's probability that each image is real."""
    return torch.sigmoid(d_logits(D, images, labels, seed))


# ---------------------------------------------------------------------------
# Results and logging them back


@dataclass
class AnalysisResult:
    """What one analysis produced. Names are relative: `publish` adds `analysis/<name>/`."""

    name: str
    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, list[dict]] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # metric histories: (step, value)


def _plain(value: Any) -> Any:
    """JSON-safe: NaN/inf become None, tensors and numpy scalars become Python numbers."""
    if isinstance(value, torch.Tensor):
        value = value.item()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def plain_rows(rows: list[dict]) -> list[dict]:
    return [{k: _plain(v) for k, v in row.items()} for row in rows]


def to_csv(rows: list[dict]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(plain_rows(rows))
    return buf.getvalue()


def publish(client, run_id: str, result: AnalysisResult) -> list[str]:
    """Log a result to an existing (finished) run; returns the artifact paths written.

    Metrics go in one batch as `analysis/<name>/<metric>` (non-finite values are left out of the
    metrics but kept, as null, in the tables), `series` as metric histories (one step per point); each table as JSON and CSV; each figure as PNG;
    `summary.json` holds the options (seed, budgets), the metrics and the notes.
    """
    from mlflow.entities import Metric

    prefix = f"{ARTIFACT_PREFIX}/{result.name}"
    now = int(time.time() * 1000)
    metrics = [Metric(f"{prefix}/{k}", float(v), now, 0) for k, v in result.metrics.items()
               if v is not None and math.isfinite(float(v))]
    metrics += [Metric(f"{prefix}/{k}", float(v), now, int(step)) for k, points in result.series.items()
                for step, v in points if v is not None and math.isfinite(float(v))]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])
    paths = []
    for table, rows in result.tables.items():
        client.log_dict(run_id, plain_rows(rows), f"{prefix}/{table}.json")
        client.log_text(run_id, to_csv(rows), f"{prefix}/{table}.csv")
        paths += [f"{prefix}/{table}.json", f"{prefix}/{table}.csv"]
    for name, fig in result.figures.items():
        client.log_figure(run_id, fig, f"{prefix}/{name}.png")
        paths.append(f"{prefix}/{name}.png")
    summary = {"analysis": result.name, "options": result.options, "notes": result.notes,
               "metrics": {k: _plain(float(v)) for k, v in result.metrics.items()}}
    client.log_dict(run_id, summary, f"{prefix}/summary.json")
    paths.append(f"{prefix}/summary.json")
    return paths


# ---------------------------------------------------------------------------
# Figures


def image_grid(images: torch.Tensor, ncols: int, *, titles: list[str] | None = None,
               row_labels: list[str] | None = None, col_labels: list[str] | None = None,
               suptitle: str | None = None, cell: float = 0.75, borders: list[str | None] | None = None) -> Figure:
    """A grid of (N, 1, 28, 28) images in [-1, 1] (NaN images show as blanks), drawn as one mosaic.

    Optional: a small title above each image, labels left of each row and above each column, a
    coloured frame around each image (`borders`: a matplotlib colour or None per image).
    One `imshow` plus text, so hundreds of images cost little. `cell`: inches per image.
    """
    pics = images.detach().float().cpu().clamp(-1, 1)[:, 0].numpy()
    size, pad = pics.shape[-1] if len(pics) else 28, 2
    band = 9 if titles else 0  # pixels above each image for its title
    nrows = max(1, math.ceil(len(pics) / ncols))
    height, width = nrows * (size + pad + band) + pad, ncols * (size + pad) + pad
    canvas = np.full((height, width), np.nan)
    corners = []
    for i, pic in enumerate(pics):
        r, c = divmod(i, ncols)
        y0, x0 = pad + band + r * (size + pad + band), pad + c * (size + pad)
        canvas[y0:y0 + size, x0:x0 + size] = pic
        corners.append((y0, x0))
    inch = cell / (size + pad)
    left = 0.6 if row_labels else 0.05
    top = (0.4 if suptitle else 0.05) + (0.18 if col_labels else 0.0)
    fig_w, fig_h = left + width * inch + 0.05, top + height * inch + 0.05
    fig = Figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((left / fig_w, 0.05 / fig_h, width * inch / fig_w, height * inch / fig_h))
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")
    ax.imshow(canvas, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    for i, (y0, x0) in enumerate(corners):
        if titles and i < len(titles) and titles[i]:
            ax.text(x0 + size / 2, y0 - 1, titles[i], ha="center", va="bottom", fontsize=5.5)
        if borders and i < len(borders) and borders[i]:
            ax.add_patch(Rectangle((x0 - 1, y0 - 1), size + 1, size + 1, fill=False, edgecolor=borders[i], lw=1.5))
    for r, label in enumerate((row_labels or [])[:nrows]):
        ax.text(-2, pad + band + r * (size + pad + band) + size / 2, label, ha="right", va="center", fontsize=7)
    for c, label in enumerate((col_labels or [])[:ncols]):
        ax.text(pad + c * (size + pad) + size / 2, -1, label, ha="center", va="bottom", fontsize=6)
    if suptitle:
        fig.suptitle(suptitle, fontsize=8, y=1 - 0.05 / fig_h, va="top")
    return fig


def label_title(pred: int, conf: float) -> str:
    return f"{pred} {conf:.2f}"


def verdict_grid(images: torch.Tensor, probs: torch.Tensor, ncols: int, *, row_labels: list[str] | None = None,
                 suptitle: str | None = None) -> Figure:
    """Images each framed and titled with D's verdict: p = sigmoid(D(x)) written above the image,
    a green frame when D calls it real (p > 0.5), red when it calls it generated (reports 000, 003).
    NaN probabilities (padding) get neither."""
    p = probs.detach().double().cpu().flatten().tolist()
    return image_grid(images, ncols, titles=[verdict_title(q) for q in p], borders=[verdict_color(q) for q in p],
                      row_labels=row_labels, suptitle=suptitle)


def verdict_title(p: float) -> str:
    return "" if math.isnan(p) else f"D {p:.2f}"


def verdict_color(p: float) -> str | None:
    return None if math.isnan(p) else "tab:green" if p > 0.5 else "tab:red"
