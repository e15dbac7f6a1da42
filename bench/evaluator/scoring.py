"""Scoring with the evaluator: a GAN's per-epoch `eval/*` metrics, and real data's reference row.

Both run in full fp32 (`no_tf32`: no TF32 on CUDA), as does every call of the evaluator network, so a
score means the same on any GPU.

What only depends on the real images (their features, moments, k-NN manifold, per-class moments)
is computed once and kept in the evaluator's real-reference cache.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from bench import metrics
from bench.config import EvalConfig
from bench.data import DeviceDataset
from bench.evaluator.classifier import EVAL_BATCH, Evaluator, accuracy, no_tf32
from bench.models import GAN, as_trained, eval_mode, sample_latent


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


@dataclasses.dataclass(frozen=True, eq=False)
class Evaluation:
    """A run's per-epoch evaluation, `evaluate_gan` with its arguments bound: call it on the run's GAN.

    The runs of a group are evaluated together (`evaluate_gans`) when their evaluations share the
    evaluator, test set, settings and latent size (`shares_with`): only their seeds differ.
    """

    evaluator: Evaluator
    test: DeviceDataset
    cfg: EvalConfig
    latent_dim: int
    seed: int = 0

    def __call__(self, gan: GAN) -> dict[str, float]:
        return evaluate_gans([gan], [self])[0]

    def shares_with(self, other: object) -> bool:
        return (isinstance(other, Evaluation) and other.evaluator is self.evaluator and other.test is self.test
                and other.cfg == self.cfg and other.latent_dim == self.latent_dim)


def evaluate_gan(gan: GAN, evaluator: Evaluator, test: DeviceDataset, cfg: EvalConfig,
                 latent_dim: int, seed: int = 0) -> dict[str, float]:
    """Every per-epoch `eval/*` metric for the GAN's current weights.

    G is in eval mode; D judges as training sees it (`models.as_trained`: dropout on).
    """
    return evaluate_gans([gan], [Evaluation(evaluator, test, cfg, latent_dim, seed)])[0]


@torch.inference_mode()
@no_tf32()
def evaluate_gans(gans: list[GAN], evaluations: list[Evaluation]) -> list[dict[str, float]]:
    """`evaluate_gan` for several GANs of the same shapes (a group's members), each with its own seed:
    their samples come from one batched pass of their generators and their class probabilities and
    features from one pass of the evaluator, so a group costs about the kernel launches of one run.
    The numbers are each GAN's own evaluation (up to the rounding of larger batches)."""
    first = evaluations[0]
    if not all(first.shares_with(e) for e in evaluations):
        raise ValueError("evaluated together, GANs need the same evaluator, test set, settings and latent size")
    cfg, test, evaluator, device = first.cfg, first.test, first.evaluator, first.test.device
    gens = [torch.Generator(device="cpu").manual_seed(e.seed) for e in evaluations]  # same noise every epoch
    conditional = gans[0].conditional
    labels = torch.arange(test.num_classes).repeat_interleave(cfg.n_per_class) if conditional else None
    n = len(labels) if labels is not None else cfg.n_samples
    with eval_mode([g.generator for g in gans]):
        fakes = generate_many(gans, n, first.latent_dim, device, gens, labels)
    probs, feats = (t.split(n) for t in evaluator(torch.cat(fakes)))
    ref = evaluator.real_reference(test, min(cfg.n_real, len(test)))
    out = []
    for k, (gan, e) in enumerate(zip(gans, evaluations)):
        scores: dict[str, float] = {"sample_std": fakes[k].float().std(dim=0).mean().item()}  # ~0: one image
        scores["is"], scores["is_std"] = metrics.inception_score(probs[k], cfg.splits, seed=e.seed)
        scores["fid"] = fid_to_real(feats[k], ref)
        scores.update(manifold_scores(feats[k], ref))
        if labels is not None:
            scores.update(_class_scores(probs[k].argmax(1), feats[k], labels.to(device), ref, test.num_classes))
        else:
            scores.update(_coverage_scores(probs[k].argmax(1), test.num_classes))
        with eval_mode([gan.generator]):
            scores.update(_discriminator_scores(gan, ref, e.latent_dim, device, gens[k], e.seed))
        out.append(scores)
    return out


def generate_many(gans: list[GAN], n: int, latent_dim: int, device, gens: list[torch.Generator],
                  labels: torch.Tensor | None = None, batched: bool | None = None) -> list[torch.Tensor]:
    """`generate` for each GAN (its noise from its own `gen`); on CUDA, GANs of the same shapes share one
    batched pass. On a CPU each GAN samples alone, as a grouped step's members train there (grouped
    convolutions are slower than separate ones): its images are then exactly its sequential run's.
    `batched` overrides the device's choice."""
    if batched is None:
        batched = torch.device(device).type == "cuda"
    if len(gans) == 1 or not batched:
        return [generate(g, n, latent_dim, device, gen, labels) for g, gen in zip(gans, gens)]
    z = torch.stack([sample_latent(n, latent_dim, g.latent_prior, generator=gen, device=device)
                     for g, gen in zip(gans, gens)])
    y = None if labels is None else labels.to(device)
    params, buffers = stack_module_state([g.generator for g in gans])
    template = copy.deepcopy(gans[0].generator).to("meta")
    call = lambda p, b, z, y: functional_call(template, (p, b), (z, y))  # noqa: E731
    batched = vmap(call, in_dims=(0, 0, 0, None))
    chunks = [batched(params, buffers, z[:, i:i + EVAL_BATCH], None if y is None else y[i:i + EVAL_BATCH])
              for i in range(0, n, EVAL_BATCH)]
    return list(torch.cat(chunks, dim=1).unbind(0))


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
