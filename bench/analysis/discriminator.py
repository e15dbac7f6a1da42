"""`gan-bench analyze discriminator`: where the discriminator is biased, class by class (report 003 2.2).

Per class c, D judges `n` generated images and `n` real test images of c (logit > 0 means
"real"):

* generated: conditional models, G(z, c) given to D with label c; unconditional models, images
  the evaluator labels c (generated until each class has n or a budget of 4 * n * C draws is
  spent; a mode-collapsed class gets fewer, and its count says so);
* real: the first n test images of class c (with label c for a conditional D).

Per class: D's accuracy on real and on generated images, the share it calls real on each, false
positives (generated called real) and false negatives (real called generated), mean D(x); a table
(rows per class and "all") and a grouped bar chart. Both nets are in eval mode (no dropout).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from matplotlib.figure import Figure

from bench.analysis.common import BATCH, AnalysisResult, LoadedRun, generate, noise
from bench.data import normalize
from bench.models import as_trained

NAME = "discriminator"
DRAW_BUDGET = 4  # unconditional: at most DRAW_BUDGET * n * C generated images to fill the classes


@dataclass
class Options:
    seed: int = 0
    n: int = 500  # generated and real images per class


# ---------------------------------------------------------------------------
# Pure maths


def class_table(real_logits: torch.Tensor, real_labels: torch.Tensor, fake_logits: torch.Tensor,
                fake_labels: torch.Tensor, num_classes: int) -> list[dict]:
    """Per class and overall ("all"): D's verdicts on real and generated images (logit > 0: real)."""
    rows = []
    groups = [(c, real_labels == c, fake_labels == c) for c in range(num_classes)]
    groups.append(("all", torch.ones_like(real_labels, dtype=torch.bool), torch.ones_like(fake_labels, dtype=torch.bool)))
    for c, rm, fm in groups:
        real_called_real = (real_logits[rm] > 0).double()
        fake_called_real = (fake_logits[fm] > 0).double()
        n_real, n_fake = int(rm.sum()), int(fm.sum())
        fn, fp = n_real - int(real_called_real.sum()), int(fake_called_real.sum())
        rows.append({
            "class": c, "n_real": n_real, "n_fake": n_fake,
            "acc_real": real_called_real.mean().item() if n_real else float("nan"),
            "acc_fake": 1 - fake_called_real.mean().item() if n_fake else float("nan"),
            "acc": (n_real - fn + n_fake - fp) / (n_real + n_fake) if n_real + n_fake else float("nan"),
            "real_share_on_real": real_called_real.mean().item() if n_real else float("nan"),
            "real_share_on_fake": fake_called_real.mean().item() if n_fake else float("nan"),
            "false_positives": fp, "false_negatives": fn,
            "fp_rate": fp / n_fake if n_fake else float("nan"),
            "fn_rate": fn / n_real if n_real else float("nan"),
            "mean_d_real": torch.sigmoid(real_logits[rm].double()).mean().item() if n_real else float("nan"),
            "mean_d_fake": torch.sigmoid(fake_logits[fm].double()).mean().item() if n_fake else float("nan"),
        })
    return rows


# ---------------------------------------------------------------------------
# The analysis


@torch.inference_mode()
def judge(D, images: torch.Tensor, labels: torch.Tensor | None, seed: int = 0) -> torch.Tensor:
    """D's logits as training sees it (dropout on: see `models.as_trained`)."""
    with as_trained(D, seed):
        return torch.cat([D(images[i:i + BATCH], None if labels is None else labels[i:i + BATCH])
                          for i in range(0, len(images), BATCH)]).float().cpu()


