"""The evaluator network: a trained LeNet behind `Evaluator`, and the recipe that trains one.

`Evaluator` gives class probabilities and penultimate features in large batches; `train_classifier`
is the training loop (Adam, cosine learning-rate schedule) and `train_reference` the two-phase
recipe the shipped MNIST evaluator was trained with (`REFERENCE_RECIPE`), which self-trained
evaluators and `gan-bench analyze retrain` reuse.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from bench import metrics
from bench.data import DeviceDataset
from bench.models import LeNet
from bench.progress import bar as progress_bar

EVAL_BATCH = 2000
# How the shipped evaluator was trained (`gan-bench evaluator --train-reference DIR` repeats it);
# also the recipe of self-trained evaluators, with `eval.evaluator_epochs` / `evaluator_subset`.
# Phase 1 learns with random shifts and dropout (accuracy); phase 2 ("polish") goes on without
# either, which makes the softmax confident on clean digits: that is what a high real-data IS needs
# (with shifts and dropout kept, 4 more epochs reached IS 9.81; docs/metrics.md).
REFERENCE_RECIPE = {"epochs": 12, "batch_size": 128, "lr": 2e-3, "shift": 2, "seed": 0,
                    "polish_epochs": 8, "polish_lr": 1e-3, "polish_dropout": False}


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """Full fp32 matmuls and convolutions inside the block (no TF32 on CUDA), the previous settings after it.

    Scores are comparable across machines only if the evaluator computes the same thing everywhere:
    with TF32 (cuDNN's default for convolutions), an Ampere-or-later GPU would round its inputs to 10
    mantissa bits. A setting made with `torch.set_float32_matmul_precision` comes back as it was.
    """
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    precision = None
    if matmul:
        with contextlib.suppress(RuntimeError):  # settings made through both of torch's APIs: no single name
            precision = torch.get_float32_matmul_precision()
        torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn
        if matmul:
            if precision in ("high", "medium"):
                torch.set_float32_matmul_precision(precision)
            else:
                torch.backends.cuda.matmul.allow_tf32 = True


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
    @no_tf32()
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
                                     "moments": metrics.feature_moments(feats)}
        return self._real_cache[key]


@torch.inference_mode()
@no_tf32()
def accuracy(evaluator: Evaluator, data: DeviceDataset) -> float:
    images, labels = data.head(len(data))
    probs, _ = evaluator(images)
    return (probs.argmax(1) == labels).double().mean().item()


# ---------------------------------------------------------------------------
# Training


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """The batch translated by up to max_shift pixels (one random offset per batch; background fill)."""
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2,), generator=gen).tolist()
    return padded[:, :, dy:dy + x.shape[2], dx:dx + x.shape[3]]


def train_classifier(train: DeviceDataset, epochs: int, seed: int = 0, progress: bool = True,
                     batch_size: int = 128, lr: float = 1e-3, net: LeNet | None = None,
                     shift: int = 0, on_epoch: Callable[[int, LeNet], None] | None = None,
                     dropout: bool = True) -> LeNet:
    """Adam with a cosine learning-rate schedule; from scratch, or fine-tuning `net` when one is given.

    `shift` > 0 translates each batch by up to that many pixels (augmentation); `dropout=False` trains
    with the net's dropout layers off; `on_epoch(epoch, net)` is called after every epoch (e.g. to
    measure test accuracy).
    """
    torch.manual_seed(seed)
    device = train.device
    net = (net or LeNet(num_classes=train.num_classes)).to(device)
    batch_size = min(batch_size, len(train))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * train.batches_per_epoch(batch_size))
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
            lr_schedule.step()
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
