"""The evaluator: a LeNet classifier trained once per dataset, and the GAN evaluation built on it.

The classifier plays the role Inception plays for ImageNet: its class probabilities give
IS, TARR and per-class accuracy, its penultimate features give FID. It is cached on disk,
keyed by dataset and its own training config, and loaded with `weights_only=True`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bench import metrics
from bench.config import EvalConfig
from bench.data import DeviceDataset
from bench.models import GAN, LeNet, as_trained

ARCH_VERSION = "lenet-v1"  # bump when LeNet changes, so stale caches are not reused
EVAL_BATCH = 2000


def cache_dir() -> Path:
    return Path(os.environ.get("GANBENCH_CACHE") or Path.home() / ".cache" / "gan-bench")


def evaluator_key(dataset: str, cfg: EvalConfig) -> str:
    spec = {"dataset": dataset, "arch": ARCH_VERSION, "epochs": cfg.evaluator_epochs,
            "subset": cfg.evaluator_subset}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return f"{dataset}-{ARCH_VERSION}-{digest}"


class Evaluator:
    """A trained classifier: probabilities and features in large batches, in eval mode."""

    def __init__(self, net: LeNet, meta: dict | None = None):
        self.net = net.eval()
        self.meta = meta or {}
        self._real_cache: dict = {}

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device) -> "Evaluator":
        self.net.to(device)
        self._real_cache.clear()
        return self

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities (N, C), penultimate features (N, F)) for images in [-1, 1]."""
        probs, feats = [], []
        for chunk in images.split(EVAL_BATCH):
            f = self.net.features(chunk.to(self.device, torch.float32))
            feats.append(f)
            probs.append(F.softmax(self.net.head(f), dim=1))
        return torch.cat(probs), torch.cat(feats)

    def real_reference(self, data: DeviceDataset, n: int) -> dict:
        """Probabilities, features and labels of the first n real images (cached per dataset)."""
        key = (id(data), n)
        if key not in self._real_cache:
            images, labels = data.head(n)
            probs, feats = self(images)
            self._real_cache[key] = {"images": images, "labels": labels, "probs": probs,
                                     "moments": _moments(feats)}
        return self._real_cache[key]


def _moments(feats: torch.Tensor) -> metrics.FeatureMoments:
    m = metrics.FeatureMoments()
    m.update(feats)
    return m


def train_classifier(train: DeviceDataset, epochs: int, seed: int = 0, progress: bool = True,
                     batch_size: int = 128, lr: float = 1e-3, net: LeNet | None = None,
                     on_epoch: Callable[[int, LeNet], None] | None = None) -> LeNet:
    """Adam with a cosine schedule; from scratch, or fine-tuning `net` when one is given.

    `on_epoch(epoch, net)` is called after each epoch (1, 2, ...), e.g. to score the net so far."""
    torch.manual_seed(seed)
    device = train.device
    net = (net or LeNet(num_classes=train.num_classes)).to(device)
    batch_size = min(batch_size, len(train))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * train.batches_per_epoch(batch_size))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    bar = tqdm(total=epochs * train.batches_per_epoch(batch_size), desc="evaluator", disable=not progress,
               unit="step", leave=False)
    net.train()
    for epoch in range(epochs):
        for x, y in train.epoch(batch_size, gen):
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
        if on_epoch is not None:
            on_epoch(epoch + 1, net)
            net.train()
    bar.close()
    return net.eval()


@torch.inference_mode()
def accuracy(evaluator: Evaluator, data: DeviceDataset) -> float:
    images, labels = data.head(len(data))
    probs, _ = evaluator(images)
    return (probs.argmax(1) == labels).double().mean().item()


def load_or_train(dataset: str, train: DeviceDataset, test: DeviceDataset, cfg: EvalConfig,
                  progress: bool = True) -> Evaluator:
    """The cached evaluator for this dataset and config; trained (and cached) on first use."""
    path = cache_dir() / "evaluators" / f"{evaluator_key(dataset, cfg)}.pt"
    device = train.device
    if path.exists():
        blob = torch.load(path, map_location=device, weights_only=True)
        net = LeNet(num_classes=train.num_classes).to(device)
        net.load_state_dict(blob["state_dict"])
        return Evaluator(net, blob["meta"])
    if progress:
        print(f"Training the {dataset} evaluator once ({cfg.evaluator_epochs} epochs); cached at {path}")
    data = train if cfg.evaluator_subset is None else train.subset(cfg.evaluator_subset)
    net = train_classifier(data, cfg.evaluator_epochs, progress=progress)
    evaluator = Evaluator(net)
    evaluator.meta = {"dataset": dataset, "key": path.stem, "test_accuracy": accuracy(evaluator, test)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # one temp file per process: concurrent trainers never share it
    torch.save({"state_dict": net.state_dict(), "meta": evaluator.meta}, tmp)
    tmp.replace(path)  # atomic: concurrent workers never read a half-written file
    return evaluator


def real_scores(evaluator: Evaluator, train: DeviceDataset, test: DeviceDataset, cfg: EvalConfig) -> dict:
    """The reference row: what real data scores (the ceiling for every GAN)."""
    ref = evaluator.real_reference(test, min(cfg.n_real, len(test)))
    pred = ref["probs"].argmax(1)
    class_acc = metrics.class_accuracy(pred, ref["labels"], test.num_classes)
    is_mean, is_std = metrics.inception_score(ref["probs"], cfg.splits)
    train_images, _ = train.head(min(cfg.n_real, len(train)))
    _, train_feats = evaluator(train_images)
    out = {"test_accuracy": accuracy(evaluator, test), "is": is_mean, "is_std": is_std,
           "fid_train_test": metrics.frechet_distance(*_moments(train_feats).compute(), *ref["moments"].compute()),
           "class_acc_geomean": metrics.geometric_mean(class_acc)}
    out.update({f"class_acc_{i}": float(a) for i, a in enumerate(class_acc)})
    return out


# ---------------------------------------------------------------------------
# Evaluating a GAN


@torch.inference_mode()
def generate(gan: GAN, n: int, latent_dim: int, device, gen: torch.Generator,
             labels: torch.Tensor | None = None) -> torch.Tensor:
    """n images from noise drawn with `gen` (on the CPU, so the same seed gives the same noise on any device)."""
    z = torch.randn(n, latent_dim, generator=gen).to(device)
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
        if labels is not None:
            labels = labels.to(device)
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
