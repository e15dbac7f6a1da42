"""`gan-bench analyze features`: real vs generated digits in the evaluator's feature space (report 001).

`n` real test digits (class-balanced) and `n` generated ones (conditional models: labels
0, 1, ..., 9, 0, ...; unconditional: the evaluator's labels) go through the evaluator; its
penultimate features (the ones FID uses) are projected to 2-D by PCA and by t-SNE, each fitted
once on real and generated together, so the two sides of a figure share their axes. The figure
shows PCA (top) and t-SNE (bottom), real (left) beside generated (right), coloured by class.

Numbers: PCA's explained variance, the class silhouette of the features (how well the classes
separate) for real and for generated digits, and a k-NN real-vs-generated score: the share of
images whose k nearest neighbours (themselves excluded) are mostly of their own kind (0.5: the
two sets are mixed, 1.0: fully apart). Table `coordinates`: one row per image (source, label,
pca_1, pca_2, tsne_1, tsne_2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from bench.analysis.common import AnalysisResult, LoadedRun, balanced, generate, noise

NAME = "features"
KNN = 5
EXACT_TSNE = 500  # up to this many points, exact t-SNE (Barnes-Hut's thread start-up costs more than it saves)


@dataclass
class Options:
    seed: int = 0
    n: int = 2_000             # real and generated images each
    perplexity: float = 30.0   # t-SNE perplexity (lowered to (2n - 1) / 3 for tiny n)
    tsne_iter: int = 1_000     # t-SNE optimisation steps


# ---------------------------------------------------------------------------
# Pure maths


def embed(features: np.ndarray, seed: int, perplexity: float, tsne_iter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(PCA coordinates (N, 2), t-SNE coordinates (N, 2), PCA's explained variance ratio (2,))."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    pca = PCA(n_components=2, random_state=seed).fit(features)
    method = "exact" if len(features) <= EXACT_TSNE else "barnes_hut"
    tsne = TSNE(n_components=2, perplexity=perplexity, max_iter=tsne_iter, init="pca", random_state=seed,
                method=method)
    return pca.transform(features), tsne.fit_transform(features), pca.explained_variance_ratio_


def usable_perplexity(perplexity: float, n: int) -> float:
    """t-SNE needs perplexity < n samples; keep about 3 perplexities of neighbours."""
    return min(perplexity, max(1.0, (n - 1) / 3))


def knn_separation(features: np.ndarray, is_generated: np.ndarray, k: int = KNN) -> float:
    """Share of points whose k nearest neighbours (self excluded) are mostly of their own kind."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(features) - 1)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(features).kneighbors(features)
    same = (is_generated[idx[:, 1:]] == is_generated[:, None]).mean(axis=1)
    return float((same > 0.5).mean())


def silhouette(features: np.ndarray, labels: np.ndarray) -> float:
    """Class silhouette in [-1, 1]; NaN when fewer than 2 classes are present."""
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(features, labels)) if 2 <= len(set(labels.tolist())) < len(labels) else float("nan")


# ---------------------------------------------------------------------------
# The analysis


@torch.inference_mode()
def inputs(run: LoadedRun, n: int, gen: torch.Generator, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"real": (features, labels), "generated": (features, labels)} from the evaluator."""
    real = balanced(run.ctx.test, n, seed, "n")
    real_x, real_y = real.head(len(real))
    y = torch.arange(n, device=run.device) % run.num_classes if run.gan.conditional else None
    fake_x = generate(run.gan.generator, noise(n, run.latent_dim, gen, run.device), y)
    real_p, real_f = run.ctx.evaluator(real_x)
    fake_p, fake_f = run.ctx.evaluator(fake_x)
    fake_y = y if y is not None else fake_p.argmax(1)
    return {"real": (real_f.double().cpu(), real_y.cpu()), "generated": (fake_f.double().cpu(), fake_y.cpu())}


def analyze(run: LoadedRun, opts: Options, progress: bool = True) -> AnalysisResult:
    res = AnalysisResult(NAME, options=asdict(opts))
    gen = torch.Generator().manual_seed(opts.seed)
    data = inputs(run, opts.n, gen, opts.seed)
    if not run.gan.conditional:
        res.notes.append("unconditional model: generated images are coloured by the evaluator's label")
    feats = torch.cat([data["real"][0], data["generated"][0]]).numpy()
    labels = torch.cat([data["real"][1], data["generated"][1]]).numpy()
    source = np.array(["real"] * len(data["real"][0]) + ["generated"] * len(data["generated"][0]))
    perplexity = usable_perplexity(opts.perplexity, len(feats))
    if perplexity != opts.perplexity:
        res.notes.append(f"t-SNE perplexity lowered from {opts.perplexity} to {perplexity:.1f} for {len(feats)} points")
    pca, tsne, explained = embed(feats, opts.seed, perplexity, opts.tsne_iter)
    res.tables["coordinates"] = [
        {"source": source[i], "label": int(labels[i]), "pca_1": float(pca[i, 0]), "pca_2": float(pca[i, 1]),
         "tsne_1": float(tsne[i, 0]), "tsne_2": float(tsne[i, 1])} for i in range(len(feats))]
    res.metrics["pca_explained_1"], res.metrics["pca_explained_2"] = (float(v) for v in explained)
    for kind in ("real", "generated"):
        m = source == kind
        res.metrics[f"silhouette_{kind}"] = silhouette(feats[m], labels[m])
    res.metrics["knn_separation"] = knn_separation(feats, source == "generated")
    res.figures["embedding"] = scatter(pca, tsne, labels, source, explained, run.cfg.model.name, run.num_classes)
    return res


def scatter(pca: np.ndarray, tsne: np.ndarray, labels: np.ndarray, source: np.ndarray, explained: np.ndarray,
            model: str, num_classes: int) -> Figure:
    """2 x 2 scatter: PCA (top) and t-SNE (bottom) of real (left) and generated (right), coloured by class."""
    fig = Figure(figsize=(9, 8.5))
    axes = fig.subplots(2, 2, sharex="row", sharey="row")
    cmap = matplotlib.colormaps["tab10"]
    for r, (coords, method) in enumerate(((pca, f"PCA ({explained.sum():.0%} of the variance)"), (tsne, "t-SNE"))):
        for c, kind in enumerate(("real", "generated")):
            ax = axes[r, c]
            m = source == kind
            for k in range(num_classes):
                sel = m & (labels == k)
                ax.scatter(coords[sel, 0], coords[sel, 1], s=4, color=cmap(k % 10), label=str(k), alpha=0.7,
                           linewidths=0)
            ax.set_title(f"{method}: {kind} ({int(m.sum())})", fontsize=9)
            ax.tick_params(labelsize=7)
    axes[0, 1].legend(fontsize=7, markerscale=3, title="class", title_fontsize=7, loc="upper right", ncol=2)
    fig.suptitle(f"Evaluator features of real vs generated digits ({model}); one fit per method on both sets",
                 fontsize=10)
    fig.tight_layout()
    return fig
