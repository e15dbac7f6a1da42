"""GAN model families and their registry.

Each family module (dcgan, cgan, vanilla) registers builder functions
`build(cfg: ModelConfig, num_classes=10) -> (generator, discriminator)` with `@register_model`;
`build_nets(cfg)` looks the name up in `MODELS` and builds both nets (training builds through
`bench.step.build_gan`, which adds what the techniques change).

Interfaces every family follows: `G(z, y=None) -> (B, 1, 28, 28)` in [-1, 1] (tanh) and
`D(x, y=None) -> (B,)` logits; unconditional nets ignore y, conditional ones require int64
labels. Nets with virtual batch norm come back wrapped in `WithReference`: call
`net.set_reference(...)` before training (`uses_reference(net)` says when).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from bench.models.latent import LATENT_PRIORS, sample_latent
from bench.models.lenet import LeNet
from bench.models.layers import VirtualBatchNorm, WithReference, uses_reference, with_reference_if_needed

if TYPE_CHECKING:  # a ModelConfig is passed in; the class is needed for type hints only
    from bench.config import ModelConfig

__all__ = ["GAN", "LATENT_PRIORS", "MODELS", "LeNet", "ModelSpec", "VirtualBatchNorm", "WithReference", "as_trained",
           "build_nets", "count_params", "eval_mode", "register_model", "sample_latent", "summary", "uses_reference"]

Builder = Callable[..., tuple[nn.Module, nn.Module]]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Builder  # (cfg: ModelConfig, num_classes: int = 10) -> (generator, discriminator)
    conditional: bool
    description: str


MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, *, conditional: bool, description: str) -> Callable[[Builder], Builder]:
    """Register a builder under `name`. The registered builder wraps VBN nets in `WithReference`."""

    def decorator(fn: Builder) -> Builder:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")

        @functools.wraps(fn)
        def build(cfg: ModelConfig, num_classes: int = 10) -> tuple[nn.Module, nn.Module]:
            generator, discriminator = fn(cfg, num_classes)
            return (with_reference_if_needed(generator, conditional=conditional),
                    with_reference_if_needed(discriminator, conditional=conditional))

        MODELS[name] = ModelSpec(name, build, conditional, description)
        return build

    return decorator


@dataclass
class GAN:
    generator: nn.Module
    discriminator: nn.Module
    spec: ModelSpec
    num_classes: int = 10
    latent_prior: str = "normal"  # model.latent_prior: what G was trained on, so what it must be fed

    @property
    def conditional(self) -> bool:
        return self.spec.conditional


def build_nets(cfg: ModelConfig, num_classes: int = 10) -> GAN:
    """Build the registered model `cfg.name` with PyTorch's default init.

    Training builds through `bench.step.build_gan(run_config)`, which lets techniques change
    the nets (the DCGAN init, spectral norm, ...): use that one for anything a checkpoint loads into.
    """
    if cfg.name not in MODELS:
        raise KeyError(f"unknown model {cfg.name!r}; choose one of {sorted(MODELS)}")
    spec = MODELS[cfg.name]
    generator, discriminator = spec.build(cfg, num_classes)
    return GAN(generator, discriminator, spec, num_classes, cfg.latent_prior)


@contextlib.contextmanager
def eval_mode(nets: list[nn.Module]):
    """The nets in eval mode inside the block, each back in its own mode after."""
    modes = [net.training for net in nets]
    for net in nets:
        net.eval()
    try:
        yield
    finally:
        for net, mode in zip(nets, modes):
            net.train(mode)


@contextlib.contextmanager
def as_trained(discriminator: nn.Module, seed: int = 0):
    """D as training sees it, for judging images: dropout on, batch norm on its running statistics.

    D is only ever trained with its dropout active, and without it its logits shift: the
    report-000 D after one epoch gives real test digits a mean logit of +0.35 with dropout and
    -2.19 without, i.e. 0% "real". The dropout masks come from a fixed seed, and the global RNG
    is restored afterwards, so judging never changes what training draws next.
    """
    was_training = discriminator.training
    discriminator.eval()
    for m in discriminator.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.train()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield discriminator
    finally:
        discriminator.train(was_training)


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def summary(module: nn.Module, *example_inputs) -> str:
    """A table of every layer that runs on `example_inputs`: name, type, output shape, parameters.

    Runs one forward pass in eval mode without gradients (forward hooks record the shapes).
    Rows are leaf modules in call order; a module called twice gets two rows.
    """
    rows: list[tuple[str, str, str, int]] = []

    def shape_of(out) -> str:
        if isinstance(out, torch.Tensor):
            return str(tuple(out.shape))
        if isinstance(out, (tuple, list)):
            return ", ".join(shape_of(o) for o in out)
        return type(out).__name__

    def own_params(mod: nn.Module) -> int:
        return sum(p.numel() for p in mod.parameters(recurse=False))

    def hook(name: str):
        def record(mod, _inputs, output):
            rows.append((name, type(mod).__name__, shape_of(output), own_params(mod)))
        return record

    # Leaves, plus any container that owns parameters directly, so the rows add up to the total.
    watched = [(n, m) for n, m in module.named_modules()
               if n and (not list(m.children()) or own_params(m))]
    handles = [m.register_forward_hook(hook(n)) for n, m in watched]
    try:
        with eval_mode([module]), torch.no_grad():
            module(*example_inputs)
    finally:
        for h in handles:
            h.remove()

    header = ("Layer", "Type", "Output shape", "Params")
    body = [(n, t, s, f"{p:,}") for n, t, s, p in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(4)]

    def line(r) -> str:
        return "  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].ljust(widths[2]),
                          r[3].rjust(widths[3])])

    rule = "-" * len(line(header))
    total, trainable = count_params(module), count_params(module, trainable_only=True)
    return "\n".join([line(header), rule, *map(line, body), rule,
                      f"Total params: {total:,}", f"Trainable params: {trainable:,}",
                      f"Non-trainable params: {total - trainable:,}"])


# Importing the families registers them. Last, because they import `register_model` from here.
from bench.models import cgan, dcgan, vanilla  # noqa: E402,F401
