"""The one place that builds what a run trains: the nets (with what the techniques change), on the device,
with their reference batches, their optimizers and the step that updates them.

A learning rate goes from the config to Adam here, through `learning_rates`: `optim.lr` (or
`optim.lr_g` / `optim.lr_d`), then each technique's `learning_rates` hook (TTUR).

The fast paths are chosen here too (`fast_paths`: a group's vmapped forward, `torch.compile`, a CUDA
graph), and each is proven against the plain step on the run's own shapes before the run trains on it
(`bench.step.proof`); one that fails is left out, and the step's `train.fast_path` tag says which
paths it trains on and why any was refused.
"""

from __future__ import annotations

import torch

from bench import techniques
from bench.config import OptimConfig
from bench.data import DeviceDataset
from bench.models import GAN, build_nets, sample_latent, uses_reference
from bench.step import proof
from bench.step.device import autocast_dtype, has_batch_stats, rng_state
from bench.step.graphed import WARMUP, GraphedStep, graph_refusal
from bench.step.grouped import GroupedStep, default_forward, grouping_refusal
from bench.step.hooks import Hooks
from bench.step.protocol import Step
from bench.step.single import GANStep
from bench.step.update import UpdateSettings


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


def build_step(cfg, data: DeviceDataset, *, ref_gen: torch.Generator | None = None) -> Step:
    """A fresh GAN for `cfg` on `data`'s device, ready to train on `data` for `cfg.optim.epochs` epochs:
    its `GANStep`, on the fast paths that apply (`fast_paths`) and have proven themselves (`bench.step.proof`).

    The nets are initialised from the global RNG (seed it first); VBN's reference batches come from
    `ref_gen` (default: seeded with cfg.seed + 1, as every run draws them).
    """
    return _build([cfg], [data], [ref_gen], grouped=False)


def _gan_step(cfg, data: DeviceDataset, ref_gen: torch.Generator | None, capturable: bool = False,
              compiled: bool = False) -> GANStep:
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
    if compiled:  # evaluation and checkpoints keep the plain modules
        g_fwd, d_fwd = torch.compile(gan.generator, mode=t.compile), torch.compile(gan.discriminator, mode=t.compile)
    settings = UpdateSettings(d_steps=cfg.techniques.d_steps, g_steps=cfg.techniques.g_steps, joint_d=joint_d,
                              freeze_d_in_g=t.fast, precision=autocast_dtype(t, device))
    return GANStep(gan, opt_g, opt_d, hooks, latent_dim=cfg.model.latent_dim, settings=settings, g_fwd=g_fwd,
                   d_fwd=d_fwd)


def build_grouped_step(cfgs, data: list[DeviceDataset], *,
                       ref_gens: list[torch.Generator] | None = None) -> Step:
    """One step training every config in `cfgs` together (check `grouping_refusal(cfgs)` first), on the
    fast paths that apply (`fast_paths`) and have proven themselves (`bench.step.proof`).

    Each member is built as its sequential run builds it: the global RNG seeded with its `cfg.seed`,
    then `build_step`; the RNG state that leaves is the one its training draws continue from.
    """
    reason = grouping_refusal(cfgs)
    if reason is not None:
        raise ValueError(f"these runs cannot train as one group: {reason}")
    return _build(cfgs, data, ref_gens if ref_gens is not None else [None] * len(cfgs), grouped=True)


# -- fast paths: chosen here, each proven against the plain step before a run trains on it --------------


def fast_paths(cfgs, device: torch.device, grouped: bool) -> list[str]:
    """The fast paths a run (or a group) of `cfgs` on `device` asks for, innermost first: "vmap" (a group's
    batched forward, `train.group_forward`), "compile" (`train.compile`, CUDA), "graph" (`graph_refusal`)."""
    t, paths = cfgs[0].train, []
    if grouped and (default_forward(device) if t.group_forward == "auto" else t.group_forward) == "vmap":
        paths.append("vmap")
    if not grouped and t.compile != "off" and device.type == "cuda":  # a group's forward is its own
        paths.append("compile")
    if graph_refusal(cfgs[0], device) is None:
        paths.append("graph")
    return paths


