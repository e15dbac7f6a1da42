"""The evaluator: a fixed LeNet classifier per dataset, and the GAN evaluation built on it.

The classifier plays the role Inception-v3 plays for ImageNet FID: its class probabilities give
IS, TARR and per-class accuracy, its penultimate features give FID. Like Inception's weights,
the MNIST evaluator is fixed: trained once with `REFERENCE_RECIPE`, shipped inside the package
(`bench/weights/`) with its SHA-256 and a version name, and checked on every load, so numbers
from two machines (or CPU and GPU) come from the same network. Other datasets (Fashion-MNIST),
and users who ask for their own (`eval.evaluator = "train"`), get a classifier trained here and
cached on disk (`$GANBENCH_CACHE`, default ~/.cache/gan-bench); runs tag which one they used.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from bench import metrics
from bench.config import ConfigError, EvalConfig
from bench.data import DeviceDataset
from bench.errors import EvaluatorError  # noqa: F401  (re-exported: its historical home)
from bench.progress import bar as progress_bar
from bench.models import GAN, LeNet, as_trained, sample_latent

ARCH_VERSION = "lenet-v1"  # bump when LeNet changes, so stale caches are not reused
EVAL_BATCH = 2000
WEIGHTS_DIR = Path(__file__).parent / "weights"
MANIFEST = WEIGHTS_DIR / "evaluators.json"
# How the shipped evaluator was trained (`gan-bench evaluator --train-reference DIR` repeats it);
# also the recipe of self-trained evaluators, with `eval.evaluator_epochs` / `evaluator_subset`.
# Phase 1 learns with random shifts and dropout (accuracy); phase 2 ("polish") goes on without
# either, which makes the softmax confident on clean digits: that is what a high real-data IS needs
# (with shifts and dropout kept, 4 more epochs reached IS 9.81; see README).
REFERENCE_RECIPE = {"epochs": 12, "batch_size": 128, "lr": 2e-3, "shift": 2, "seed": 0,
                    "polish_epochs": 8, "polish_lr": 1e-3, "polish_dropout": False}


def cache_dir() -> Path:
    return Path(os.environ.get("GANBENCH_CACHE") or Path.home() / ".cache" / "gan-bench")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def shipped_entry(dataset: str) -> dict | None:
    """The manifest entry of the evaluator shipped for `dataset`, or None."""
    if not MANIFEST.exists():
        return None
    return json.loads(MANIFEST.read_text()).get(dataset)


def evaluator_key(dataset: str, cfg: EvalConfig) -> str:
    """Cache key of a self-trained evaluator (dataset, architecture, recipe)."""
    spec = {"dataset": dataset, "arch": ARCH_VERSION, "epochs": _epochs(cfg), "subset": cfg.evaluator_subset,
            "recipe": REFERENCE_RECIPE}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return f"{dataset}-{ARCH_VERSION}-{digest}"


def _epochs(cfg: EvalConfig) -> int:
    return cfg.evaluator_epochs or REFERENCE_RECIPE["epochs"]


def uses_shipped(dataset: str, cfg: EvalConfig) -> bool:
    """Whether runs of this dataset and eval config are scored by the shipped evaluator."""
    if cfg.evaluator == "shipped":
        if shipped_entry(dataset) is None:
            raise ConfigError(f"eval.evaluator='shipped': gan-bench ships no evaluator for dataset {dataset!r}; "
                              "use eval.evaluator='auto' or 'train'")
        return True
    return not cfg.trains_evaluator and shipped_entry(dataset) is not None


def evaluator_path(dataset: str, cfg: EvalConfig) -> Path:
    """Where the evaluator for this dataset and config lies (the shipped file or the cache entry)."""
    if uses_shipped(dataset, cfg):
        return WEIGHTS_DIR / shipped_entry(dataset)["file"]
    return cache_dir() / "evaluators" / f"{evaluator_key(dataset, cfg)}.pt"


class Evaluator:
    """A trained classifier: probabilities and features in large batches, in eval mode.

    `meta` says which network it is: `version`, `sha256` (of its weights file), `source`
    ("shipped" or "trained") and `dataset`; runs log these as `evaluator.*` tags.
    """

    def __init__(self, net: LeNet, meta: dict | None = None):
        # channels-last convs run LeNet 2x faster on CPU, to within 1e-6 of the contiguous result
        self.net = net.eval().to(memory_format=torch.channels_last)
        self.meta = meta or {}
        self._real_cache: dict = {}

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device) -> "Evaluator":
        self.net.to(device)
        self._real_cache.clear()
        return self

    def tags(self) -> dict[str, str]:
        return {f"evaluator.{k}": str(self.meta[k]) for k in ("version", "sha256", "source") if k in self.meta}

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities (N, C), penultimate features (N, F)) for images in [-1, 1]."""
        probs, feats = [], []
        for chunk in images.split(EVAL_BATCH):
            f = self.net.features(chunk.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last))
            feats.append(f)
            probs.append(F.softmax(self.net.head(f), dim=1))
        return torch.cat(probs), torch.cat(feats)

    def real_reference(self, data: DeviceDataset, n: int) -> dict:
        """Probabilities, features and labels of the first n real images (cached per dataset)."""
        key = (id(data), n)
        if key not in self._real_cache:
            images, labels = data.head(n)
            probs, feats = self(images)
            self._real_cache[key] = {"images": images, "labels": labels, "probs": probs, "feats": feats,
                                     "moments": _moments(feats)}
        return self._real_cache[key]


