"""`gan-bench analyze retrain`: are the generated digits good enough to train a classifier? (reports 001, 002 3)

The evaluator's architecture (LeNet) and recipe (`evaluator.train_classifier`: Adam, cosine
schedule) is trained from scratch on each training set below, and scored on the real test split:

* mix/genP: N images, P% generated and the rest real, P in 0/10/20/30/50/100 (N = the real set's
  size; mix/gen0 is the real-only baseline, mix/gen100 the Classification Accuracy Score, CAS;
  report 002 Table 4, report 001's fixed total with its 30% optimum: `--real-size 55000`);
* add/genP: the full real set plus P% (of N) generated images, P in 10/20/30/50 (report 001);
* gen_then_real/ftP: the mix/gen100 classifier fine-tuned on P% of the real set, P in
  10/20/50/100 (report 002 Table 5: `--epochs 7 --finetune-epochs 3`);
* real_then_gen/ftP: the mix/gen0 classifier fine-tuned on P% (of N) generated images, P in 50/100
  (report 002 Table 6: `--epochs 5 --finetune-epochs 5`);
* filtered/confT: N generated images kept only when the evaluator gives the intended label a
  probability >= T (0.98 / 0.99); drawn until each class is full or `max_draws` rounds are spent
  (report 002 Table 7);
* few/real: `few_per_class` (55) real images per class alone; few/gen_then_real: the mix/gen100
  classifier fine-tuned on them (report 001's "generated pre-training, then fine-tune on the 550
  real"); few/real_and_gen: the few real with `few_generated` generated images;
  few/real_and_gen_then_real: that one fine-tuned on the few real;
* curves (report 002 Fig 15): classifiers trained `curve_epochs` (50) epochs on N real, N
  generated and N mixed (`curve_mix`% generated) images, scored on the test images after every
  epoch (table `curves`, figure `curves`, and metric histories `curves/<set>/test_acc`).

`groups` picks which of these run (mix, add, gen_then_real, real_then_gen, filtered, few,
curves); a fine-tuning group also trains, and records, the mix row it starts from.

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

from bench.analysis.common import AnalysisResult, LoadedRun, balanced, generate, noise
from bench.data import DeviceDataset
from bench.evaluator import EVAL_BATCH, train_classifier
from bench.models import LeNet

NAME = "retrain"
MIX = (0, 10, 20, 30, 50, 100)        # % generated at the same total size
ADD = (10, 20, 30, 50)                # % generated added to the full real set
FINETUNE_REAL = (10, 20, 50, 100)     # % of the real set the generated-only classifier is fine-tuned on
FINETUNE_GEN = (50, 100)              # % (of N) generated images the real-only classifier is fine-tuned on
CONFIDENCE = (0.98, 0.99)             # evaluator probability a kept generated image must reach
GROUPS = ("mix", "add", "gen_then_real", "real_then_gen", "filtered", "few", "curves")


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
    curve_epochs: int = 50            # epochs of the validation curves
    curve_mix: int = 50               # % generated in the curves' mixed set
    groups: tuple[str, ...] = GROUPS  # which parts run


def row_names(groups: tuple[str, ...] = GROUPS) -> list[str]:
    """The rows of the matrix the groups make, in order (the curves are a table of their own)."""
    g = set(groups)
    mix = set(MIX) if "mix" in g else set()
    if g & {"gen_then_real", "few"}:
        mix.add(100)  # the generated-only classifier they fine-tune
    if "real_then_gen" in g:
        mix.add(0)
    return ([f"mix/gen{p}" for p in MIX if p in mix] + [f"add/gen{p}" for p in ADD if "add" in g]
            + [f"gen_then_real/ft{p}" for p in FINETUNE_REAL if "gen_then_real" in g]
            + [f"real_then_gen/ft{p}" for p in FINETUNE_GEN if "real_then_gen" in g]
            + [f"filtered/conf{t}" for t in CONFIDENCE if "filtered" in g]
            + (["few/real", "few/gen_then_real", "few/real_and_gen", "few/real_and_gen_then_real"] if "few" in g else []))


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

    def curve(self, name: str, data: DeviceDataset, epochs: int) -> list[dict]:
        """Train from scratch for exactly `epochs` epochs; test accuracy after each one."""
        o = self.opts
        points: list[dict] = []

        def score(epoch: int, net: LeNet) -> None:
            points.append({"set": name, "epoch": epoch, "n": len(data), "test_acc": test_accuracy(net, *self.test)})

        train_classifier(data, epochs, seed=o.seed, progress=False, batch_size=min(o.batch_size, len(data)),
                         lr=o.lr, on_epoch=score)
        self.bar.set_postfix_str(f"curve {name}: {points[-1]['test_acc']:.4f}")
        self.bar.update()
        return points

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
    """The groups `opts.groups` asks for, trained and scored: the matrix (and the curves), with notes."""
    res = AnalysisResult(NAME, options=asdict(opts))
    gen = torch.Generator().manual_seed(opts.seed)
    if not run.gan.conditional:
        res.notes.append("unconditional model: generated images are labelled by the evaluator (pseudo-labels)")
    sets = training_sets(run, opts, gen, progress)
    test = run.ctx.test
    n_test = len(test) if opts.n_test is None else min(opts.n_test, len(test))
    test_images, test_labels = test.head(n_test)
    curves = "curves" in opts.groups
    bar = progress_bar(total=len(row_names(opts.groups)) + 3 * curves, desc="retrain", unit="row", enabled=progress)
    m = Matrix(opts, test_images, test_labels, bar)
    train_rows(m, run, sets, opts, gen, res.notes)
    if curves:
        train_curves(m, sets, opts, res, n_test, run.cfg.model.name)
    bar.close()
    record_rows(res, m.rows, sets.n, n_test, run.cfg.model.name)
    return res


@dataclass
class TrainingSets:
    """The images the rows are trained on: each training set is a prefix of these (or of `mixed`)."""

    real: DeviceDataset  # the real training images, shuffled once (10% is inside 20%, ...)
    pool: DeviceDataset  # generated images, at least N (and at least `n_few_gen`)
    few: DeviceDataset  # `few_per_class` real images per class
    n_few_gen: int  # generated images trained on with the few real ones

    @property
    def n(self) -> int:
        """N, the real set's size: the size of every mix/genP set."""
        return len(self.real)

    def mixed(self, p: float) -> DeviceDataset:
        """N images, p% of them generated and the rest real."""
        n_gen = share(self.n, p)
        return concat(prefix(self.real, self.n - n_gen), prefix(self.pool, n_gen))


