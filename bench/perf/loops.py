"""The two training loops `gan-bench perf` times: pytorch/examples' textbook loop and the harness."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
from torch import nn

from bench import data as data_mod
from bench.run_config import RunConfig
from bench.data import DeviceDataset
from bench.evaluator import cache_dir
from bench.models import sample_latent
from bench.perf.common import say, sync
from bench.step import build_gan, build_grouped_step, build_step, set_references
from bench.tracking import NullTracker
from bench.train import Member, train


def torchvision_root(data_root: Path, dataset: str) -> Path:
    """A folder torchvision's MNIST class can read: the raw IDX files, decompressed, in a cache folder.

    The data root may hold .gz files only and may be read-only, so the files are decompressed
    (and checked against their SHA-256) into <cache>/torchvision/<Folder>/raw once.
    """
    spec = data_mod.DATASETS[dataset]
    out = cache_dir() / "torchvision"
    raw = out / spec.folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stem in spec.stems:
        dest = raw / stem
        if dest.is_file():
            continue
        payload = data_mod.verified_bytes(data_root, spec, stem)
        tmp = dest.with_name(f"{stem}.{os.getpid()}.part")
        tmp.write_bytes(payload)
        tmp.replace(dest)  # atomic: a concurrent reader never sees half a file
    return out


def textbook_loop(cfg: RunConfig, device: torch.device, steps: int, warmup: int, workers: int,
                  progress: bool = True) -> dict[str, float]:
    """pytorch/examples' dcgan loop on our model: DataLoader + transforms, fp32, `.item()` every step."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    root = torchvision_root(data_mod.resolve_root(cfg.data.root), cfg.data.dataset)
    dataset_cls = getattr(datasets, data_mod.DATASETS[cfg.data.dataset].folder)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    dataset = dataset_cls(str(root), train=True, download=False, transform=tf)
    batch = cfg.optim.batch_size
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)

    torch.manual_seed(cfg.seed)
    gan = build_gan(cfg, num_classes=data_mod.DATASETS[cfg.data.dataset].num_classes)
    netG, netD = gan.generator.to(device), gan.discriminator.to(device)
    # The real split as uint8 (a view on the CPU): VBN's D reference is a real batch, as in the harness.
    set_references(gan, cfg, DeviceDataset(dataset.data, dataset.targets, device, gan.num_classes),
                   torch.Generator().manual_seed(cfg.seed + 1))
    o = cfg.optim
    criterion = nn.BCEWithLogitsLoss()  # our D returns logits; the example's D ends in a sigmoid + BCELoss
    optimizerD = torch.optim.Adam(netD.parameters(), lr=o.effective_lr_d, betas=(o.beta1_d, o.beta2_d))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=o.effective_lr_g, betas=(o.beta1_g, o.beta2_g))
    nz, conditional, n_classes = cfg.model.latent_dim, gan.conditional, gan.num_classes
    real_label, fake_label = 1.0, 0.0

    def batches():
        while True:
            yield from loader

    done, t0 = 0, None
    errors = []
    for i, (images, labels) in enumerate(batches()):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        if i == warmup + steps:
            break
        # (1) Update D: maximize log(D(x)) + log(1 - D(G(z)))
        netD.zero_grad()
        real = images.to(device)
        y_real = labels.to(device) if conditional else None
        b = real.size(0)
        label = torch.full((b,), real_label, dtype=real.dtype, device=device)
        output = netD(real, y_real)
        errD_real = criterion(output, label)
        errD_real.backward()
        D_x = torch.sigmoid(output).mean().item()
        noise = sample_latent(b, nz, cfg.model.latent_prior, device=device)
        y_fake = torch.randint(n_classes, (b,), device=device) if conditional else None
        fake = netG(noise, y_fake)
        label.fill_(fake_label)
        output = netD(fake.detach(), y_fake)
        errD_fake = criterion(output, label)
        errD_fake.backward()
        D_G_z1 = torch.sigmoid(output).mean().item()
        errD = errD_real + errD_fake
        optimizerD.step()
        # (2) Update G: maximize log(D(G(z)))
        netG.zero_grad()
        label.fill_(real_label)
        output = netD(fake, y_fake)
        errG = criterion(output, label)
        errG.backward()
        D_G_z2 = torch.sigmoid(output).mean().item()
        optimizerG.step()
        errors.append((errD.item(), errG.item(), D_x, D_G_z1, D_G_z2))
        done = i + 1 - warmup
        if progress and done > 0 and done % max(1, steps // 4) == 0:
            say(progress, f"  textbook: {done}/{steps} steps")
    sync(device)
    seconds = time.perf_counter() - t0
    if not all(math.isfinite(v) for e in errors for v in e):
        raise RuntimeError("the textbook loop produced non-finite losses")
    return {"steps": steps, "batch_size": batch, "seconds": seconds, "images_per_s": steps * batch / seconds,
            "dataloader_workers": workers}


def first_images(data: DeviceDataset, n: int) -> DeviceDataset:
    """The first n images of data (a fixed, cheap subset for timing)."""
    return DeviceDataset(data.images[:n], data.labels[:n], data.device, data.num_classes)


def harness_loop(cfg: RunConfig, train_full: DeviceDataset, steps: int, warmup: int,
                 progress: bool = False) -> dict[str, float]:
    """`bench.train.train` (tracking off, no evaluation) for `steps` iterations of cfg's batch size."""
    return group_loop([cfg], train_full, steps, warmup, progress)


def group_loop(cfgs: list[RunConfig], train_full: DeviceDataset, steps: int, warmup: int,
               progress: bool = False) -> dict[str, float]:
    """`harness_loop` for several configs trained as one group (`build_grouped_step`; one config: the
    sequential step). `seconds` is the whole group's time for `steps` iterations of every member."""
    cfg = cfgs[0]
    batch = cfg.optim.batch_size
    draws = batch * cfg.techniques.d_steps  # an iteration takes d_steps batches
    per_epoch = min(steps, len(train_full) // draws)
    epochs = math.ceil(steps / per_epoch)
    torch.manual_seed(cfg.seed)
    step = build_step(cfg, train_full) if len(cfgs) == 1 else build_grouped_step(cfgs, [train_full] * len(cfgs))

    def members(epochs: int, images: int) -> list[Member]:
        data = first_images(train_full, images)
        return [Member(c.model_copy(update={"optim": c.optim.model_copy(update={"epochs": epochs})}), data,
                       NullTracker()) for c in cfgs]

    if warmup:  # kernels and allocator caches warm, as in the textbook loop's untimed first steps
        train(step, members(1, warmup * draws), progress=False)
    result = train(step, members(epochs, per_epoch * draws), progress=progress)[0]
    n = epochs * per_epoch
    return {"steps": n, "batch_size": batch, "members": len(cfgs), "seconds": result.train_s,
            "images_per_s": n * batch * len(cfgs) / result.train_s,
            "cuda_graph": step.tags.get("train.cuda_graph", "off"),  # "on", or why it fell back
            "group_forward": step.tags.get("train.group_forward", "single run")}
