"""`gan-bench analyze latent`: what a trained generator's latent and label-embedding spaces hold.

Reports 000, 003 and 004. Five parts, in this order:

1. Labeled latent vectors (report 000). Sample `n_pool` noise vectors z (conditional models: with
   labels drawn in turn 0, 1, ..., 9, 0, ...), generate, and let the evaluator label each image;
   a vector is *labeled* when the evaluator's confidence is >= `threshold`. Per class: counts, the
   mean labeled vector, its norm next to the norms of the random vectors (a mean of many
   N(0, I) vectors is much shorter than any of them), and the minimum-distance-to-mean (MDM)
   classifier, which labels a vector by its nearest class mean: its agreement with the evaluator
   at several thresholds, on held-out vectors (means from the first half of the pool, agreement
   on the second), next to chance (the most frequent label's share).
2. Class means: per class, the image of the mean latent vector z = 0 (conditional: G(0, c)), the
   image of the class's mean labeled vector, and random samples of the class (conditional:
   G(z, c) for random z; unconditional: random labeled vectors of the class).
3. Interpolation, linear with exact endpoints: within a class (the two most confident vectors of
   the class; conditional: label fixed) and between classes c -> c+1 (unconditional: in latent
   space; conditional: latent vector and label embedding together), with the evaluator's label
   and confidence at every point.
4. Noise exploration (report 003 2.5): sigma * N(0, I) added to the mean latent vector
   (conditional: z = 0 with label c; unconditional: class c's mean labeled vector) and, for
   conditional models, separately to the label embedding of c (z = 0): per sigma, the rate at
   which the evaluator still gives c and its mean confidence.
   Then uniform noise (report 000 3.6): U(-a, a) per coordinate added to the same mean latent
   vectors, for each amplitude a in `uniform_amplitudes` (report 000: 0.1 to 0.9).
5. Out-of-distribution embeddings (report 003 2.3, conditional only): random embedding vectors
   N(0, s^2 I), s the RMS of the learned embedding table, fed to G with random z; the label of the
   nearest learned embedding (1-NN) against the evaluator's label.
6. z as style (report 004, conditional only): `style_columns` noise vectors, one per column, each
   given every label, one class per row: a column shares its z, so what it keeps across digits is
   what z encodes (the writing style).

Unconditional models have no label embedding: the embedding parts are skipped with a note.
The maths (class means, nearest mean, interpolation, agreement) are pure functions at the top.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from bench.progress import bar as progress_bar

from bench.analysis.common import (AnalysisResult, LoadedRun, embedding_generator, embedding_table, generate,
                                   generate_from_embedding, image_grid, label_title, noise)

NAME = "latent"
SIGMAS = (0.1, 0.5, 1.0, 1.5, 2.0)
UNIFORM_AMPLITUDES = (0.1, 0.3, 0.5, 0.7, 0.9)  # report 000's figure 11
AGREEMENT_THRESHOLDS = (0.0, 0.5, 0.9, 0.99)
GRID_PER_CLASS = 2  # images per class and sigma in the noise grids
OOD_GRID = 40       # out-of-distribution samples shown


@dataclass
class Options:
    seed: int = 0
    n_pool: int = 20_000        # latent vectors sampled for the labeled-vector analysis
    threshold: float = 0.9      # evaluator confidence that makes a vector "labeled"
    n_random: int = 8           # random samples per class next to the mean images
    interp_steps: int = 10      # points per interpolation path, endpoints included
    noise_samples: int = 100    # per class and sigma
    n_ood: int = 1_000          # random embedding vectors
    uniform_amplitudes: tuple[float, ...] = UNIFORM_AMPLITUDES  # U(-a, a) noise on the mean latent vectors
    style_columns: int = 10     # columns (one z each) of the z-as-style grid


# ---------------------------------------------------------------------------
# Pure maths


def class_means(vectors: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(means (C, D), counts (C,)): the mean vector of each label; NaN rows for absent labels."""
    vectors = vectors.double()
    counts = torch.bincount(labels, minlength=num_classes)[:num_classes]
    sums = torch.zeros(num_classes, vectors.shape[1], dtype=torch.float64, device=vectors.device)
    sums.index_add_(0, labels, vectors)
    return sums / counts.unsqueeze(1).to(sums), counts  # 0 / 0 = NaN for absent labels