def training_sets(run: LoadedRun, opts: Options, gen: torch.Generator, progress: bool = False) -> TrainingSets:
    """The real set (class-balanced to `real_size`, shuffled once with `gen`), the few real ones, and a pool
    of generated images drawn with `gen` after the shuffle."""
    C = run.num_classes
    real_all = run.ctx.train_full
    if opts.real_size is not None and opts.real_size < len(real_all):
        real_all = balanced(real_all, opts.real_size, opts.seed, "real_size")
    few = balanced(real_all, opts.few_per_class * C, opts.seed, "few_per_class")  # fail early
    perm = torch.randperm(len(real_all), generator=gen).to(real_all.device)
    real = DeviceDataset(real_all.images[perm], real_all.labels[perm], real_all.device, C)  # shuffled once
    n_few_gen = opts.few_generated if opts.few_generated is not None else len(real)
    pool, _ = generated_set(run, max(len(real), n_few_gen), gen, progress)
    return TrainingSets(real, pool, few, n_few_gen)


def train_rows(m: Matrix, run: LoadedRun, sets: TrainingSets, opts: Options, gen: torch.Generator,
               notes: list[str]) -> None:
    """Train and score the matrix's rows, group by group (in `row_names` order)."""
    groups, names = set(opts.groups), row_names(opts.groups)
    real, pool, few, N = sets.real, sets.pool, sets.few, sets.n
    # 1. Same total size N, P% generated (those the fine-tuning groups start from, at least)
    nets = {p: m.scratch(f"mix/gen{p}", sets.mixed(p), N - share(N, p), share(N, p))
            for p in MIX if f"mix/gen{p}" in names}
    # 2. All the real images plus P% generated
    for p in ADD if "add" in groups else ():
        n_gen = share(N, p)
        m.scratch(f"add/gen{p}", concat(real, prefix(pool, n_gen)), N, n_gen)
    # 3. Pre-train on one kind, fine-tune on the other (report 002 Tables 5 and 6)
    for p in FINETUNE_REAL if "gen_then_real" in groups else ():
        n_real = max(1, share(N, p))
        m.finetune(f"gen_then_real/ft{p}", nets[100], prefix(real, n_real), "real", n_real, N)
    for p in FINETUNE_GEN if "real_then_gen" in groups else ():
        n_gen = max(1, share(N, p))
        m.finetune(f"real_then_gen/ft{p}", nets[0], prefix(pool, n_gen), "generated", N, n_gen)
    # 4. Only generated images the evaluator is sure of (report 002 Table 7)
    for t in CONFIDENCE if "filtered" in groups else ():
        train_filtered_row(m, run, N, t, opts.max_draws, gen, notes)
    # 5. Few real images: alone, after generated pre-training, with many generated ones (report 001)
    if "few" in groups:
        m.scratch("few/real", few, len(few), 0)
        m.finetune("few/gen_then_real", nets[100], few, "real", len(few), N)
        both = m.scratch("few/real_and_gen", concat(few, prefix(pool, sets.n_few_gen)), len(few), sets.n_few_gen)
        m.finetune("few/real_and_gen_then_real", both, few, "real", len(few), sets.n_few_gen)


