"""Curve plots of one run (matplotlib `Figure` objects, no pyplot global state)."""

from __future__ import annotations

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
    fig.tight_layout()
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
        fig.tight_layout()
        figs["eval"] = fig
    return figs
