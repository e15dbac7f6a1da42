"""Grouped training against sequential runs: K members in one `GroupedStep` vs the same K runs one by one.

Two models, as in report 000 and report 002 Table 1: the report-000 DCGAN (without its dropout, which a
group cannot draw as sequential runs do) and report 002's conditional DCGAN (width 256, batch norm in G
and D). The members are Table 1's batch-32 cells: learning rates 2e-5, 2e-4 and 2e-3 (cycled) and one seed
each, so K = 9 is Table 1's nine batch-32 runs. Both sides train through `bench.train.train` with
tracking off and no evaluation, for the same number of iterations; the sequential side runs its K runs
back to back (every one measured, none extrapolated).
"""

from __future__ import annotations

from typing import Any

import torch

from bench.data import DeviceDataset
from bench.perf.common import say
from bench.perf.loops import group_loop, harness_loop
from bench.run_config import RunConfig, apply_overrides

MODELS = {
    "dcgan-report000": {"model.name": "dcgan-report000", "model.latent_prior": "uniform", "model.d_dropout": 0.0},
    "cgan-conv (report 002)": {"model.name": "cgan-conv", "model.g_depth": 3, "model.d_depth": 3, "model.width": 256,
                               "model.g_norm": "batch", "model.d_norm": "batch", "model.d_dropout": 0.0},
}
TABLE1_RATES = (2e-5, 2e-4, 2e-3)
DEFAULT_GROUP_STEPS = 20


def member_configs(cfg: RunConfig, model: dict, k: int) -> list[RunConfig]:
    """K members of Table 1's batch-32 column: the three learning rates in turn, seeds 0, 1, ..."""
    return [apply_overrides(cfg, {**model, "optim.batch_size": 32, "optim.lr": TABLE1_RATES[i % 3], "seed": i,
                                  "optim.epochs": 1})
            for i in range(k)]


def group_throughput(cfg: RunConfig, train_full: DeviceDataset, sizes: list[int], steps: int = DEFAULT_GROUP_STEPS,
                     warmup: int = 2, progress: bool = True) -> dict[str, Any]:
    """Images/s per member and in all, grouped and sequential, for each model and group size."""
    out: dict[str, Any] = {"steps": steps, "batch_size": 32, "models": {}}
    for name, model in MODELS.items():
        rows = []
        for k in sizes:
            cfgs = member_configs(cfg, model, k)
            row: dict[str, Any] = {"members": k}
            try:
                timed = group_loop(cfgs, train_full, steps, warmup)
                row["grouped_s"], row["cuda_graph"] = timed["seconds"], timed["cuda_graph"]
            except torch.OutOfMemoryError:
                row["grouped_s"] = None
            row["sequential_s"] = sum(harness_loop(c, train_full, steps, warmup)["seconds"] for c in cfgs)
            images = k * steps * 32
            row["sequential_images_per_s"] = images / row["sequential_s"]
            if row["grouped_s"] is not None:
                row["grouped_images_per_s"] = images / row["grouped_s"]
                row["grouped_images_per_s_per_member"] = row["grouped_images_per_s"] / k
                row["speedup"] = row["sequential_s"] / row["grouped_s"]
            rows.append(row)
            say(progress, f"  groups: {name}, K={k}: grouped "
                          + (f"{row['grouped_images_per_s']:.0f}" if row["grouped_s"] else "out of memory")
                          + f" images/s, sequential {row['sequential_images_per_s']:.0f} images/s")
        out["models"][name] = rows
    return out


def format_groups(g: dict) -> list[tuple[str, str, str]]:
    """Rows for `gan-bench perf`'s table."""
    rows = []
    for name, levels in g["models"].items():
        for r in levels:
            if r["grouped_s"] is None:
                rows.append((f"group {name}, K={r['members']}", "out of memory", ""))
                continue
            graph = "" if r.get("cuda_graph", "off") == "off" else f"; CUDA graph {r['cuda_graph']}"  # CUDA only
            rows.append((f"group {name}, K={r['members']}", f"{r['grouped_images_per_s']:.1f} images/s",
                         f"{r['grouped_images_per_s_per_member']:.1f} per member; {r['members']} sequential runs "
                         f"{r['sequential_images_per_s']:.1f} images/s: grouped is {r['speedup']:.2f}x{graph}"))
    return rows
