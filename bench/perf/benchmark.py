"""Every figure of `gan-bench perf bench` in one dict, and the table printed from it."""

from __future__ import annotations

import functools
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench import data as data_mod
from bench.run_config import apply_overrides, RunConfig
from bench.data import DeviceDataset
from bench.step import resolve_device
from bench.perf.common import (ABLATIONS, CUDA_ABLATIONS, DEFAULT_EVAL_N, DEFAULT_ROUNDS, DEFAULT_STEPS,
                               DEFAULT_TRACK_SUBSET, DEFAULT_WARMUP, PARITY_MODEL, PLAIN, cuda_peak, fast_path_summary,
                               peak_rss_mb, say)
from bench.perf.compute import compute_use
from bench.perf.concurrency import concurrency
from bench.perf.evaluation import eval_timing, timing_evaluator, tracking_overhead
from bench.perf.groups import DEFAULT_GROUP_STEPS, GROUP_FORMS, format_groups, group_throughput
from bench.perf.loops import harness_loop, textbook_loop


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def load_splits(cfg: RunConfig, device: torch.device) -> tuple[DeviceDataset, DeviceDataset]:
    """The training and test splits of cfg's dataset, on the device."""
    root = data_mod.resolve_root(cfg.data.root)
    kw = dict(device=device, download=cfg.data.download)
    return (data_mod.load_dataset(root, cfg.data.dataset, "train", **kw),
            data_mod.load_dataset(root, cfg.data.dataset, "test", **kw))


@dataclass(frozen=True)
class BenchmarkOptions:
    """How much `run_benchmark` measures (cfg says what: model, batch size, device, data)."""

    steps: int = DEFAULT_STEPS  # timed steps per training loop
    warmup: int = DEFAULT_WARMUP  # untimed steps before each loop
    rounds: int = DEFAULT_ROUNDS  # throughput rounds, loops in rotation; each loop's best round counts
    textbook_workers: int = 2  # DataLoader workers of the textbook loop (pytorch/examples' dcgan default)
    eval_n: int = DEFAULT_EVAL_N  # generated and real images to evaluate
    eval_model: str = PARITY_MODEL  # conditional model of the evaluation timing
    track_subset: int = DEFAULT_TRACK_SUBSET  # the tracking trial: training images,
    track_epochs: int = 2  # epochs,
    track_eval_n: int = 1000  # evaluation size,
    track_repeats: int = 2  # and tracked/untracked pairs
    concurrency: list[int] | None = None  # concurrent trials (None: 1,2,4,8 on GPU; powers of 2 to the cores on CPU)
    groups: list[int] | None = None  # group sizes K (None: 1,3,9,27 on GPU; 1,3,9 on CPU)
    group_steps: int = DEFAULT_GROUP_STEPS  # iterations per member in the group section
    ablate: bool = False  # also time the harness with each fast-path switch flipped (and both group forms)


