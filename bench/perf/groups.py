"""Grouped training against sequential runs: K members in one `GroupedStep` vs the same K runs one by one.

Two models, as in report 000 and report 002 Table 1: the report-000 DCGAN (without its dropout, so the
figures compare with those measured before groups drew per-member dropout masks) and report 002's
conditional DCGAN (width 256, batch norm in G and D). The members are Table 1's batch-32 cells: learning
rates 2e-5, 2e-4 and 2e-3 (cycled) and one seed each, so K = 9 is Table 1's nine batch-32 runs. Both sides
train through `bench.train.train` with tracking off and no evaluation, for the same number of iterations;
the sequential side runs its K runs back to back (every one measured, none extrapolated).
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
GROUP_FORMS = ("member_by_member", "vmap")  # `train.group_forward`'s two forms, timed side by side by --ablate


def member_configs(cfg: RunConfig, model: dict, k: int) -> list[RunConfig]:
    """K members of Table 1's batch-32 column: the three learning rates in turn, seeds 0, 1, ..."""
    return [apply_overrides(cfg, {**model, "optim.batch_size": 32, "optim.lr": TABLE1_RATES[i % 3], "seed": i,
                                  "optim.epochs": 1})
            for i in range(k)]


def group_throughput(cfg: RunConfig, train_full: DeviceDataset, sizes: list[int], steps: int = DEFAULT_GROUP_STEPS,
                     warmup: int = 2, progress: bool = True, forms: tuple[str, ...] = ("auto",),
                     rounds: int = 1, models: dict[str, dict] | None = None) -> dict[str, Any]:
    """Images/s per member and in all, grouped and sequential, for each model (default `MODELS`) and group
    size, and each of `forms` (`train.group_forward`); each side's best of `rounds` rounds, taken in turn
    (seq, grouped, ...), so that a slow spell of a shared machine does not land on one side only."""
    out: dict[str, Any] = {"steps": steps, "batch_size": 32, "rounds": rounds, "models": {}}
    for name, model in (models or MODELS).items():
        rows = []
        for k in sizes:
            cfgs = member_configs(cfg, model, k)
            timed: dict[str, list] = {form: [] for form in (forms if k > 1 else forms[:1])}
            sequential = []
            for _ in range(rounds):
                sequential.append(sum(harness_loop(c, train_full, steps, warmup)["seconds"] for c in cfgs))
                for form, times in timed.items():
                    try:
                        times.append(group_loop([apply_overrides(c, {"train.group_forward": form}) for c in cfgs],
                                                train_full, steps, warmup))
                    except torch.OutOfMemoryError:
                        times.append(None)
            images = k * steps * 32
            for form, times in timed.items():
                best = None if None in times else min(times, key=lambda t: t["seconds"])
                row: dict[str, Any] = {"members": k, "form": best["group_forward"] if best else form,
                                       "grouped_s": best["seconds"] if best else None, "sequential_s": min(sequential),
                                       "sequential_images_per_s": images / min(sequential)}
                if best:
                    row["cuda_graph"] = best["cuda_graph"]
                    row["grouped_images_per_s"] = images / row["grouped_s"]
                    row["grouped_images_per_s_per_member"] = row["grouped_images_per_s"] / k
                    row["speedup"] = row["sequential_s"] / row["grouped_s"]
                rows.append(row)
                say(progress, f"  groups: {name}, K={k}, {row['form']}: grouped "
                              + (f"{row['grouped_images_per_s']:.0f}" if best else "out of memory")
                              + f" images/s, sequential {row['sequential_images_per_s']:.0f} images/s")
        out["models"][name] = rows
    return out


def format_groups(g: dict) -> list[tuple[str, str, str]]:
    """Rows for `gan-bench perf`'s table."""
    rows = []
    for name, levels in g["models"].items():
        for r in levels:
            label = f"group {name}, K={r['members']}" + (f", {form_label(r['form'])}" if r["members"] > 1 else "")
            if r["grouped_s"] is None:
                rows.append((label, "out of memory", ""))
                continue
            graph = "" if r.get("cuda_graph", "off") == "off" else f"; CUDA graph {r['cuda_graph']}"  # CUDA only
            rows.append((label, f"{r['grouped_images_per_s']:.1f} images/s",
                         f"{r['grouped_images_per_s_per_member']:.1f} per member; {r['members']} sequential runs "
                         f"{r['sequential_images_per_s']:.1f} images/s: grouped is {r['speedup']:.2f}x{graph}"))
    return rows


def form_label(form: str) -> str:
    return form.replace("_", " ")  # member_by_member -> "member by member"