def real_per_class(run: LoadedRun, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n test images of each class (fewer if the class has fewer), normalized."""
    test = run.ctx.test
    idx = torch.cat([(test.labels == c).nonzero().flatten()[:n] for c in range(run.num_classes)])
    return normalize(test.images[idx]), test.labels[idx]


def fakes_per_class(run: LoadedRun, n: int, gen: torch.Generator, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """n generated images per class: conditional, by label; unconditional, by the evaluator's label."""
    C, G = run.num_classes, run.gan.generator
    if run.gan.conditional:
        labels = torch.arange(C, device=run.device).repeat_interleave(n)
        z = noise(C * n, run.latent_dim, gen, run.device, run.latent_prior)
        return generate(G, z, labels, progress, "fakes"), labels
    kept_x, kept_y, have = [], [], torch.zeros(C, dtype=torch.long)
    for _ in range(DRAW_BUDGET):
        x = generate(G, noise(C * n, run.latent_dim, gen, run.device, run.latent_prior), None, progress, "fakes")
        pred = run.ctx.evaluator(x)[0].argmax(1).cpu()
        for c in range(C):
            take = (pred == c).nonzero().flatten()[: n - int(have[c])]
            kept_x.append(x[take.to(x.device)])
            kept_y.append(torch.full((len(take),), c, dtype=torch.long))
            have[c] += len(take)
        if (have >= n).all():
            break
    return torch.cat(kept_x), torch.cat(kept_y).to(run.device)


def analyze(run: LoadedRun, opts: Options, progress: bool = True) -> AnalysisResult:
    res = AnalysisResult(NAME, options=asdict(opts))
    gen = torch.Generator().manual_seed(opts.seed)
    D, cond = run.gan.discriminator, run.gan.conditional
    real_x, real_y = real_per_class(run, opts.n)
    fake_x, fake_y = fakes_per_class(run, opts.n, gen, progress)
    if not cond:
        res.notes.append("unconditional model: generated images are grouped by the evaluator's label")
    rows = class_table(judge(D, real_x, real_y if cond else None, opts.seed), real_y.cpu(),
                       judge(D, fake_x, fake_y if cond else None, opts.seed), fake_y.cpu(), run.num_classes)
    short = [r["class"] for r in rows[:-1] if r["n_fake"] < opts.n]
    if short:
        res.notes.append(f"classes with fewer than {opts.n} generated images: {short} (see n_fake)")
    res.tables["per_class"] = rows
    overall = rows[-1]
    for key in ("acc", "acc_real", "acc_fake", "fp_rate", "fn_rate", "mean_d_real", "mean_d_fake"):
        res.metrics[key] = overall[key]
    for r in rows[:-1]:
        res.metrics[f"acc_real_{r['class']}"] = r["acc_real"]
        res.metrics[f"acc_fake_{r['class']}"] = r["acc_fake"]
    per_class = rows[:-1]
    for key in ("acc_real", "acc_fake"):
        values = np.array([r[key] for r in per_class], dtype=float)
        if np.isfinite(values).any():
            res.metrics[f"{key}_spread"] = float(np.nanmax(values) - np.nanmin(values))
    res.figures["per_class"] = bar_chart(rows, run.cfg.model.name)
    return res


def bar_chart(rows: list[dict], model: str) -> Figure:
    """Grouped bars per class: accuracy on real vs generated; false negatives vs false positives."""
    labels = [str(r["class"]) for r in rows]
    x = np.arange(len(rows))
    w = 0.38
    fig = Figure(figsize=(9, 5.5))
    panels = (("acc_real", "real called real (acc on real)", "acc_fake", "generated called generated (acc on generated)",
               "Discriminator accuracy per class"),
              ("fn_rate", "false negatives: real called generated", "fp_rate", "false positives: generated called real",
               "Errors per class"))
    for i, (k1, l1, k2, l2, title) in enumerate(panels):
        ax = fig.add_subplot(2, 1, i + 1)
        ax.bar(x - w / 2, [r[k1] for r in rows], w, label=l1, color="tab:blue")
        ax.bar(x + w / 2, [r[k2] for r in rows], w, label=l2, color="tab:orange")
        ax.set_xticks(x, labels)
        ax.set_ylim(0, 1.3)
        ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.set_title(f"{title} ({model})", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", ncol=2, frameon=False)
    ax.set_xlabel("class")
    fig.tight_layout()
    return fig
