"""FLOPs per image of each loop and a measured conv peak of the device: how much faster a loop could get."""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from typing import Any

import torch
from torch import nn

from bench.data import DeviceDataset
from bench.perf.common import PLAIN, count_flops, sync
from bench.run_config import RunConfig, apply_overrides
from bench.step import autocast_dtype, build_step
from bench.perf.loops import textbook_loop


def harness_flops_per_image(cfg: RunConfig, data: DeviceDataset) -> float:
    """FLOPs the harness spends per training image: one iteration (D steps + G steps) over its images."""
    cfg = apply_overrides(cfg, {"train.compile": "off"})  # the same FLOPs; the counter needs eager ops
    torch.manual_seed(cfg.seed)
    step = build_step(cfg, data)
    batch = cfg.optim.batch_size
    real, labels = data.sample(batch, torch.Generator().manual_seed(cfg.seed))
    same_batch = itertools.repeat((real, labels))
    return count_flops(lambda: step.iteration([same_batch])) / (batch * step.batches_per_iteration)


def textbook_flops_per_image(cfg: RunConfig, device: torch.device) -> float:
    return count_flops(lambda: textbook_loop(cfg, device, 1, 0, 0, progress=False)) / cfg.optim.batch_size


def conv_peak_gflops(device: torch.device, dtype: torch.dtype | None) -> float:
    """GFLOP/s of a large 3x3 conv forward (128 -> 128 channels, 14x14, channels-last), best of 5:
    a practical ceiling for these models' layers on this device (fp32, or `dtype` under autocast)."""
    n = 4096 if device.type == "cuda" else 128
    x = torch.randn(n, 128, 14, 14, device=device).contiguous(memory_format=torch.channels_last)
    conv = nn.Conv2d(128, 128, 3, padding=1).to(device, memory_format=torch.channels_last)
    flops = 2 * n * 14 * 14 * 128 * 128 * 9
    precision = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    best = math.inf
    with torch.inference_mode(), precision:
        for _ in range(2):
            conv(x)
        for _ in range(5):
            sync(device)
            t0 = time.perf_counter()
            conv(x)
            sync(device)
            best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


def compute_use(cfg: RunConfig, train_full: DeviceDataset, throughput: dict) -> dict[str, Any]:
    """FLOPs per image of each loop, the GFLOP/s they reach, and the same against the device's conv peak."""
    device = train_full.device
    dtype = autocast_dtype(cfg.train, device)
    peak = {"fp32": conv_peak_gflops(device, None)}
    if dtype is not None:
        peak["bf16"] = conv_peak_gflops(device, dtype)
    loops = {"textbook": (textbook_flops_per_image(cfg, device), "fp32"),
             "harness_plain": (harness_flops_per_image(apply_overrides(cfg, PLAIN), train_full), "fp32"),
             "harness": (harness_flops_per_image(cfg, train_full), "bf16" if dtype is not None else "fp32")}
    out: dict[str, Any] = {"peak_gflops": peak}
    for name, (flops, precision) in loops.items():
        gflops = flops * throughput[name]["images_per_s"] / 1e9
        out[name] = {"gflop_per_image": flops / 1e9, "gflops": gflops, "precision": precision,
                     "pct_of_peak": 100 * gflops / peak[precision],
                     # the loop's images/s if every FLOP ran at the conv peak
                     "images_per_s_at_peak": peak[precision] * 1e9 / flops}
    out["speedup_at_peak"] = out["harness"]["images_per_s_at_peak"] / throughput["textbook"]["images_per_s"]
    return out