def train_filtered_row(m: Matrix, run: LoadedRun, n: int, threshold: float, max_draws: int, gen: torch.Generator,
                       notes: list[str]) -> None:
    """Row filtered/conf<threshold>: up to n generated images the evaluator is sure of; a note when short."""
    data, drawn, per_class = filtered_set(run, n, threshold, max_draws, gen)
    note = f"kept {len(data)} of {drawn} drawn; per class {per_class}"
    if len(data) < n:
        notes.append(f"filtered/conf{threshold}: only {len(data)} of {n} images reached {threshold} in {drawn} drawn "
                     f"(per class {per_class})")
    if len(data):
        m.scratch(f"filtered/conf{threshold}", data, 0, len(data), note)
    else:
        m.skip(f"filtered/conf{threshold}", note + "; nothing to train on: test_acc is null")


def train_curves(m: Matrix, sets: TrainingSets, opts: Options, res: AnalysisResult, n_test: int, model: str) -> None:
    """6. Test accuracy per epoch over many epochs (report 002 Fig 15): table, series, final/best metrics, figure."""
    curve_sets = {"real": sets.mixed(0), "generated": sets.mixed(100),
                  f"mixed{opts.curve_mix}": sets.mixed(opts.curve_mix)}
    points = [pt for name, data in curve_sets.items() for pt in m.curve(name, data, opts.curve_epochs)]
    res.tables["curves"] = points
    for name in curve_sets:
        mine = [pt for pt in points if pt["set"] == name]
        res.series[f"curves/{name}/test_acc"] = [(pt["epoch"], pt["test_acc"]) for pt in mine]
        res.metrics[f"curves/{name}/final_acc"] = mine[-1]["test_acc"]
        res.metrics[f"curves/{name}/best_acc"] = max(pt["test_acc"] for pt in mine)
    res.figures["curves"] = curves_chart(points, sets.n, n_test, model)


def record_rows(res: AnalysisResult, rows: list[dict], n: int, n_test: int, model: str) -> None:
    """The matrix's table, figure and metrics: every row's test accuracy, real-only, CAS and their ratio."""
    if rows:
        res.tables["matrix"] = rows
        res.figures["matrix"] = matrix_chart(rows, n, n_test, model)
    for r in rows:
        res.metrics[f"{r['name']}/test_acc"] = r["test_acc"]
    by_name = {r["name"]: r["test_acc"] for r in rows}
    if "mix/gen0" in by_name:
        res.metrics["real_only"] = by_name["mix/gen0"]
    if "mix/gen100" in by_name:
        res.metrics["cas"] = by_name["mix/gen100"]
    if "mix/gen0" in by_name and "mix/gen100" in by_name:
        res.metrics["cas_ratio"] = by_name["mix/gen100"] / by_name["mix/gen0"] if by_name["mix/gen0"] else math.nan


def curves_chart(points: list[dict], n: int, n_test: int, model: str) -> Figure:
    """Test accuracy per epoch, one line per training set (report 002 Fig 15)."""
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for i, name in enumerate(dict.fromkeys(pt["set"] for pt in points)):
        mine = [pt for pt in points if pt["set"] == name]
        ax.plot([pt["epoch"] for pt in mine], [pt["test_acc"] for pt in mine], marker="o" if len(mine) < 20 else None,
                ms=3, color=f"C{i}", label=f"{name} (final {mine[-1]['test_acc']:.4f})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"test accuracy ({n_test} real test images)")
    ax.set_title(f"Classifier test accuracy per epoch ({model}; N = {n} training images each)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


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
    base = next((r["test_acc"] for r in rows if r["name"] == "mix/gen0"), math.nan)
    if np.isfinite(base):
        ax.axvline(base, ls="--", color="k", lw=0.8, label=f"real only ({base:.4f})")
        ax.legend(fontsize=7, loc="lower left")
    ax.set_xlim(0, 1.08)
    ax.set_xlabel(f"test accuracy on {n_test} real test images")
    ax.set_title(f"Classifiers trained with generated digits ({model}; N = {n} real)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
