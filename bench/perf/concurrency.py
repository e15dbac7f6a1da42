"""Aggregate throughput of K harness trials in K processes at once."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import torch

from bench import data as data_mod
from bench.run_config import RunConfig
from bench.data import DeviceDataset
from bench.step import resolve_device
from bench.perf.common import peak_rss_mb, say
from bench.perf.loops import harness_loop


def _concurrency_worker(cfg_json: str, steps: int, warmup: int, threads: int, barrier, queue) -> None:
    """One of K concurrent trials: the harness loop, started together with the others."""
    try:
        torch.set_num_threads(threads)
        cfg = RunConfig.model_validate_json(cfg_json)
        device = resolve_device(cfg.device)
        n = max(steps, warmup) * cfg.optim.batch_size
        split = "test" if n <= 10_000 else "train"  # the smaller file when it is enough: faster start
        images, labels = data_mod.load_split(data_mod.resolve_root(cfg.data.root), cfg.data.dataset, split)
        n = min(n, len(images))
        data = DeviceDataset(images[:n], labels[:n], device, data_mod.DATASETS[cfg.data.dataset].num_classes)
        if warmup:
            harness_loop(cfg, data, warmup, 0)  # warm-up: not timed, before the common start
        barrier.wait()
        t0 = time.time()
        r = harness_loop(cfg, data, steps, 0)
        queue.put({"start": t0, "end": time.time(), "images": r["steps"] * r["batch_size"],
                   "peak_rss_mb": peak_rss_mb(),
                   "cuda_peak_allocated_mb": (torch.cuda.max_memory_allocated(device) / 2**20
                                              if device.type == "cuda" else None)})
    except BaseException as e:  # report instead of hanging the parent
        with contextlib.suppress(Exception):
            barrier.abort()
        queue.put({"error": f"{type(e).__name__}: {e}"})


def _collect(queue, procs) -> list[dict]:
    """One result per worker; a worker that dies without reporting (e.g. killed for memory) is an error."""
    import queue as queue_mod

    results = []
    while len(results) < len(procs):
        try:
            results.append(queue.get(timeout=5))
        except queue_mod.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                for p in procs:
                    p.kill()
                raise RuntimeError(f"a concurrent trial died with exit code {dead[0]}") from None
    for p in procs:
        p.join()
    return results


def concurrency(cfg: RunConfig, device: torch.device, levels: list[int], steps: int, warmup: int,
                progress: bool = True) -> dict[str, Any]:
    """Aggregate images/s of K harness trials in K processes at once, for each K in levels."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fork is unsafe with torch threads (and CUDA)
    cores = os.cpu_count() or 1
    cap = torch.get_num_threads()  # --threads caps each trial's threads
    rows = []
    for k in levels:
        threads = max(1, min(cap, cores // k))  # the cores split (GPU: host threads, no oversubscription)
        barrier, queue = ctx.Barrier(k), ctx.Queue()
        procs = [ctx.Process(target=_concurrency_worker,
                             args=(cfg.model_copy(update={"device": device.type}).model_dump_json(), steps,
                                   warmup, threads, barrier, queue)) for _ in range(k)]
        for p in procs:
            p.start()
        results = _collect(queue, procs)
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            raise RuntimeError(f"concurrent trials failed: {errors[0]}")
        wall = max(r["end"] for r in results) - min(r["start"] for r in results)
        row = {"trials": k, "threads_each": threads, "seconds": wall,
               "images_per_s": sum(r["images"] for r in results) / wall,
               "peak_rss_mb_max": max(r["peak_rss_mb"] for r in results)}
        if device.type == "cuda":
            row["cuda_peak_allocated_mb_max"] = max(r["cuda_peak_allocated_mb"] for r in results)
        rows.append(row)
        say(progress, f"  concurrency: {k} trial(s) x {threads} thread(s): {row['images_per_s']:.0f} images/s")
    base = rows[0]["images_per_s"]
    for row in rows:
        row["vs_first"] = row["images_per_s"] / base
    mode = ("processes sharing one GPU" if device.type == "cuda"
            else f"processes sharing {cores} CPU cores, min(threads, cores // K) threads each")
    return {"mode": mode, "levels": rows}
