"""Pictures of one run: its curves (matplotlib `Figure` objects, no pyplot global state) and grids of its
generated images."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure

from bench.metrics import registry
from bench.train import History


def _lines(title: str, x: list, series: dict[str, list[float]], xlabel: str) -> Figure:
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    for label, ys in series.items():
        ax.plot(x, ys, label=label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    # Fixed margins: tight_layout draws every figure an extra time, about a third of a tiny run's logging.
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.14, top=0.91)
    return fig


def curves_figure(history: History) -> dict[str, Figure]:
    """Loss, D output and D accuracy curves over steps; eval metrics over epochs."""
    t, s = history.train, history.steps
    figs = {
        "losses": _lines("Losses", s, {"D": t["loss_d"], "G": t["loss_g"]}, "step"),
        "d_outputs": _lines("Discriminator outputs", s, {"D(x)": t["d_real"], "D(G(z))": t["d_fake"]}, "step"),
        "d_accuracy": _lines("Discriminator accuracy (train batches)", s,
                             {"real": t["d_acc_real"], "fake": t["d_acc_fake"]}, "step"),
    }
    main = {m.name: m.label for m in registry.curves() if m.name in history.eval}
    if history.epochs and main:
        ncols = min(4, len(main))
        nrows = -(-len(main) // ncols)
        fig = Figure(figsize=(3.2 * ncols, 3 * nrows))
        for i, (k, title) in enumerate(main.items()):
            ax = fig.add_subplot(nrows, ncols, i + 1)
            ax.plot(history.epochs, history.eval[k], marker="o")
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        fig.subplots_adjust(left=0.06 + 0.04 / ncols, right=0.98, bottom=0.5 / (3 * nrows) + 0.06,
                            top=1 - 0.4 / (3 * nrows), wspace=0.3, hspace=0.45)
        figs["eval"] = fig
    return figs


def image_grid(images: torch.Tensor, columns: int, padding: int = 2) -> torch.Tensor:
    """Images in [-1, 1] (N, C, H, W) as one RGB grid in [0, 1], `columns` per row with `padding` black pixels
    around each: what `torchvision.utils.make_grid(images, nrow=columns, normalize=True, value_range=(-1, 1),
    padding=padding)` gives. Written here because importing `torchvision.utils` loads torch's compiler
    (`torch._dynamo`), two seconds more for every command and worker that logs a sample."""
    x = (images.clamp(-1, 1) + 1) / 2
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    n, c, h, w = x.shape
    if n == 1:
        return x[0]
    cols = min(columns, n)
    rows = -(-n // cols)
    grid = x.new_zeros(c, rows * (h + padding) + padding, cols * (w + padding) + padding)
    for i in range(n):
        top, left = (i // cols) * (h + padding) + padding, (i % cols) * (w + padding) + padding
        grid[:, top:top + h, left:left + w] = x[i]
    return grid