def real_manifold(ref: dict) -> metrics.Manifold:
    """The k-NN manifold of a real reference's features, computed on first use and kept in `ref` (the cache)."""
    if "manifold" not in ref:
        ref["manifold"] = metrics.Manifold.of(ref["feats"])
    return ref["manifold"]


def real_class_moments(ref: dict, num_classes: int) -> dict[int, metrics.FeatureMoments]:
    """Per-class feature moments of a real reference, computed on first use and kept in `ref` (the cache)."""
    if "class_moments" not in ref:
        ref["class_moments"] = metrics.class_moments(ref["feats"], ref["labels"], num_classes)
    return ref["class_moments"]


def manifold_scores(feats: torch.Tensor, ref: dict) -> dict[str, float]:
    """Precision, recall, density and coverage of `feats` against the real reference."""
    return metrics.prdc(real_manifold(ref), feats)


def intra_fid_scores(feats: torch.Tensor, labels: torch.Tensor, ref: dict, num_classes: int,
                     prefix: str = "intra_fid") -> dict[str, float]:
    """Class-conditional FID: `intra_fid` (mean over classes) and `intra_fid_<c>` per class."""
    per_class = metrics.per_class_fid(feats, labels, real_class_moments(ref, num_classes), num_classes)
    out = {prefix: per_class.nanmean().item()}
    out.update({f"{prefix}_{c}": float(v) for c, v in enumerate(per_class)})
    return out


def _moments(feats: torch.Tensor) -> metrics.FeatureMoments:
    m = metrics.FeatureMoments()
    m.update(feats)
    return m


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """The batch translated by up to max_shift pixels (one random offset per batch; background fill)."""
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2,), generator=gen).tolist()
    return padded[:, :, dy:dy + x.shape[2], dx:dx + x.shape[3]]


