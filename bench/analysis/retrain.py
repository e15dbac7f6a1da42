"""`gan-bench analyze retrain`: are the generated digits good enough to train a classifier? (reports 001, 002 3)

The evaluator's architecture (LeNet) and recipe (`evaluator.train_classifier`: Adam, cosine
schedule) is trained from scratch on each training set below, and scored on the real test split:

* mix/genP: N images, P% generated and the rest real, P in 0/10/20/50/100 (N = the real set's
  size; mix/gen0 is the real-only baseline, mix/gen100 the Classification Accuracy Score, CAS);
* add/genP: the full real set plus P% (of N) generated images, P in 10/20/50;
* gen_then_real/ftP: the mix/gen100 classifier fine-tuned on P% of the real set (10/20/50/100);
  real_then_gen: the mix/gen0 classifier fine-tuned on N generated images;
* filtered/confT: N generated images kept only when the evaluator gives the intended label a
  probability >= T (0.98 / 0.99); drawn until each class is full or `max_draws` rounds are spent;
* few/real: `few_per_class` (55) real images per class alone; few/real_and_gen: with
  `few_generated` generated images; few/real_and_gen_then_real: that one fine-tuned on the few real.

Generated images are quantized to uint8 like the real ones; conditional models give balanced
labels (0, 1, ..., 9, 0, ... so every prefix is balanced), unconditional models' images are
labelled by the evaluator (pseudo-labels: the rows then measure the evaluator's labels too).
Real subsets are prefixes of one seeded permutation (10% is inside 20%, ...). Every training runs
max(`epochs`, enough epochs for `min_steps` steps), so tiny sets are not under-trained; fine-tuning
runs `finetune_epochs` (same rule) at `finetune_lr`. Same seed, same numbers.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from bench.progress import bar as progress_bar

from bench.analysis.common import AnalysisResult, LoadedRun, generate, noise
from bench.cli import InputError
from bench.data import DeviceDataset
from bench.evaluator import EVAL_BATCH, train_classifier
from bench.models import LeNet

NAME = "retrain"
MIX = (0, 10, 20, 50, 100)            # % generated at the same total size
ADD = (10, 20, 50)                    # % generated added to the full real set
FINETUNE_REAL = (10, 20, 50, 100)     # % of the real set the generated-only classifier is fine-tuned on
CONFIDENCE = (0.98, 0.99)             # evaluator probability a kept generated image must reach


@dataclass
class Options:
    seed: int = 0
    real_size: int | None = None      # real training images (class-balanced subset); None: the whole split
    epochs: int = 5
    finetune_epochs: int = 2
    min_steps: int = 500              # every training runs at least this many steps
    batch_size: int = 128
    lr: float = 1e-3
    finetune_lr: float = 1e-4
    few_per_class: int = 55
    few_generated: int | None = None  # generated images added to the few real ones; None: N
    max_draws: int = 20               # rounds of N generated images for the filtered sets
    n_test: int | None = None         # real test images scored; None: the whole test split


def row_names() -> list[str]:
    """Every row of the matrix, in order."""
    return ([f"mix/gen{p}" for p in MIX] + [f"add/gen{p}" for p in ADD]
            + [f"gen_then_real/ft{p}" for p in FINETUNE_REAL] + ["real_then_gen"]
            + [f"filtered/conf{t}" for t in CONFIDENCE] + ["few/real", "few/real_and_gen", "few/real_and_gen_then_real"])


# ---------------------------------------------------------------------------
# Pure helpers


def share(n: int, percent: float) -> int:
    return int(round(n * percent / 100))


def epochs_for(n: int, batch_size: int, epochs: int, min_steps: int) -> int:
    """At least `epochs`, and enough epochs for `min_steps` steps of full batches."""
    per_epoch = max(1, n // min(batch_size, n))
    return max(epochs, math.ceil(min_steps / per_epoch))


def concat(*parts: DeviceDataset) -> DeviceDataset:
    parts = [p for p in parts if len(p)]
    return DeviceDataset(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]),
                         parts[0].device, parts[0].num_classes)


def prefix(data: DeviceDataset, n: int) -> DeviceDataset:
    return DeviceDataset(data.images[:n], data.labels[:n], data.device, data.num_classes)


def balanced(data: DeviceDataset, n: int, seed: int, option: str) -> DeviceDataset:
    """A class-balanced subset; a size the classes cannot fill is an input error naming the option."""
    try:
        return data.subset(n, seed=seed)
    except ValueError as e:
        raise InputError(f"{option}: {e}") from None


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats (B, 1, 28, 28) -> uint8 (B, 28, 28), the inverse of data.normalize."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0]


# ---------------------------------------------------------------------------
# Training and scoring


@torch.inference_mode()
def test_accuracy(net: LeNet, images: torch.Tensor, labels: torch.Tensor) -> float:
    net.eval()
    pred = torch.cat([net(images[i:i + EVAL_BATCH]).argmax(1) for i in range(0, len(images), EVAL_BATCH)])
    return (pred == labels).double().mean().item()


class Matrix:
    """Trains and scores the rows; keeps what each row was trained on."""

    def __init__(self, opts: Options, test_images: torch.Tensor, test_labels: torch.Tensor, bar):
        self.opts, self.test = opts, (test_images, test_labels)
        self.rows: list[dict] = []
        self.bar = bar

    def scratch(self, name: str, data: DeviceDataset, n_real: int, n_gen: int, note: str = "") -> LeNet:
        o = self.opts
        epochs = epochs_for(len(data), o.batch_size, o.epochs, o.min_steps)
        bs = min(o.batch_size, len(data))
        net = train_classifier(data, epochs, seed=o.seed, progress=False, batch_size=bs, lr=o.lr)
        self._record(name, net, n_real, n_gen, epochs, epochs * (len(data) // bs), "", 0, note)
        return net

    def finetune(self, name: str, base: LeNet, data: DeviceDataset, on: str, n_real: int, n_gen: int) -> LeNet:
        o = self.opts
        epochs = epochs_for(len(data), o.batch_size, o.finetune_epochs, o.min_steps)
        bs = min(o.batch_size, len(data))
        net = train_classifier(data, epochs, seed=o.seed, progress=False, batch_size=o.batch_size,
                               lr=o.finetune_lr, net=copy.deepcopy(base))
        self._record(name, net, n_real, n_gen, epochs, epochs * (len(data) // bs), on, len(data))
        return net

    def skip(self, name: str, note: str) -> None:
        """A row with nothing to train on: kept in the matrix, test_acc NaN (null in the tables)."""
        self._record(name, None, 0, 0, 0, 0, "", 0, note)

    def _record(self, name, net, n_real, n_gen, epochs, steps, finetune_on, finetune_n, note="") -> None:
        acc = math.nan if net is None else test_accuracy(net, *self.test)
        self.rows.append({"name": name, "group": name.split("/")[0], "real": n_real, "generated": n_gen,
                          "finetune_on": finetune_on, "finetune_n": finetune_n, "epochs": epochs,
                          "steps": steps, "test_acc": acc, "note": note})
        self.bar.set_postfix_str(f"{name}: {acc:.4f}")
        self.bar.update()


# ---------------------------------------------------------------------------
# Generated training sets


@torch.inference_mode()
def generated_set(run: LoadedRun, n: int, gen: torch.Generator, progress: bool = False
                  ) -> tuple[DeviceDataset, torch.Tensor]:
    """(n generated images as a uint8 DeviceDataset, the evaluator's probability of each one's label)."""
    C = run.num_classes
    z = noise(n, run.latent_dim, gen, run.device, run.latent_prior)
    y = torch.arange(n, device=run.device) % C if run.gan.conditional else None
    images = generate(run.gan.generator, z, y, progress, "generated set")
    probs, _ = run.ctx.evaluator(images)
    labels = probs.argmax(1) if y is None else y
    p_label = probs.gather(1, labels.unsqueeze(1)).squeeze(1)
    return DeviceDataset(to_uint8(images), labels, run.device, C), p_label


def filtered_set(run: LoadedRun, n: int, threshold: float, max_draws: int, gen: torch.Generator
                 ) -> tuple[DeviceDataset, int, list[int]]:
    """Up to n generated images whose label has evaluator probability >= threshold, n/C per class.

    Returns the set (balanced by interleaving classes), the number of images drawn, and how many
    each class got (a class the generator rarely gets right can stay short).
    """
    C = run.num_classes
    per_class = math.ceil(n / C)
    kept: list[list[torch.Tensor]] = [[] for _ in range(C)]
    have = [0] * C
    drawn = 0
    for _ in range(max_draws):
        data, p = generated_set(run, n, gen)
        drawn += n
        ok = p >= threshold
        for c in range(C):
            idx = ((data.labels == c) & ok).nonzero().flatten()[: per_class - have[c]]
            kept[c].append(data.images[idx])
            have[c] += len(idx)
        if min(have) >= per_class:
            break
    images = torch.cat([torch.cat(k) for k in kept])
    labels = torch.cat([torch.full((h,), c, dtype=torch.long) for c, h in enumerate(have)]).to(run.device)
    rank = torch.cat([torch.arange(h) for h in have]).to(run.device)
    order = (rank * C + labels).argsort()[:n]  # classes interleaved (0, 1, ..., 9, 0, ...): prefixes balanced
    images, labels = images[order], labels[order]
    return DeviceDataset(images, labels, run.device, C), drawn, have


# ---------------------------------------------------------------------------
# The analysis


def analyze(run: LoadedRun, opts: Options, progress: bool = True) -> AnalysisResult:
    res = AnalysisResult(NAME, options=asdict(opts))
    gen = torch.Generator().manual_seed(opts.seed)
    C = run.num_classes
    if not run.gan.conditional:
        res.notes.append("unconditional model: generated images are labelled by the evaluator (pseudo-labels)")

    real_all = run.ctx.train_full
    if opts.real_size is not None and opts.real_size < len(real_all):
        real_all = balanced(real_all, opts.real_size, opts.seed, "--real-size")
    few = balanced(real_all, opts.few_per_class * C, opts.seed, "--few-per-class")  # fail early
    perm = torch.randperm(len(real_all), generator=gen).to(real_all.device)
    real = DeviceDataset(real_all.images[perm], real_all.labels[perm], real_all.device, C)  # shuffled once
    N = len(real)
    n_few_gen = opts.few_generated if opts.few_generated is not None else N
    pool, _ = generated_set(run, max(N, n_few_gen), gen, progress)

    test = run.ctx.test
    n_test = len(test) if opts.n_test is None else min(opts.n_test, len(test))
    test_images, test_labels = test.head(n_test)
    bar = progress_bar(total=len(row_names()), desc="retrain", unit="row", enabled=progress)
    m = Matrix(opts, test_images, test_labels, bar)

    # 1. Same total size N, P% generated
    nets = {}
    for p in MIX:
        n_gen = share(N, p)
        nets[p] = m.scratch(f"mix/gen{p}", concat(prefix(real, N - n_gen), prefix(pool, n_gen)), N - n_gen, n_gen)
    # 2. All the real images plus P% generated
    for p in ADD:
        n_gen = share(N, p)
        m.scratch(f"add/gen{p}", concat(real, prefix(pool, n_gen)), N, n_gen)
    # 3. Pre-train on one kind, fine-tune on the other
    for p in FINETUNE_REAL:
        n_real = max(1, share(N, p))
        m.finetune(f"gen_then_real/ft{p}", nets[100], prefix(real, n_real), "real", n_real, N)
    m.finetune("real_then_gen", nets[0], prefix(pool, N), "generated", N, N)
    # 4. Only generated images the evaluator is sure of
    for t in CONFIDENCE:
        data, drawn, per_class = filtered_set(run, N, t, opts.max_draws, gen)
        note = f"kept {len(data)} of {drawn} drawn; per class {per_class}"
        if len(data) < N:
            res.notes.append(f"filtered/conf{t}: only {len(data)} of {N} images reached {t} in {drawn} drawn "
                             f"(per class {per_class})")
        if len(data):
            m.scratch(f"filtered/conf{t}", data, 0, len(data), note)
        else:
            m.skip(f"filtered/conf{t}", note + "; nothing to train on: test_acc is null")
    # 5. Few real images, alone and with many generated ones
    m.scratch("few/real", few, len(few), 0)
    both = m.scratch("few/real_and_gen", concat(few, prefix(pool, n_few_gen)), len(few), n_few_gen)
    m.finetune("few/real_and_gen_then_real", both, few, "real", len(few), n_few_gen)
    bar.close()

    rows = m.rows
    res.tables["matrix"] = rows
    for r in rows:
        res.metrics[f"{r['name']}/test_acc"] = r["test_acc"]
    by_name = {r["name"]: r["test_acc"] for r in rows}
    res.metrics["real_only"] = by_name["mix/gen0"]
    res.metrics["cas"] = by_name["mix/gen100"]
    res.metrics["cas_ratio"] = by_name["mix/gen100"] / by_name["mix/gen0"] if by_name["mix/gen0"] else math.nan
    res.figures["matrix"] = matrix_chart(rows, N, n_test, run.cfg.model.name)
    return res


def matrix_chart(rows: list[dict], n: int, n_test: int, model: str) -> Figure:
    """Horizontal bars: test accuracy of every row, coloured by group, the real-only baseline dashed."""
    fig = Figure(figsize=(8, 0.32 * len(rows) + 1.4))
    ax = fig.add_subplot()
    groups = list(dict.fromkeys(r["group"] for r in rows))
    colors = {g: f"C{i}" for i, g in enumerate(groups)}
    y = np.arange(len(rows))[::-1]
    acc = np.array([r["test_acc"] for r in rows], dtype=float)
    ax.barh(y, np.nan_to_num(acc), color=[colors[r["group"]] for r in rows])
    for yi, a in zip(y, acc):
        ax.text((0 if np.isnan(a) else a) + 0.005, yi, "n/a" if np.isnan(a) else f"{a:.4f}", va="center", fontsize=7)
    ax.set_yticks(y, [r["name"] for r in rows], fontsize=8)
    base = rows[0]["test_acc"]
    if np.isfinite(base):
        ax.axvline(base, ls="--", color="k", lw=0.8, label=f"real only ({base:.4f})")
        ax.legend(fontsize=7, loc="lower left")
    ax.set_xlim(0, 1.08)
    ax.set_xlabel(f"test accuracy on {n_test} real test images")
    ax.set_title(f"Classifiers trained with generated digits ({model}; N = {n} real)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