def run_benchmark(cfg: RunConfig, options: BenchmarkOptions = BenchmarkOptions(), progress: bool = True) -> dict:
    """Every figure of `gan-bench perf bench` for cfg (model, batch size, device, data), as a JSON-able dict."""
    o = options
    device = resolve_device(cfg.device)
    cores = os.cpu_count() or 1
    levels = o.concurrency
    if levels is None:
        levels = [1, 2, 4, 8] if device.type == "cuda" else [2**i for i in range(cores.bit_length()) if 2**i <= cores]
    groups = o.groups
    if groups is None:
        groups = [1, 3, 9, 27] if device.type == "cuda" else [1, 3, 9]
    out: dict[str, Any] = {
        "device": str(device), "device_name": _device_name(device), "torch": torch.__version__,
        "host": platform.node(), "cpu_count": cores, "threads": torch.get_num_threads(),
        "load_avg_start": list(os.getloadavg()),
        "model": cfg.model.name, "batch_size": cfg.optim.batch_size, "fast_path": fast_path_summary(cfg, device)}
    memory: dict[str, Any] = {}
    sections: dict[str, float] = {}
    t_all = t_section = time.perf_counter()

    def section_done(name: str) -> None:
        nonlocal t_section
        now = time.perf_counter()
        sections[name] = now - t_section
        t_section = now

    say(progress, f"perf: loading {cfg.data.dataset} onto {device}")
    train_full, test = load_splits(cfg, device)
    section_done("load")

    say(progress, f"perf [1/5] throughput: {cfg.model.name}, batch {cfg.optim.batch_size}, {o.steps} steps "
                   f"(+{o.warmup} warm-up) per loop, best of {o.rounds} round(s)")
    out["throughput"] = _throughput(cfg, train_full, o, memory, progress)
    say(progress, "  compute: FLOPs per image and the device's conv peak")
    out["compute"] = compute_use(cfg, train_full, out["throughput"])
    section_done("throughput")

    say(progress, f"perf [2/5] evaluation: {o.eval_model}, {o.eval_n:,} generated + {min(o.eval_n, len(test)):,} real")
    ecfg = apply_overrides(cfg, {"model.name": o.eval_model})
    evaluator = timing_evaluator(ecfg, train_full, test)
    with cuda_peak(device, memory, "cuda_peak_allocated_mb_eval"):
        out["eval"] = eval_timing(ecfg, evaluator, test, o.eval_n)
    say(progress, f"  evaluation: {out['eval']['seconds']:.2f} s")
    section_done("eval")

    say(progress, f"perf [3/5] tracking overhead: {cfg.model.name}, {o.track_epochs} epoch(s) on "
                   f"{o.track_subset} images, x{o.track_repeats}")
    out["tracking"] = _tracking(cfg, train_full, test, evaluator, o, progress)
    say(progress, f"  tracking overhead: {out['tracking']['overhead_pct']:.2f}%")
    section_done("tracking")

    say(progress, f"perf [4/5] concurrent trials: {levels}")
    out["concurrency"] = concurrency(cfg, device, levels, o.steps, o.warmup, progress)
    section_done("concurrency")

    forms = GROUP_FORMS if o.ablate else ("auto",)
    say(progress, f"perf [5/5] groups: K = {groups} members in one model vs K sequential runs, {o.group_steps} steps, "
                  f"forms {', '.join(forms)}, best of {o.rounds} round(s)")
    with cuda_peak(device, memory, "cuda_peak_allocated_mb_groups"):
        out["groups"] = group_throughput(cfg, train_full, groups, o.group_steps, progress=progress, forms=forms,
                                         rounds=o.rounds)
    section_done("groups")

    memory["host_peak_rss_mb"] = peak_rss_mb()
    memory["workers_peak_rss_mb"] = max(r["peak_rss_mb_max"] for r in out["concurrency"]["levels"])
    if device.type == "cuda":
        memory["cuda_peak_allocated_mb"] = max(v for k, v in memory.items() if k.startswith("cuda_peak"))
    out["memory"] = memory
    out["load_avg_end"] = list(os.getloadavg())
    out["sections_s"] = sections
    out["total_s"] = time.perf_counter() - t_all
    return out


def _throughput(cfg: RunConfig, train_full, o: BenchmarkOptions, memory: dict, progress: bool) -> dict[str, Any]:
    """Images/s of the textbook loop, the plain harness and the harness (and each ablation), best of `rounds`."""
    device = train_full.device
    steps, warmup, rounds, ablate = o.steps, o.warmup, o.rounds, o.ablate
    loops: dict[str, Callable[[], dict]] = {
        "textbook": lambda: textbook_loop(cfg, device, steps, warmup, o.textbook_workers, progress),
        "harness_plain": lambda: harness_loop(apply_overrides(cfg, PLAIN), train_full, steps, warmup),
        "harness": lambda: harness_loop(cfg, train_full, steps, warmup)}
    if ablate:
        for key in ABLATIONS + (CUDA_ABLATIONS if device.type == "cuda" else ()):
            on = not getattr(cfg.train, key)
            loops[f"{'with' if on else 'without'} {key}"] = functools.partial(
                harness_loop, apply_overrides(cfg, {f"train.{key}": on}), train_full, steps, warmup)
    # Rounds in rotation, best of each: on a shared machine a burst of other work hits one round, not all.
    best: dict[str, dict] = {}
    for r in range(rounds):
        for name, loop in loops.items():
            with cuda_peak(device, memory, f"cuda_peak_allocated_mb_{name.replace(' ', '_')}"):
                result = loop()
            seen = best.get(name, {}).get("all_images_per_s", []) + [result["images_per_s"]]
            if name not in best or result["images_per_s"] > best[name]["images_per_s"]:
                best[name] = result
            best[name]["all_images_per_s"] = seen
            say(progress, f"  round {r + 1}/{rounds}: {name}: {result['images_per_s']:.0f} images/s")
    textbook, plain, harness = best.pop("textbook"), best.pop("harness_plain"), best.pop("harness")
    out = {"textbook": textbook, "harness_plain": plain, "harness": harness,
                         "speedup": harness["images_per_s"] / textbook["images_per_s"],
                         "speedup_plain": plain["images_per_s"] / textbook["images_per_s"],
                         "rounds": rounds}
    if ablate:
        out["ablation"] = best
    return out


