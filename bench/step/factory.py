"""The one place that builds what a run trains: the nets (with what the techniques change), on the device,
with their reference batches, their optimizers and the step that updates them.

A learning rate goes from the config to Adam here, through `learning_rates`: `optim.lr` (or
`optim.lr_g` / `optim.lr_d`), then each technique's `learning_rates` hook (TTUR).
"""

from __future__ import annotations

import torch

from bench import techniques
from bench.config import OptimConfig
from bench.data import DeviceDataset
from bench.models import GAN, build_nets, sample_latent, uses_reference
from bench.step.device import autocast_dtype, has_batch_stats, rng_state
from bench.step.hooks import Hooks
from bench.step.graphed import GraphedStep, graph_refusal
from bench.step.grouped import GroupedStep, grouping_refusal
from bench.step.single import GANStep


def build_gan(cfg, num_classes: int = 10) -> GAN:
    """The GAN a config trains, on the CPU: the model family's nets, then every technique's `wrap_models`.
    Anything a checkpoint loads into is built here, so it has the same structure."""
    gan = build_nets(cfg.model, num_classes)
    for t in techniques.TECHNIQUES.values():
        t.wrap_models(gan, cfg)
    return gan


def set_references(gan: GAN, cfg, data: DeviceDataset, gen: torch.Generator) -> None:
    """Virtual batch norm: fixed reference noise for G, a fixed real batch for D (no-op without VBN)."""
    k = cfg.model.vbn_ref_size
    if uses_reference(gan.generator):
        ref_y = torch.randint(gan.num_classes, (k,), generator=gen).to(data.device) if gan.conditional else None
        gan.generator.set_reference(sample_latent(k, cfg.model.latent_dim, cfg.model.latent_prior, generator=gen,
                                                  device=data.device), ref_y)
    if uses_reference(gan.discriminator):
        x, y = data.sample(k, gen)
        gan.discriminator.set_reference(x, y if gan.conditional else None)


def iterations_per_epoch(cfg, data: DeviceDataset) -> int:
    """Iterations in one pass over `data`: each takes `d_steps` batches."""
    return max(1, data.batches_per_epoch(cfg.optim.batch_size) // cfg.techniques.d_steps)


def learning_rates(optim: OptimConfig, hooks: Hooks) -> tuple[float, float]:
    """G's and D's Adam learning rates: the config's, then the techniques' changes (TTUR)."""
    return hooks.learning_rates(optim.effective_lr_g, optim.effective_lr_d)


def build_step(cfg, data: DeviceDataset, *, ref_gen: torch.Generator | None = None) -> GANStep | GraphedStep:
    """A fresh GAN for `cfg` on `data`'s device, ready to train on `data` for `cfg.optim.epochs` epochs:
    its `GANStep`, replayed from a CUDA graph where `graph_refusal` allows (`GraphedStep`).

    The nets are initialised from the global RNG (seed it first); VBN's reference batches come from
    `ref_gen` (default: seeded with cfg.seed + 1, as every run draws them).
    """
    graphed = graph_refusal(cfg, data.device) is None
    step = _gan_step(cfg, data, ref_gen, capturable=graphed)
    return GraphedStep(step) if graphed else step


def _gan_step(cfg, data: DeviceDataset, ref_gen: torch.Generator | None, capturable: bool = False) -> GANStep:
    device = data.device
    if device.type == "cuda":  # fixed shapes every step: let cuDNN pick its fastest kernels once
        torch.backends.cudnn.benchmark = True
    gan = build_gan(cfg, num_classes=data.num_classes)
    gan.generator.to(device)
    gan.discriminator.to(device)
    set_references(gan, cfg, data, ref_gen if ref_gen is not None else torch.Generator().manual_seed(cfg.seed + 1))
    t = cfg.train
    if t.channels_last:
        gan.generator.to(memory_format=torch.channels_last)
        gan.discriminator.to(memory_format=torch.channels_last)
    info = techniques.StepInfo(gan.generator, gan.discriminator, device,
                               total_steps=cfg.optim.epochs * iterations_per_epoch(cfg, data))
    hooks = Hooks(cfg, info)
    lr_g, lr_d = learning_rates(cfg.optim, hooks)
    o, fused = cfg.optim, t.fast and device.type in ("cpu", "cuda")
    adam = {"fused": fused, "capturable": capturable}  # capturable: the step count stays on the device
    opt_g = torch.optim.Adam(gan.generator.parameters(), lr=lr_g, betas=(o.beta1_g, o.beta2_g), **adam)
    opt_d = torch.optim.Adam(gan.discriminator.parameters(), lr=lr_d, betas=(o.beta1_d, o.beta2_d), **adam)
    # With batch statistics in D (batch norm, minibatch std), a joint pass would mix real and fake examples.
    joint_d = t.fast and t.joint_d and not has_batch_stats(gan.discriminator) and not hooks.couples_batch
    g_fwd = d_fwd = None
    if t.compile != "off" and device.type == "cuda":  # evaluation and checkpoints keep the plain modules
        g_fwd, d_fwd = torch.compile(gan.generator, mode=t.compile), torch.compile(gan.discriminator, mode=t.compile)
    return GANStep(gan, opt_g, opt_d, hooks, latent_dim=cfg.model.latent_dim, d_steps=cfg.techniques.d_steps,
                   g_steps=cfg.techniques.g_steps, joint_d=joint_d, freeze_d_in_g=t.fast,
                   precision=autocast_dtype(t, device), g_fwd=g_fwd, d_fwd=d_fwd)


def build_grouped_step(cfgs, data: list[DeviceDataset], *,
                       ref_gens: list[torch.Generator] | None = None) -> GroupedStep | GraphedStep:
    """One step training every config in `cfgs` together (check `grouping_refusal(cfgs)` first), replayed
    from a CUDA graph where `graph_refusal` allows.

    Each member is built as its sequential run builds it: the global RNG seeded with its `cfg.seed`,
    then `build_step`; the RNG state that leaves is the one its training draws continue from.
    """
    reason = grouping_refusal(cfgs)
    if reason is not None:
        raise ValueError(f"these runs cannot train as one group: {reason}")
    steps, states = [], []
    for k, (cfg, d) in enumerate(zip(cfgs, data, strict=True)):
        torch.manual_seed(cfg.seed)
        steps.append(_gan_step(cfg, d, ref_gens[k] if ref_gens is not None else None))
        states.append(rng_state(d.device))
    group = GroupedStep(steps, states, forward=cfgs[0].train.group_forward)
    return GraphedStep(group) if graph_refusal(cfgs[0], group.device) is None else group