def nearest_mean(vectors: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """The minimum-distance-to-mean classifier: index of the nearest row of `means` (NaN rows never win).

    With `means` an embedding table it is the 1-nearest-neighbour label of each vector.
    """
    present = (~means.isnan().any(dim=1)).nonzero().flatten()
    if not len(present):
        raise ValueError("nearest_mean: every mean is NaN")
    d = torch.cdist(vectors.double(), means[present].double().to(vectors.device))
    return present.to(d.device)[d.argmin(dim=1)]


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of positions where two label vectors agree (NaN when empty)."""
    return (a == b).double().mean().item() if len(a) else math.nan


def style_inputs(num_classes: int, columns: int, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, labels) of the z-as-style grid, row-major: row r is class r, column j uses z[j] for every row."""
    return z[:columns].repeat(num_classes, 1), torch.arange(num_classes, device=z.device).repeat_interleave(columns)


def interpolate(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """`steps` points on the segment a -> b (1-D tensors); the first is exactly a, the last exactly b."""
    t = torch.linspace(0, 1, steps, dtype=a.dtype, device=a.device).unsqueeze(1)
    return (1 - t) * a + t * b  # t=0: a + 0*b = a; t=1: 0*a + b = b, exactly


def mdm_agreement(vectors: torch.Tensor, labels: torch.Tensor, conf: torch.Tensor, num_classes: int,
                  thresholds=AGREEMENT_THRESHOLDS) -> list[dict]:
    """MDM classifier vs the given labels at each confidence threshold, on held-out vectors.

    Class means come from the first half of the vectors with conf >= t; agreement is measured on
    the second half (with conf >= t). `chance` is the most frequent label's share there.
    """
    half = len(vectors) // 2
    rows = []
    for t in thresholds:
        fit = conf[:half] >= t
        held = conf[half:] >= t
        means, _ = class_means(vectors[:half][fit], labels[:half][fit], num_classes)
        ev_vectors, ev_labels = vectors[half:][held], labels[half:][held]
        if fit.any() and len(ev_labels):
            score = agreement(nearest_mean(ev_vectors, means), ev_labels)
        else:
            score = math.nan
        chance = (torch.bincount(ev_labels, minlength=num_classes).max().item() / len(ev_labels)
                  if len(ev_labels) else math.nan)
        rows.append({"threshold": t, "n_fit": int(fit.sum()), "n_eval": len(ev_labels),
                     "agreement": score, "chance": chance})
    return rows


# ---------------------------------------------------------------------------
# Generator and evaluator plumbing


def interpolation_images(G, za: torch.Tensor, zb: torch.Tensor, steps: int, *, label: int | None = None,
                         ea: torch.Tensor | None = None, eb: torch.Tensor | None = None) -> torch.Tensor:
    """Images along za -> zb: with a fixed label (or none), or jointly along the embeddings ea -> eb."""
    zs = interpolate(za, zb, steps)
    if ea is not None:
        return generate_from_embedding(G, zs, interpolate(ea, eb, steps))
    y = None if label is None else torch.full((steps,), label, dtype=torch.long, device=zs.device)
    return generate(G, zs, y)


def classify(run: LoadedRun, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(probs, predicted label, confidence) on the CPU."""
    probs, _ = run.ctx.evaluator(images)
    probs = probs.double().cpu()
    conf, pred = probs.max(dim=1)
    return probs, pred, conf


def sample_pool(run: LoadedRun, n: int, gen: torch.Generator, progress: bool) -> dict:
    """n latent vectors (+ labels 0..C-1 in turn for conditional models) and the evaluator's verdicts."""
    C = run.num_classes
    z = noise(n, run.latent_dim, gen, run.device, run.latent_prior)
    y = torch.arange(n, device=run.device) % C if run.gan.conditional else None
    images = generate(run.gan.generator, z, y, progress=progress, desc="latent pool")
    _, pred, conf = classify(run, images)
    return {"z": z.cpu(), "y": None if y is None else y.cpu(), "pred": pred, "conf": conf}


def class_examples(pool: dict, c: int, k: int) -> torch.Tensor:
    """Indices of up to k vectors the evaluator gives class c (conditional: made with label c), most
    confident first: labeled vectors when there are k of them, else the best there are."""
    mine = pool["pred"] == c
    if pool["y"] is not None:
        mine &= pool["y"] == c
    idx = mine.nonzero().flatten()
    order = pool["conf"][idx].argsort(descending=True)
    return idx[order][:k]


def random_examples(pool: dict, labeled: torch.Tensor, c: int, k: int) -> torch.Tensor:
    """Indices of k random samples of class c: conditional, made with label c (whatever the evaluator
    says); unconditional, labeled vectors the evaluator gives c. The pool is already random."""
    mine = pool["y"] == c if pool["y"] is not None else labeled & (pool["pred"] == c)
    return mine.nonzero().flatten()[:k]


# ---------------------------------------------------------------------------
# The analysis


def analyze(run: LoadedRun, opts: Options, progress: bool = True) -> AnalysisResult:
    res = AnalysisResult(NAME, options=asdict(opts))
    conditional = run.gan.conditional
    has_embedding = conditional and embedding_generator(run.gan.generator) is not None
    if not has_embedding:
        why = "unconditional" if not conditional else "conditional, but has no forward_embedding"
        res.notes.append(f"model {run.cfg.model.name!r} is {why}: label-embedding analyses skipped "
                         "(interpolation in embedding space, noise on the embedding, out-of-distribution "
                         "embeddings)")
    gen = torch.Generator().manual_seed(opts.seed)
    parts = progress_bar(total=6, desc="latent analysis", enabled=progress, unit="part")
    pool = sample_pool(run, opts.n_pool, gen, progress)
    means = labeled_vectors(run, res, pool, opts)
    parts.update()
    class_mean_images(run, res, pool, means, opts)
    parts.update()
    interpolation(run, res, pool, opts, has_embedding)
    parts.update()
    noise_exploration(run, res, means, opts, gen, has_embedding)
    parts.update()
    if has_embedding:
        ood_embeddings(run, res, opts, gen)
    parts.update()
    if conditional:
        z_style(run, res, opts, gen)
    else:
        res.notes.append("unconditional model: the z-as-style grid (one class per row) is skipped")
    parts.update()
    parts.close()
    return res


def labeled_vectors(run: LoadedRun, res: AnalysisResult, pool: dict, opts: Options) -> torch.Tensor:
    """Part 1: labeled rate, norms and the MDM classifier; returns the class means (C, D), NaN rows if absent."""
    labeled = pool["conf"] >= opts.threshold
    means, _ = class_means(pool["z"][labeled], pool["pred"][labeled], run.num_classes)
    present = ~means.isnan().any(dim=1)
    rows = mdm_agreement(pool["z"], pool["pred"], pool["conf"], run.num_classes)
    res.tables["mdm_agreement"] = rows
    res.metrics["labeled_rate"] = labeled.double().mean().item()
    if pool["y"] is not None:
        res.metrics["pool_tarr"] = agreement(pool["pred"], pool["y"])
    for row in rows:
        res.metrics[f"mdm_agreement_t{row['threshold']}"] = row["agreement"]
        res.metrics[f"mdm_chance_t{row['threshold']}"] = row["chance"]
    res.metrics["norm_random"] = pool["z"].double().norm(dim=1).mean().item()
    if present.any():
        res.metrics["norm_class_mean"] = means[present].norm(dim=1).mean().item()
    return means


def class_mean_images(run: LoadedRun, res: AnalysisResult, pool: dict, means: torch.Tensor, opts: Options) -> None:
    """Part 2: per class, G(z = 0), G(class mean) and random samples; the norms table."""
    G, C, conditional = run.gan.generator, run.num_classes, run.gan.conditional
    labeled = pool["conf"] >= opts.threshold
    norms = pool["z"].double().norm(dim=1)
    present = ~means.isnan().any(dim=1)
    labels = torch.arange(C, device=run.device)
    y = labels if conditional else None
    zero_images = generate(G, torch.zeros(C, run.latent_dim, device=run.device), y)
    mean_images = generate(G, means.nan_to_num(0).float().to(run.device), y)
    _, zero_pred, zero_conf = classify(run, zero_images)
    mean_probs, mean_pred, mean_conf = classify(run, mean_images)
    rows, grid, titles = [], [], []
    blank = torch.full((1, 1, 28, 28), math.nan, device=run.device)
    for c in range(C):
        mine = labeled & (pool["pred"] == c)
        rows.append({"class": c, "n_labeled": int(mine.sum()), "n_predicted": int((pool["pred"] == c).sum()),
                     "norm_random_mean": norms[mine].mean().item() if mine.any() else math.nan,
                     "norm_class_mean": means[c].norm().item() if present[c] else math.nan,
                     "zero_pred": int(zero_pred[c]), "zero_conf": zero_conf[c].item(),
                     "class_mean_pred": int(mean_pred[c]) if present[c] else None,
                     "class_mean_conf": mean_conf[c].item() if present[c] else math.nan,
                     "class_mean_p_class": mean_probs[c, c].item() if present[c] else math.nan})
        samples = random_examples(pool, labeled, c, opts.n_random)
        sample_images = generate(G, pool["z"][samples].to(run.device),
                                 labels[c].repeat(len(samples)) if conditional else None)
        _, s_pred, s_conf = classify(run, sample_images) if len(samples) else (None, [], [])
        missing = opts.n_random - len(samples)
        grid += [zero_images[c:c + 1], mean_images[c:c + 1] if present[c] else blank, sample_images,
                 *[blank] * missing]
        titles += [label_title(int(zero_pred[c]), zero_conf[c].item()),
                   label_title(int(mean_pred[c]), mean_conf[c].item()) if present[c] else "none",
                   *[label_title(int(p), float(q)) for p, q in zip(s_pred, s_conf)], *[""] * missing]
    res.tables["class_means"] = rows
    res.figures["class_means"] = image_grid(
        torch.cat(grid), 2 + opts.n_random, titles=titles, row_labels=[f"class {c}" for c in range(C)],
        col_labels=["z=0", "class mean", *["random"] * opts.n_random],
        suptitle=f"Mean latent vectors and random samples (evaluator label, confidence; "
                 f"labeled: conf >= {opts.threshold})")
    target = labels.cpu()
    if conditional:
        res.metrics["zero_image_acc"] = agreement(zero_pred, target)
    if present.any():
        res.metrics["class_mean_image_acc"] = agreement(mean_pred[present], target[present])


def interpolation(run: LoadedRun, res: AnalysisResult, pool: dict, opts: Options, has_embedding: bool) -> None:
    """Part 3: paths within each class and between classes c -> c+1, with the evaluator's verdicts."""
    G, C, conditional = run.gan.generator, run.num_classes, run.gan.conditional
    rows, within, between, within_titles, between_titles = [], [], [], [], []
    skipped_within, skipped_between = [], []
    for c in range(C):
        idx = class_examples(pool, c, 2)
        if len(idx) < 2:
            skipped_within.append(c)
            continue
        za, zb = (pool["z"][i].to(run.device) for i in idx)
        imgs = interpolation_images(G, za, zb, opts.interp_steps, label=c if conditional else None)
        rows += _path_rows(run, "within", c, c, imgs, within_titles)
        within.append(imgs)
    if has_embedding or not conditional:  # a conditional G without embeddings cannot change class smoothly
        table = embedding_table(G) if has_embedding else None
        for a in range(C):
            b = (a + 1) % C
            ia, ib = class_examples(pool, a, 1), class_examples(pool, b, 1)
            if not len(ia) or not len(ib):
                skipped_between.append(f"{a}->{b}")
                continue
            za, zb = pool["z"][ia[0]].to(run.device), pool["z"][ib[0]].to(run.device)
            if table is not None:
                imgs = interpolation_images(G, za, zb, opts.interp_steps, ea=table[a], eb=table[b])
            else:
                imgs = interpolation_images(G, za, zb, opts.interp_steps)
            rows += _path_rows(run, "between", a, b, imgs, between_titles)
            between.append(imgs)
    if skipped_within:
        res.notes.append(f"interpolation within classes {skipped_within} skipped: fewer than 2 vectors "
                         "the evaluator gives the class")
    if skipped_between:
        res.notes.append(f"interpolation {', '.join(skipped_between)} skipped: no vector of one of the classes")
    res.tables["interpolation"] = rows
    space = "latent + label embedding" if has_embedding else "latent"
    if within:
        res.figures["interpolation_within"] = image_grid(
            torch.cat(within), opts.interp_steps, titles=within_titles,
            suptitle="Interpolation within a class (latent space; evaluator label, confidence)")
        points = [r for r in rows if r["kind"] == "within"]
        res.metrics["interp_within_label_rate"] = float(np.mean([r["pred"] == r["class_a"] for r in points]))
        res.metrics["interp_within_mean_conf"] = float(np.mean([r["conf"] for r in points]))
    if between:
        res.figures["interpolation_between"] = image_grid(
            torch.cat(between), opts.interp_steps, titles=between_titles,
            suptitle=f"Interpolation between classes c -> c+1 ({space}; evaluator label, confidence)")
        points = [r for r in rows if r["kind"] == "between"]
        res.metrics["interp_between_endpoint_label_rate"] = float(
            np.mean([r["pred"] in (r["class_a"], r["class_b"]) for r in points]))
        res.metrics["interp_between_mean_conf"] = float(np.mean([r["conf"] for r in points]))
        res.figures["interpolation_between_curves"] = _path_curves(points, space)


def noise_exploration(run: LoadedRun, res: AnalysisResult, means: torch.Tensor, opts: Options,
                      gen: torch.Generator, has_embedding: bool) -> None:
    """Part 4: sigma * N(0, I) on the mean latent vector, then (conditional) on the label embedding."""
    C = run.num_classes
    res.tables["noise"] = []
    if run.gan.conditional:
        centers, usable = torch.zeros(C, run.latent_dim, device=run.device), torch.ones(C, dtype=torch.bool)
    else:
        centers, usable = means.nan_to_num(0).float().to(run.device), ~means.isnan().any(dim=1)
    if not usable.any():
        res.notes.append("noise exploration skipped: no class has a labeled mean latent vector")
        return
    eps_z = noise(C * opts.noise_samples, run.latent_dim, gen, run.device)
    _noise_part(run, res, "latent", centers, usable, eps_z, opts)
    if has_embedding:
        table = embedding_table(run.gan.generator)
        eps_e = noise(C * opts.noise_samples, table.shape[1], gen, run.device)
        _noise_part(run, res, "embedding", table, usable, eps_e, opts)
    if opts.uniform_amplitudes:
        eps_u = (2 * torch.rand(C * opts.noise_samples, run.latent_dim, generator=gen) - 1).to(run.device)  # U(-1, 1)
        _noise_part(run, res, "latent", centers, usable, eps_u, opts, UNIFORM)


def z_style(run: LoadedRun, res: AnalysisResult, opts: Options, gen: torch.Generator) -> None:
    """Part 6: one z per column, one class per row; the evaluator's label and confidence on each image."""
    C, k = run.num_classes, opts.style_columns
    z, y = style_inputs(C, k, noise(k, run.latent_dim, gen, run.device))
    images = generate(run.gan.generator, z, y)
    _, pred, conf = classify(run, images)
    hit = pred == y.cpu()
    res.tables["z_style"] = [{"class": int(y[i]), "column": i % k, "pred": int(pred[i]), "conf": conf[i].item()}
                             for i in range(len(y))]
    res.metrics["z_style_label_rate"] = hit.double().mean().item()
    res.figures["z_style"] = image_grid(
        images, k, titles=[label_title(int(p), q.item()) for p, q in zip(pred, conf)],
        row_labels=[f"class {c}" for c in range(C)], col_labels=[f"z{j + 1}" for j in range(k)],
        suptitle="z as style: one noise vector per column, one label per row (evaluator label, confidence)")


def ood_embeddings(run: LoadedRun, res: AnalysisResult, opts: Options, gen: torch.Generator) -> None:
    """Part 5: random embedding vectors; their 1-NN label among the learned ones vs the evaluator's label."""
    G = run.gan.generator
    table = embedding_table(G)
    scale = table.pow(2).mean().sqrt().item()
    e = scale * noise(opts.n_ood, table.shape[1], gen, run.device)
    z = noise(opts.n_ood, run.latent_dim, gen, run.device, run.latent_prior)
    nn_label = nearest_mean(e, table).cpu()
    nn_dist = torch.cdist(e.double(), table.double()).min(dim=1).values.cpu()
    images = generate_from_embedding(G, z, e)
    _, pred, conf = classify(run, images)
    confident = conf >= opts.threshold
    res.tables["ood"] = [{"i": i, "nn_label": int(nn_label[i]), "nn_dist": nn_dist[i].item(),
                          "pred": int(pred[i]), "conf": conf[i].item()} for i in range(opts.n_ood)]
    res.metrics["ood_agreement"] = agreement(nn_label, pred)
    res.metrics["ood_agreement_confident"] = agreement(nn_label[confident], pred[confident])
    res.metrics["ood_confident_rate"] = confident.double().mean().item()
    res.metrics["ood_mean_conf"] = conf.mean().item()
    res.metrics["ood_embedding_scale"] = scale
    k = min(OOD_GRID, opts.n_ood)
    res.figures["ood_embeddings"] = image_grid(
        images[:k], 8, titles=[f"nn {int(nn_label[i])} | {int(pred[i])} {conf[i].item():.2f}" for i in range(k)],
        suptitle=f"Random embeddings N(0, {scale:.2f}^2 I): 1-NN label | evaluator label, confidence")


def _path_rows(run: LoadedRun, kind: str, a: int, b: int, imgs: torch.Tensor, titles: list[str]) -> list[dict]:
    probs, pred, conf = classify(run, imgs)
    titles += [label_title(int(p), q.item()) for p, q in zip(pred, conf)]
    n = len(imgs)
    return [{"kind": kind, "class_a": a, "class_b": b, "step": i, "t": i / (n - 1) if n > 1 else 0.0,
             "pred": int(pred[i]), "conf": conf[i].item(), "p_a": probs[i, a].item(), "p_b": probs[i, b].item()}
            for i in range(n)]


def _path_curves(points: list[dict], space: str) -> Figure:
    """Evaluator probability of the start class (solid) and the end class (dashed) along each path."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    for i, (a, b) in enumerate(dict.fromkeys((r["class_a"], r["class_b"]) for r in points)):
        path = [r for r in points if (r["class_a"], r["class_b"]) == (a, b)]
        t = [r["t"] for r in path]
        ax.plot(t, [r["p_a"] for r in path], color=f"C{i}", label=f"{a} -> {b}")
        ax.plot(t, [r["p_b"] for r in path], color=f"C{i}", ls="--")
    ax.set_xlabel("t (0: start class, 1: end class)")
    ax.set_ylabel("evaluator probability")
    ax.set_title(f"Between-class paths ({space}): p(start) solid, p(end) dashed", fontsize=9)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class NoiseKind:
    """How a noise part names its table, column, metrics and figures."""

    table: str = "noise"        # table name
    scale: str = "sigma"        # column of the scale
    tag: str = "s"              # metric suffix before the scale
    suffix: str = ""            # after the space in metric and figure names
    label: str = "sigma * N(0, I)"
    row: str = "sigma"          # row label before the scale in the grid


GAUSSIAN = NoiseKind()
UNIFORM = NoiseKind("noise_uniform", "amplitude", "a", "_uniform", "U(-a, a)", "a =")


def _noise_part(run: LoadedRun, res: AnalysisResult, space: str, centers: torch.Tensor, usable: torch.Tensor,
                eps: torch.Tensor, opts: Options, kind: NoiseKind = GAUSSIAN) -> None:
    """Rows, metrics and a grid for scale * eps added to each class's center (`space`: latent/embedding).

    The same eps for every scale (common random numbers), so the curves are smooth in the scale.
    Gaussian: eps ~ N(0, I), scales SIGMAS; uniform: eps ~ U(-1, 1), scales `opts.uniform_amplitudes`.
    """
    C, k = run.num_classes, opts.noise_samples
    classes = usable.nonzero().flatten().tolist()
    labels = torch.arange(C, device=run.device).repeat_interleave(k)
    keep = usable.to(run.device).repeat_interleave(k)
    grid, rows_labels = [], []
    table = res.tables.setdefault(kind.table, [])
    name = f"{space}{kind.suffix}"
    for sigma in (SIGMAS if kind is GAUSSIAN else opts.uniform_amplitudes):
        shifted = centers.repeat_interleave(k, dim=0) + sigma * eps
        if space == "latent":
            imgs = generate(run.gan.generator, shifted[keep], labels[keep] if run.gan.conditional else None)
        else:  # z = 0: the mean latent vector, with a noisy label embedding
            imgs = generate_from_embedding(run.gan.generator, torch.zeros(int(keep.sum()), run.latent_dim,
                                                                          device=run.device), shifted[keep])
        probs, pred, conf = classify(run, imgs)
        target = labels[keep].cpu()
        hit = pred == target
        for c in classes:
            m = target == c
            table.append({"space": space, kind.scale: sigma, "class": c, "n": int(m.sum()),
                          "label_rate": hit[m].double().mean().item(), "mean_conf": conf[m].mean().item(),
                          "mean_p_intended": probs[m, c].mean().item()})
        table.append({"space": space, kind.scale: sigma, "class": "all", "n": len(target),
                      "label_rate": hit.double().mean().item(), "mean_conf": conf.mean().item(),
                      "mean_p_intended": probs[torch.arange(len(target)), target].mean().item()})
        res.metrics[f"noise_{name}_label_rate_{kind.tag}{sigma}"] = hit.double().mean().item()
        res.metrics[f"noise_{name}_mean_conf_{kind.tag}{sigma}"] = conf.mean().item()
        per_class = imgs.view(len(classes), k, *imgs.shape[1:])[:, :GRID_PER_CLASS]
        grid.append(per_class.reshape(-1, *imgs.shape[1:]))
        rows_labels.append(f"{kind.row} {sigma}")
    center = "z = 0 (label embedding of c + noise)" if space == "embedding" else (
        "z = 0 + noise, label c" if run.gan.conditional else "class-mean latent vector + noise")
    n_cols = len(classes) * min(GRID_PER_CLASS, k)
    res.figures[f"noise_{name}"] = image_grid(
        torch.cat(grid), n_cols, row_labels=rows_labels,
        col_labels=[str(c) for c in classes for _ in range(min(GRID_PER_CLASS, k))],
        suptitle=f"Noise {kind.label} on the {space}: {center}")
    res.figures[f"noise_{name}_curves"] = _noise_curves(table, space, kind)


def _noise_curves(rows: list[dict], space: str, kind: NoiseKind = GAUSSIAN) -> Figure:
    fig = Figure(figsize=(8, 3.2))
    for i, key in enumerate(("label_rate", "mean_conf")):
        ax = fig.add_subplot(1, 2, i + 1)
        mine = [r for r in rows if r["space"] == space]
        for c in dict.fromkeys(r["class"] for r in mine):
            pts = [(r[kind.scale], r[key]) for r in mine if r["class"] == c]
            ax.plot(*zip(*pts), marker="o", lw=2.5 if c == "all" else 0.8, color="k" if c == "all" else None,
                    label=str(c))
        ax.set_xlabel(kind.scale)
        ax.set_title(f"{key.replace('_', ' ')} ({space} noise, {kind.label})")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2, title="class", title_fontsize=6)
    fig.tight_layout()
    return fig