def train_classifier(train: DeviceDataset, epochs: int, seed: int = 0, progress: bool = True,
                     batch_size: int = 128, lr: float = 1e-3, net: LeNet | None = None,
                     shift: int = 0, on_epoch: Callable[[int, LeNet], None] | None = None,
                     dropout: bool = True) -> LeNet:
    """Adam with a cosine schedule; from scratch, or fine-tuning `net` when one is given.

    `shift` > 0 translates each batch by up to that many pixels (augmentation); `dropout=False` trains
    with the net's dropout layers off; `on_epoch(epoch, net)` is called after every epoch (e.g. to
    measure test accuracy).
    """
    torch.manual_seed(seed)
    device = train.device
    net = (net or LeNet(num_classes=train.num_classes)).to(device)
    batch_size = min(batch_size, len(train))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * train.batches_per_epoch(batch_size))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    bar = progress_bar(total=epochs * train.batches_per_epoch(batch_size), desc="evaluator", enabled=progress,
                       unit="step", leave=False)
    net.train()
    dropouts = [] if dropout else [m for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    saved_p = [m.p for m in dropouts]
    for m in dropouts:
        m.p = 0.0
    for epoch in range(1, epochs + 1):
        for x, y in train.epoch(batch_size, gen):
            if shift:
                x = _shift(x, shift, gen)
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
        if on_epoch is not None:
            on_epoch(epoch, net.eval())
            net.train()
    for m, p in zip(dropouts, saved_p):
        m.p = p
    bar.close()
    return net.eval()


def reference_epochs(epochs: int | None = None) -> tuple[int, int]:
    """(phase 1, phase 2) epochs of the reference recipe; `epochs` replaces phase 1 and scales phase 2."""
    r = REFERENCE_RECIPE
    if epochs is None:
        return r["epochs"], r["polish_epochs"]
    return epochs, max(1, round(epochs * r["polish_epochs"] / r["epochs"]))


def train_reference(train: DeviceDataset, epochs: int | None = None, subset: int | None = None,
                    progress: bool = True, on_epoch=None, net: LeNet | None = None,
                    phases: tuple[str, ...] = ("learn", "polish")) -> LeNet:
    """A classifier trained with the reference recipe (the shipped evaluator's).

    `epochs` replaces phase 1's epoch count (phase 2 is then scaled alike, at least 1 epoch).
    """
    r = REFERENCE_RECIPE
    data = train if subset is None else train.subset(subset)
    learn, polish = reference_epochs(epochs)
    if "learn" in phases:
        net = train_classifier(data, learn, seed=r["seed"], progress=progress, batch_size=r["batch_size"],
                               lr=r["lr"], net=net, shift=r["shift"], on_epoch=on_epoch)
    if "polish" in phases:
        step = (lambda e, n: on_epoch(learn + e, n)) if on_epoch else None
        net = train_classifier(data, polish, seed=r["seed"] + 1, progress=progress, batch_size=r["batch_size"],
                               lr=r["polish_lr"], net=net, shift=0, on_epoch=step, dropout=r["polish_dropout"])
    return net


@torch.inference_mode()
def accuracy(evaluator: Evaluator, data: DeviceDataset) -> float:
    images, labels = data.head(len(data))
    probs, _ = evaluator(images)
    return (probs.argmax(1) == labels).double().mean().item()


def load_shipped(dataset: str, num_classes: int = 10, device="cpu") -> Evaluator:
    """The shipped evaluator for `dataset`, its weights checked against the manifest's SHA-256."""
    entry = shipped_entry(dataset)
    if entry is None:
        raise EvaluatorError(f"gan-bench ships no evaluator for dataset {dataset!r}")
    path = WEIGHTS_DIR / entry["file"]
    if not path.exists():
        raise EvaluatorError(f"shipped evaluator {entry['version']}: {path} is missing; reinstall gan-bench")
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise EvaluatorError(f"shipped evaluator {entry['version']}: {path} has SHA-256 {actual}, expected "
                             f"{entry['sha256']}; the file is damaged, reinstall gan-bench")
    net = LeNet(num_classes=num_classes)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    meta = {"dataset": dataset, "version": entry["version"], "sha256": actual, "source": "shipped",
            "test_accuracy": entry.get("test_accuracy")}
    return Evaluator(net, meta).to(device)


def load_or_train(dataset: str, train: DeviceDataset, test: DeviceDataset, cfg: EvalConfig,
                  progress: bool = True) -> Evaluator:
    """The shipped evaluator when the config uses it; else the cached self-trained one (trained on first use)."""
    device = train.device
    if uses_shipped(dataset, cfg):
        return load_shipped(dataset, train.num_classes, device)
    path = evaluator_path(dataset, cfg)
    if path.exists():
        blob = torch.load(path, map_location=device, weights_only=True)
        net = LeNet(num_classes=train.num_classes).to(device)
        net.load_state_dict(blob["state_dict"])
        return Evaluator(net, {**blob["meta"], "sha256": sha256_file(path)})
    if progress:
        print(f"Training your own {dataset} evaluator once ({_epochs(cfg)} epochs); cached at {path}")
    net = train_reference(train, cfg.evaluator_epochs, cfg.evaluator_subset, progress=progress)
    evaluator = Evaluator(net)
    evaluator.meta = {"dataset": dataset, "version": path.stem, "source": "trained", "key": path.stem,
                      "test_accuracy": accuracy(evaluator, test)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # one temp file per process: concurrent trainers never share it
    torch.save({"state_dict": net.state_dict(), "meta": evaluator.meta}, tmp)
    tmp.replace(path)  # atomic: concurrent workers never read a half-written file
    evaluator.meta["sha256"] = sha256_file(path)
    return evaluator


def real_scores(evaluator: Evaluator, train: DeviceDataset, test: DeviceDataset, cfg: EvalConfig) -> dict:
    """The reference row: what real data scores (the ceiling for every GAN)."""
    ref = evaluator.real_reference(test, min(cfg.n_real, len(test)))
    pred = ref["probs"].argmax(1)
    class_acc = metrics.class_accuracy(pred, ref["labels"], test.num_classes)
    is_mean, is_std = metrics.inception_score(ref["probs"], cfg.splits)
    train_images, train_labels = train.head(min(cfg.n_real, len(train)))
    _, train_feats = evaluator(train_images)
    out = {"test_accuracy": accuracy(evaluator, test), "is": is_mean, "is_std": is_std,
           "fid_train_test": metrics.frechet_distance(*_moments(train_feats).compute(), *ref["moments"].compute()),
           "class_acc_geomean": metrics.geometric_mean(class_acc)}
    out.update({f"class_acc_{i}": float(a) for i, a in enumerate(class_acc)})
    # What real training images score against the test set: the ceiling of the manifold metrics and intra-FID.
    out.update({f"{k}_train_test": v for k, v in manifold_scores(train_feats, ref).items()})
    intra = intra_fid_scores(train_feats, train_labels, ref, test.num_classes)
    out.update({f"{k}_train_test": v for k, v in intra.items()})
    return out


# ---------------------------------------------------------------------------
# Evaluating a GAN


@torch.inference_mode()
def generate(gan: GAN, n: int, latent_dim: int, device, gen: torch.Generator,
             labels: torch.Tensor | None = None) -> torch.Tensor:
    """n images from noise drawn with `gen` (on the CPU, so the same seed gives the same noise on any device)."""
    z = sample_latent(n, latent_dim, gan.latent_prior, generator=gen, device=device)
    y = None if labels is None else labels.to(device)
    return torch.cat([gan.generator(zc, yc) for zc, yc in _chunks(z, y)])


@torch.inference_mode()
def evaluate_gan(gan: GAN, evaluator: Evaluator, test: DeviceDataset, cfg: EvalConfig,
                 latent_dim: int, seed: int = 0) -> dict[str, float]:
    """Every per-epoch `eval/*` metric for the GAN's current weights.

    G is in eval mode; D judges as training sees it (`models.as_trained`: dropout on).
    """
    G, D = gan.generator, gan.discriminator
    was_training = G.training
    G.eval()
    device = test.device
    gen = torch.Generator(device="cpu").manual_seed(seed)  # same noise every epoch: comparable numbers
    num_classes = test.num_classes
    out: dict[str, float] = {}
    try:
        labels = torch.arange(num_classes).repeat_interleave(cfg.n_per_class) if gan.conditional else None
        n = len(labels) if labels is not None else cfg.n_samples
        fakes = generate(gan, n, latent_dim, device, gen, labels)
        out["sample_std"] = fakes.float().std(dim=0).mean().item()  # ~0: every sample is the same image
        probs, feats = evaluator(fakes)
        pred = probs.argmax(1)
        out["is"], out["is_std"] = metrics.inception_score(probs, cfg.splits, seed=seed)
        ref = evaluator.real_reference(test, min(cfg.n_real, len(test)))
        out["fid"] = metrics.frechet_distance(*_moments(feats).compute(), *ref["moments"].compute())
        out.update(manifold_scores(feats, ref))
        if labels is not None:
            labels = labels.to(device)
            out.update(intra_fid_scores(feats, labels, ref, num_classes))
            class_acc = metrics.class_accuracy(pred, labels, num_classes)
            out["tarr"] = metrics.tarr(pred, labels)
            out.update({f"class_acc_{i}": float(a) for i, a in enumerate(class_acc)})
            out["class_acc_geomean"] = metrics.geometric_mean(class_acc)
        else:
            hist = metrics.class_histogram(pred, num_classes)
            out["classes_covered"] = float(metrics.classes_covered(hist))
            out["class_kl"] = metrics.kl_to_uniform(hist)
        # D on the real test split and on as many fresh fakes (logit > 0 means "real")
        d_acc = metrics.BinaryAccuracy()
        y = ref["labels"] if gan.conditional else None
        fresh = generate(gan, len(ref["images"]), latent_dim, device, gen, y)
        with as_trained(D, seed):
            for xs, ys in _chunks(ref["images"], y):
                d_acc.update(D(xs, ys), real=True)
            for xs, ys in _chunks(fresh, y):
                d_acc.update(D(xs, ys), real=False)
        acc = d_acc.compute()
        out["d_acc_real_test"], out["d_acc_fake_test"] = acc["acc_real"], acc["acc_fake"]
    finally:
        G.train(was_training)
    return out


def _chunks(images: torch.Tensor, labels: torch.Tensor | None):
    for i in range(0, len(images), EVAL_BATCH):
        yield images[i:i + EVAL_BATCH], None if labels is None else labels[i:i + EVAL_BATCH]