def _tracking(cfg: RunConfig, train_full, test, evaluator, o: BenchmarkOptions, progress: bool) -> dict[str, Any]:
    """Wall time of whole runs with MLflow tracking on against off."""
    import tempfile

    from bench.experiment import Context

    n = o.track_eval_n
    tcfg = apply_overrides(cfg, {"data.train_subset": o.track_subset, "optim.epochs": o.track_epochs,
                                 "eval.n_samples": n, "eval.n_real": min(n, len(test)),
                                 "eval.n_per_class": max(2, n // 10), "eval.splits": min(cfg.eval.splits, n)})
    with tempfile.TemporaryDirectory(prefix="gan-bench-perf-") as tmp:
        return tracking_overhead(tcfg, Context(train_full.device, train_full, test, evaluator), Path(tmp),
                                            repeats=o.track_repeats, progress=progress)


def _compute_rows(c: dict) -> list[tuple[str, str, str]]:
    rows = []
    for name, label in (("textbook", "textbook loop"), ("harness", "harness loop")):
        x = c[name]
        rows.append((f"compute, {label}", f"{x['gflops']:.1f} GFLOP/s",
                     f"{x['pct_of_peak']:.0f}% of the {x['precision']} conv peak; {x['gflop_per_image']:.3f} GFLOP "
                     f"per image; at the peak {x['images_per_s_at_peak']:.0f} images/s"))
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in c["peak_gflops"].items())
    rows.append(("conv peak (measured)", f"{peaks} GFLOP/s",
                 f"128->128 3x3 conv; harness at that peak = {c['speedup_at_peak']:.2f}x textbook"))
    return rows


def format_benchmark(r: dict) -> str:
    t, e, k, m = r["throughput"], r["eval"], r["tracking"], r["memory"]
    rows = [
        ("textbook loop", f"{t['textbook']['images_per_s']:.1f} images/s",
         f"DataLoader ({t['textbook']['dataloader_workers']} workers) + transforms, fp32, .item() every step"),
        ("harness loop, plain path", f"{t['harness_plain']['images_per_s']:.1f} images/s",
         f"{t['speedup_plain']:.2f}x textbook (device-resident data only)"),
        ("harness loop", f"{t['harness']['images_per_s']:.1f} images/s", f"{t['speedup']:.2f}x textbook"),
        *((f"  {name}", f"{a['images_per_s']:.1f} images/s",
           f"{a['images_per_s'] / t['harness']['images_per_s']:.2f}x harness")
          for name, a in t.get("ablation", {}).items()),
        *_compute_rows(r["compute"]),
        ("evaluation", f"{e['seconds']:.2f} s",
         f"{e['model']}: {e['n_generated']:,} generated + {e['n_real']:,} real; "
         f"{e['seconds_cached_real']:.2f} s with real features cached"),
        ("tracking overhead", f"{k['overhead_pct']:.2f} %",
         f"{k['tracking_s']:.2f} s in MLflow calls / {k['trial_s_off']:.2f} s trial "
         f"(A/B wall-clock difference {k['ab_overhead_pct']:+.1f} %); most: "
         + ", ".join(f"{n} {v:.2f} s" for n, v in list(k.get("tracking_s_by_call", {}).items())[:3])),
    ]
    for lv in r["concurrency"]["levels"]:
        rows.append((f"{lv['trials']} concurrent trial(s)", f"{lv['images_per_s']:.1f} images/s",
                     f"{lv['vs_first']:.2f}x one trial; {lv['threads_each']} thread(s) each"))
    rows += format_groups(r["groups"]) if "groups" in r else []
    rows.append(("peak host RSS", f"{m['host_peak_rss_mb']:.0f} MB",
                 f"this process; largest concurrent worker {m['workers_peak_rss_mb']:.0f} MB"))
    if "cuda_peak_allocated_mb" in m:
        rows.append(("peak CUDA allocated", f"{m['cuda_peak_allocated_mb']:.0f} MB", ""))
    w0, w1 = max(len(a) for a, _, _ in rows), max(len(b) for _, b, _ in rows)
    lines = [f"gan-bench perf bench: {r['model']}, batch {r['batch_size']}, {t['harness']['steps']} steps per loop "
             f"(best of {t.get('rounds', 1)} rounds) on {r['device']} ({r['device_name']}), torch {r['torch']}",
             "  fast path: " + ", ".join(f"{k2}={v}" for k2, v in r["fast_path"].items()),
             f"  load average {r['load_avg_start'][0]:.1f} at start, {r['load_avg_end'][0]:.1f} at end "
             f"({r['cpu_count']} cores, {r['threads']} threads); concurrency: {r['concurrency']['mode']}; "
             f"evaluator: {e['evaluator']}"]
    lines += [f"  {a:<{w0}}  {b:>{w1}}  {c}".rstrip() for a, b, c in rows]
    lines.append(f"  total {r['total_s']:.0f} s")
    return "\n".join(lines)