def _build(cfgs, data: list[DeviceDataset], ref_gens: list, grouped: bool) -> Step:
    """The run's step on the fast paths that passed their proofs (the others say why, once, and are
    named in its `train.fast_path` tag). The proofs restore the global RNG: the run draws as without them."""
    used: list[str] = []
    refused: dict[str, str] = {}
    for path in fast_paths(cfgs, data[0].device, grouped):
        p = _prove(path, used, cfgs, data, ref_gens, grouped)
        if p.passed:
            used.append(path)
        else:
            refused[path] = proof.refusal(p)
    step = _assemble(cfgs, data, ref_gens, grouped, used)
    step.tags["train.fast_path"] = proof.tag(used, refused)
    if "graph" in used:  # a capture the proof saw succeed may still fail in the run: it trains on without it
        step.fell_back = lambda why: _capture_failed(step, used, refused, why)
    return step


def _assemble(cfgs, data: list[DeviceDataset], ref_gens: list, grouped: bool, paths: list[str]) -> Step:
    """The step on exactly these fast paths."""
    graph = "graph" in paths
    if not grouped:
        step = _gan_step(cfgs[0], data[0], ref_gens[0], capturable=graph, compiled="compile" in paths)
    else:
        steps, states = [], []
        for cfg, d, gen in zip(cfgs, data, ref_gens, strict=True):
            torch.manual_seed(cfg.seed)
            steps.append(_gan_step(cfg, d, gen))
            states.append(rng_state(d.device))
        step = GroupedStep(steps, states, forward="vmap" if "vmap" in paths else "member_by_member")
    return GraphedStep(step) if graph else step


def _prove(path: str, below: list[str], cfgs, data: list[DeviceDataset], ref_gens: list, grouped: bool):
    """`path` on top of the proven paths `below`, against `below` alone, on the run's own shapes."""
    cfg, device = cfgs[0], data[0].device
    warmup = WARMUP if path == "graph" else 0  # a graph's first iterations run eagerly: its replays are compared

    def build(paths: list[str]):
        def step():
            s = _assemble(cfgs, data, [_copy(g) for g in ref_gens], grouped, paths)  # the run's ref_gens untouched
            if "graph" in paths:
                s.fell_back = _refuse_capture  # in a proof a failed capture fails the proof
            return s
        return step

    batches = proof.draw_batches(data, cfg.optim.batch_size, cfg.techniques.d_steps, warmup + proof.ITERATIONS)
    return proof.prove(path, _signature(cfgs, data[0], grouped, below), build([*below, path]), build([*below]), batches,
                       autocast_dtype(cfg.train, device), device, warmup)


def _signature(cfgs, data: DeviceDataset, grouped: bool, below: list[str]) -> dict:
    """What decides whether a fast path computes what the plain step does: the nets, the training mode,
    the active techniques (values only where they set the step's shape), the batch and the group."""
    cfg, techs = cfgs[0], {}
    for c in cfgs:
        for t in techniques.TECHNIQUES.values():
            if t.active(c):
                values = t.read_values(c)
                techs[t.name] = "on" if t.varies_per_member else {k: getattr(values, k) for k in t.fields}
    return {"members": len(cfgs) if grouped else None, "under": list(below), "model": cfg.model.model_dump(mode="json"),
            "train": cfg.train.model_dump(mode="json", include={"fast", "amp", "channels_last", "joint_d", "compile"}),
            "techniques": techs, "batch_size": cfg.optim.batch_size, "d_steps": cfg.techniques.d_steps,
            "g_steps": cfg.techniques.g_steps, "images": list(data.images.shape[1:]), "classes": data.num_classes}


def _copy(gen: torch.Generator | None) -> torch.Generator | None:
    if gen is None:
        return None
    copy = torch.Generator(gen.device)
    copy.set_state(gen.get_state())
    return copy


def _refuse_capture(why: str) -> None:
    raise RuntimeError(f"CUDA graph capture failed ({why})")


def _capture_failed(step, used: list[str], refused: dict[str, str], why: str) -> None:
    refused = {**refused, "graph": f"graph: capture failed ({why})"}
    step.tags["train.fast_path"] = proof.tag([p for p in used if p != "graph"], refused)
    proof.say(f"fast path graph refused, training without it: capture failed ({why})")
