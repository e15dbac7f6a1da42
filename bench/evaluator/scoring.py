"""Scoring with the evaluator: a GAN's per-epoch `eval/*` metrics, and real data's reference row.

Both run in full fp32 (`no_tf32`: no TF32 on CUDA), as does every call of the evaluator network, so a
score means the same on any GPU.

What only depends on the real images (their features, moments, k-NN manifold, per-class moments)
is computed once and kept in the evaluator's real-reference cache.
"""

from __future__ import annotations

import torch

from bench import metrics
from bench.config import EvalConfig
from bench.data import DeviceDataset
from bench.evaluator.classifier import EVAL_BATCH, Evaluator, accuracy, no_tf32
from bench.models import GAN, as_trained, sample_latent


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


def fid_to_real(feats: torch.Tensor, ref: dict) -> float:
    """FID between `feats` and the real reference (whose moments are cached)."""
    return metrics.frechet_distance(*metrics.feature_moments(feats).compute(), *ref["moments"].compute())


@no_tf32()
def real_scores(evaluator: Evaluator, train: DeviceDataset, test: DeviceDataset, cfg: EvalConfig) -> dict:
    """The reference row: what real data scores (the ceiling for every GAN)."""
    ref = evaluator.real_reference(test, min(cfg.n_real, len(test)))
    pred = ref["probs"].argmax(1)
    class_acc = metrics.class_accuracy(pred, ref["labels"], test.num_classes)
    is_mean, is_std = metrics.inception_score(ref["probs"], cfg.splits)
    train_images, train_labels = train.head(min(cfg.n_real, len(train)))
    _, train_feats = evaluator(train_images)
    out = {"test_accuracy": accuracy(evaluator, test), "is": is_mean, "is_std": is_std,
           "fid_train_test": fid_to_real(train_feats, ref),
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
@no_tf32()
def evaluate_gan(gan: GAN, evaluator: Evaluator, test: DeviceDataset, cfg: EvalConfig,
                 latent_dim: int, seed: int = 0) -> dict[str, float]:
    """Every per-epoch `eval/*` metric for the GAN's current weights.

    G is in eval mode; D judges as training sees it (`models.as_trained`: dropout on).
    """
    G = gan.generator
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
        out["is"], out["is_std"] = metrics.inception_score(probs, cfg.splits, seed=seed)
        ref = evaluator.real_reference(test, min(cfg.n_real, len(test)))
        out["fid"] = fid_to_real(feats, ref)
        out.update(manifold_scores(feats, ref))
        if labels is not None:
            out.update(_class_scores(probs.argmax(1), feats, labels.to(device), ref, num_classes))
        else:
            out.update(_coverage_scores(probs.argmax(1), num_classes))
        out.update(_discriminator_scores(gan, ref, latent_dim, device, gen, seed))
    finally:
        G.train(was_training)
    return out


def _class_scores(pred: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, ref: dict,
                  num_classes: int) -> dict[str, float]:
    """A conditional GAN's per-class scores: intra-FID, TARR and per-class accuracy (and their geometric mean)."""
    out = intra_fid_scores(feats, labels, ref, num_classes)
    class_acc = metrics.class_accuracy(pred, labels, num_classes)
    out["tarr"] = metrics.tarr(pred, labels)
    out.update({f"class_acc_{i}": float(a) for i, a in enumerate(class_acc)})
    out["class_acc_geomean"] = metrics.geometric_mean(class_acc)
    return out


def _coverage_scores(pred: torch.Tensor, num_classes: int) -> dict[str, float]:
    """An unconditional GAN's class coverage: classes covered and KL of the predicted labels to uniform."""
    hist = metrics.class_histogram(pred, num_classes)
    return {"classes_covered": float(metrics.classes_covered(hist)), "class_kl": metrics.kl_to_uniform(hist)}


def _discriminator_scores(gan: GAN, ref: dict, latent_dim: int, device, gen: torch.Generator,
                          seed: int) -> dict[str, float]:
    """D's accuracy on the real test images and on as many fresh fakes (logit > 0 means "real")."""
    D = gan.discriminator
    d_acc = metrics.BinaryAccuracy()
    y = ref["labels"] if gan.conditional else None
    fresh = generate(gan, len(ref["images"]), latent_dim, device, gen, y)
    with as_trained(D, seed):
        for xs, ys in _chunks(ref["images"], y):
            d_acc.update(D(xs, ys), real=True)
        for xs, ys in _chunks(fresh, y):
            d_acc.update(D(xs, ys), real=False)
    acc = d_acc.compute()
    return {"d_acc_real_test": acc["acc_real"], "d_acc_fake_test": acc["acc_fake"]}


def _chunks(images: torch.Tensor, labels: torch.Tensor | None):
    for i in range(0, len(images), EVAL_BATCH):
        yield images[i:i + EVAL_BATCH], None if labels is None else labels[i:i + EVAL_BATCH]
