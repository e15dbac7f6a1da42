"""`gan-bench perf`: how fast trials run on this machine, measured against the textbook loop.

One process, one device. Sections (each prints a progress line while it runs):

* throughput: images/s of the textbook loop (torchvision `datasets.MNIST` + `DataLoader(shuffle=True)`
  + `ToTensor`/`Normalize`, fp32, `.item()` every step, as in pytorch/examples' dcgan), of the harness
  loop with the fast path switched off (`train.fast=false`, fp32, NCHW) and of the harness loop as
  configured (the defaults: the fast path), same model, batch size and number of steps; the loops run
  in rotation for `--rounds` rounds and each reports its best round (robust to bursts of other work);
* evaluation: `evaluate_gan` (IS, TARR, per-class accuracy, FID, D's test accuracy) on N generated
  and N real images, first call (real features computed) and second call (real features cached);
* tracking: one short trial logged to a temporary MLflow SQLite store vs the same trial with tracking
  off; the overhead is the time spent inside tracking calls over the untracked trial time (the A/B
  wall-clock difference is reported too, but on a shared machine it is noisier than 3%);
* concurrency: aggregate images/s of K trials in K processes at once (GPU: sharing the device;
  CPU: the cores split between them, `min(threads, cores // K)` torch threads each);
* memory: peak host RSS (this process and the largest worker) and, on CUDA, peak allocated memory.

`gan-bench perf --parity` instead trains the same short runs with the plain path and the fast path
(3 seeds each) and tells whether TARR / IS / FID differ by more than the seed-to-seed spread.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench import data as data_mod
from bench import techniques
from bench.config import RunConfig, apply_overrides, build_config, load_file
from bench.data import DeviceDataset
from bench.evaluator import Evaluator, cache_dir, evaluate_gan, evaluator_key, load_or_train
from bench.models import LeNet, build_gan, uses_reference
from bench.cli import positive_int
from bench.tracking import NullTracker
from bench.train import GANStep, autocast_dtype, resolve_device, train

DEFAULT_STEPS = 100
DEFAULT_ROUNDS = 2
DEFAULT_WARMUP = 10
DEFAULT_EVAL_N = 10_000
PARITY_MODEL = "cgan-conv"
PARITY_METRICS = (("tarr", "TARR", "higher"), ("is", "IS", "higher"), ("fid", "FID", "lower"))
# The plain path: what the parity check compares the fast path against.
PLAIN = {"train.fast": False, "train.amp": False, "train.channels_last": False, "train.compile": "off"}
# `--ablate`: the harness again with one switch of the fast path flipped (off if on, on if off).
ABLATIONS = ("fast", "joint_d", "channels_last", "amp")


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss_mb() -> float:
    """This process's peak resident memory."""
    # VmHWM first: Linux keeps ru_maxrss across exec, so a spawned worker would report its parent's peak.
    with contextlib.suppress(OSError, StopIteration, ValueError):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("VmHWM:")).split()[1]) / 1024
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux (bytes on macOS)
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


@contextlib.contextmanager
def _cuda_peak(device: torch.device, into: dict, key: str = "cuda_peak_allocated_mb") -> Iterator[None]:
    """Record the device's peak allocated memory over the block (CUDA only)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield
    if device.type == "cuda":
        into[key] = torch.cuda.max_memory_allocated(device) / 2**20


def _fast_path(cfg: RunConfig, device: torch.device) -> dict[str, Any]:
    t = cfg.train
    dtype = autocast_dtype(t, device)
    return {"fast": t.fast, "joint_d": t.fast and t.joint_d, "amp": t.amp, "channels_last": t.channels_last,
            "compile": t.compile if device.type == "cuda" else "off (CPU)",
            "precision": "bf16" if dtype is not None else "fp32"}


# ---------------------------------------------------------------------------
# Throughput: the textbook loop and the harness loop


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
        src = data_mod._require(data_root, spec, stem)
        payload = data_mod._read_bytes(src)
        data_mod._check_sha256(src, payload, spec.sha256[stem], data_root, spec)
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
    gan = build_gan(cfg.model, num_classes=data_mod.DATASETS[cfg.data.dataset].num_classes)
    netG, netD = gan.generator.to(device), gan.discriminator.to(device)
    _set_references(cfg, gan, None)
    o = cfg.optim
    criterion = nn.BCEWithLogitsLoss()  # our D returns logits; the example's D ends in a sigmoid + BCELoss
    optimizerD = torch.optim.Adam(netD.parameters(), lr=o.lr_d, betas=(o.beta1_d, o.beta2_d))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=o.lr_g, betas=(o.beta1_g, o.beta2_g))
    nz, conditional, n_classes = cfg.model.latent_dim, gan.conditional, gan.num_classes
    real_label, fake_label = 1.0, 0.0

    def batches():
        while True:
            yield from loader

    done, t0 = 0, None
    errors = []
    for i, (images, labels) in enumerate(batches()):
        if i == warmup:
            _sync(device)
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
        noise = torch.randn(b, nz, device=device)
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
            _say(progress, f"  textbook: {done}/{steps} steps")
    _sync(device)
    seconds = time.perf_counter() - t0
    if not all(math.isfinite(v) for e in errors for v in e):
        raise RuntimeError("the textbook loop produced non-finite losses")
    return {"steps": steps, "batch_size": batch, "seconds": seconds, "images_per_s": steps * batch / seconds,
            "dataloader_workers": workers}


def _set_references(cfg: RunConfig, gan, data: DeviceDataset | None) -> None:
    """Fixed reference batches for virtual batch norm (as `experiment.run` sets them); no-op otherwise."""
    device = next(gan.generator.parameters()).device
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    k = cfg.model.vbn_ref_size

    def labels() -> torch.Tensor | None:
        return torch.randint(gan.num_classes, (k,), generator=gen).to(device) if gan.conditional else None

    if uses_reference(gan.generator):
        gan.generator.set_reference(torch.randn(k, cfg.model.latent_dim, generator=gen).to(device), labels())
    if uses_reference(gan.discriminator):
        if data is None:  # the textbook loop: a reference of generated images is enough for timing
            y = labels()
            with torch.no_grad():
                x = gan.generator(torch.randn(k, cfg.model.latent_dim, generator=gen).to(device), y)
            gan.discriminator.set_reference(x, y)
        else:
            x, y = data.sample(k, gen)
            gan.discriminator.set_reference(x, y if gan.conditional else None)


def _first(data: DeviceDataset, n: int) -> DeviceDataset:
    return DeviceDataset(data.images[:n], data.labels[:n], data.device, data.num_classes)


def harness_loop(cfg: RunConfig, train_full: DeviceDataset, steps: int, warmup: int,
                 progress: bool = False) -> dict[str, float]:
    """`bench.train.train` (tracking off, no evaluation) for `steps` iterations of cfg's batch size."""
    batch = cfg.optim.batch_size
    per_epoch = min(steps, len(train_full) // batch)
    epochs = math.ceil(steps / per_epoch)
    torch.manual_seed(cfg.seed)
    gan = build_gan(cfg.model, num_classes=train_full.num_classes)
    gan.generator.to(train_full.device)
    gan.discriminator.to(train_full.device)
    _set_references(cfg, gan, train_full)
    if warmup:  # kernels and allocator caches warm, as in the textbook loop's untimed first steps
        train(cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"epochs": 1})}), gan,
              _first(train_full, warmup * batch), NullTracker(), progress=False)
    run_cfg = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"epochs": epochs})})
    result = train(run_cfg, gan, _first(train_full, per_epoch * batch), NullTracker(), progress=progress)
    n = epochs * per_epoch
    return {"steps": n, "batch_size": batch, "seconds": result.train_s, "images_per_s": n * batch / result.train_s}


# ---------------------------------------------------------------------------
# Compute: how close the loops run to what the device can do


def _count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of the convolutions and matmuls (forward and backward) that fn runs, by torch's counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def harness_flops_per_image(cfg: RunConfig, data: DeviceDataset) -> float:
    """FLOPs the harness spends per training image: one iteration (D steps + G steps) over its images."""
    torch.manual_seed(cfg.seed)
    gan = build_gan(cfg.model, num_classes=data.num_classes)
    gan.generator.to(data.device)
    gan.discriminator.to(data.device)
    _set_references(cfg, gan, data)
    step = GANStep(cfg, gan, data.device)
    batch = cfg.optim.batch_size
    real, labels = data.sample(batch, torch.Generator().manual_seed(cfg.seed))
    d_steps, g_steps = techniques.schedule(cfg.techniques)

    def iteration() -> None:
        for _ in range(d_steps):
            step.d_step(real, labels)
        for _ in range(g_steps):
            step.g_step(batch)

    return _count_flops(iteration) / (batch * d_steps)


def textbook_flops_per_image(cfg: RunConfig, device: torch.device) -> float:
    return _count_flops(lambda: textbook_loop(cfg, device, 1, 0, 0, progress=False)) / cfg.optim.batch_size


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
            _sync(device)
            t0 = time.perf_counter()
            conv(x)
            _sync(device)
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


# ---------------------------------------------------------------------------
# Evaluation and tracking


def timing_evaluator(cfg: RunConfig, train_full: DeviceDataset, test: DeviceDataset) -> Evaluator:
    """The cached evaluator when there is one; else an untrained LeNet (the same work, for timing only)."""
    path = cache_dir() / "evaluators" / f"{evaluator_key(cfg.data.dataset, cfg.eval)}.pt"
    if path.exists():
        return load_or_train(cfg.data.dataset, train_full, test, cfg.eval, progress=False).to(test.device)
    torch.manual_seed(0)
    return Evaluator(LeNet(num_classes=test.num_classes).to(test.device), {"untrained": True})


def eval_timing(cfg: RunConfig, evaluator: Evaluator, test: DeviceDataset, n: int) -> dict[str, float]:
    """Seconds for `evaluate_gan` on n generated (n/10 per class) and n real images of a conditional model."""
    n_real = min(n, len(test))
    n_per_class = max(2, n // test.num_classes)
    ecfg = cfg.eval.model_copy(update={"n_samples": n_per_class * test.num_classes, "n_per_class": n_per_class,
                                       "n_real": n_real, "splits": min(cfg.eval.splits, n_per_class)})
    torch.manual_seed(cfg.seed)
    gan = build_gan(cfg.model, num_classes=test.num_classes)
    gan.generator.to(test.device)
    gan.discriminator.to(test.device)
    fresh = Evaluator(evaluator.net, evaluator.meta)  # an empty real-feature cache: the first call pays for it
    times, metrics = [], {}
    for _ in range(2):
        _sync(test.device)
        t0 = time.perf_counter()
        metrics = evaluate_gan(gan, fresh, test, ecfg, cfg.model.latent_dim, seed=cfg.seed)
        _sync(test.device)
        times.append(time.perf_counter() - t0)
    missing = {"is", "fid", "tarr", "class_acc_geomean"} - set(metrics)
    if missing:
        raise RuntimeError(f"evaluate_gan did not return {sorted(missing)} (is {cfg.model.name} conditional?)")
    return {"model": cfg.model.name, "n_generated": n_per_class * test.num_classes, "n_real": n_real,
            "seconds": times[0], "seconds_cached_real": times[1],
            "evaluator": "untrained (timing only)" if evaluator.meta.get("untrained") else "cached"}


class _Stopwatch:
    """Accumulates the wall time spent inside wrapped callables (outermost calls only), per name."""

    def __init__(self):
        self.seconds = 0.0
        self.calls = 0
        self.by_name: dict[str, float] = {}
        self._depth = 0

    def wrap(self, fn: Callable, name: str) -> Callable:
        def timed(*args, **kwargs):
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:  # log_torch calls log_artifact: count the time once
                    dt = time.perf_counter() - t0
                    self.seconds += dt
                    self.calls += 1
                    self.by_name[name] = self.by_name.get(name, 0.0) + dt
        return timed


@contextlib.contextmanager
def _timed_tracking(watch: _Stopwatch) -> Iterator[None]:
    """Time every tracking call `experiment.run` makes: the store check, run tags (git), every tracker method."""
    from bench import experiment
    from bench.tracking import MlflowTracker

    class TimedTracker(MlflowTracker):
        pass

    for name in ("__init__", "log_params", "set_tags", "log_metrics", "flush", "log_image", "log_figure",
                 "log_text", "log_dict", "log_artifact", "log_torch", "end"):
        setattr(TimedTracker, name, watch.wrap(getattr(MlflowTracker, name), name))
    saved = {k: getattr(experiment, k) for k in ("MlflowTracker", "ensure_experiment", "run_tags")}
    experiment.MlflowTracker = TimedTracker
    experiment.ensure_experiment = watch.wrap(saved["ensure_experiment"], "ensure_experiment")
    experiment.run_tags = watch.wrap(saved["run_tags"], "run_tags")
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(experiment, k, v)


def tracking_overhead(cfg: RunConfig, ctx, store_dir: Path, repeats: int = 2,
                      progress: bool = True) -> dict[str, float]:
    """One short trial with MLflow logging (temporary SQLite store) vs the same trial with tracking off."""
    from bench import experiment
    from bench.tracking import ensure_experiment

    uri = f"sqlite:///{store_dir / 'mlflow.db'}"
    # Once per study, not per trial, so not timed: the store, the real features, and a tiny tracked
    # trial for the one-time costs (lazy imports of image and plotting code).
    ensure_experiment(uri, "perf")
    ctx.evaluator.real_reference(ctx.test, min(cfg.eval.n_real, len(ctx.test)))
    tiny = apply_overrides(cfg, {"data.train_subset": 2 * cfg.optim.batch_size, "optim.epochs": 1,
                                 "eval.n_samples": 20, "eval.n_real": 20, "eval.n_per_class": 2, "eval.splits": 1})
    experiment.run(tiny, tracking_uri=uri, experiment="perf", context=ctx, progress=False)
    off, on, inside, by_name = [], [], [], {}
    for r in range(repeats):
        t0 = time.perf_counter()
        experiment.run(cfg, tracking_uri=None, context=ctx, progress=False)
        off.append(time.perf_counter() - t0)
        watch = _Stopwatch()
        with _timed_tracking(watch):
            t0 = time.perf_counter()
            experiment.run(cfg, tracking_uri=uri, experiment="perf", context=ctx, progress=False)
            on.append(time.perf_counter() - t0)
        inside.append(watch.seconds)
        for k, v in watch.by_name.items():
            by_name[k] = by_name.get(k, 0.0) + v / repeats
        _say(progress, f"  tracking: repeat {r + 1}/{repeats}: off {off[-1]:.2f} s, on {on[-1]:.2f} s "
                       f"({watch.seconds:.2f} s in {watch.calls} tracking calls)")
    trial_off, trial_on, tracking_s = min(off), min(on), statistics.median(inside)
    return {"trial_s_off": trial_off, "trial_s_on": trial_on, "tracking_s": tracking_s,
            "overhead_pct": 100 * tracking_s / trial_off, "ab_overhead_pct": 100 * (trial_on - trial_off) / trial_off,
            "repeats": repeats, "epochs": cfg.optim.epochs, "train_subset": cfg.data.train_subset,
            "tracking_s_by_call": dict(sorted(by_name.items(), key=lambda kv: -kv[1]))}


# ---------------------------------------------------------------------------
# Concurrent trials


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
                   "peak_rss_mb": _peak_rss_mb(),
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
        _say(progress, f"  concurrency: {k} trial(s) x {threads} thread(s): {row['images_per_s']:.0f} images/s")
    base = rows[0]["images_per_s"]
    for row in rows:
        row["vs_first"] = row["images_per_s"] / base
    mode = ("processes sharing one GPU" if device.type == "cuda"
            else f"processes sharing {cores} CPU cores, min(threads, cores // K) threads each")
    return {"mode": mode, "levels": rows}


# ---------------------------------------------------------------------------
# The benchmark


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def _load(cfg: RunConfig, device: torch.device) -> tuple[DeviceDataset, DeviceDataset]:
    root = data_mod.resolve_root(cfg.data.root)
    kw = dict(device=device, download=cfg.data.download)
    return (data_mod.load_dataset(root, cfg.data.dataset, "train", **kw),
            data_mod.load_dataset(root, cfg.data.dataset, "test", **kw))


def run_benchmark(cfg: RunConfig, *, steps: int = DEFAULT_STEPS, warmup: int = DEFAULT_WARMUP,
                  eval_n: int = DEFAULT_EVAL_N, eval_model: str = PARITY_MODEL, textbook_workers: int = 2,
                  track_subset: int = 3200, track_epochs: int = 2, track_eval_n: int = 1000,
                  track_repeats: int = 2, levels: list[int] | None = None, ablate: bool = False,
                  rounds: int = DEFAULT_ROUNDS,
                  progress: bool = True) -> dict:
    """Every figure of `gan-bench perf` for cfg (model, batch size, device, data), as a JSON-able dict."""
    import tempfile

    device = resolve_device(cfg.device)
    cores = os.cpu_count() or 1
    if levels is None:
        levels = [1, 2, 4, 8] if device.type == "cuda" else [2**i for i in range(cores.bit_length()) if 2**i <= cores]
    out: dict[str, Any] = {
        "device": str(device), "device_name": _device_name(device), "torch": torch.__version__,
        "host": platform.node(), "cpu_count": cores, "threads": torch.get_num_threads(),
        "load_avg_start": list(os.getloadavg()),
        "model": cfg.model.name, "batch_size": cfg.optim.batch_size, "fast_path": _fast_path(cfg, device)}
    memory: dict[str, Any] = {}
    sections: dict[str, float] = {}
    t_all = t_section = time.perf_counter()

    def section_done(name: str) -> None:
        nonlocal t_section
        now = time.perf_counter()
        sections[name] = now - t_section
        t_section = now

    _say(progress, f"perf: loading {cfg.data.dataset} onto {device}")
    train_full, test = _load(cfg, device)
    section_done("load")

    _say(progress, f"perf [1/4] throughput: {cfg.model.name}, batch {cfg.optim.batch_size}, {steps} steps "
                   f"(+{warmup} warm-up) per loop, best of {rounds} round(s)")
    loops: dict[str, Callable[[], dict]] = {
        "textbook": lambda: textbook_loop(cfg, device, steps, warmup, textbook_workers, progress),
        "harness_plain": lambda: harness_loop(apply_overrides(cfg, PLAIN), train_full, steps, warmup),
        "harness": lambda: harness_loop(cfg, train_full, steps, warmup)}
    if ablate:
        for key in ABLATIONS:
            on = not getattr(cfg.train, key)
            loops[f"{'with' if on else 'without'} {key}"] = functools.partial(
                harness_loop, apply_overrides(cfg, {f"train.{key}": on}), train_full, steps, warmup)
    # Rounds in rotation, best of each: on a shared machine a burst of other work hits one round, not all.
    best: dict[str, dict] = {}
    for r in range(rounds):
        for name, loop in loops.items():
            with _cuda_peak(device, memory, f"cuda_peak_allocated_mb_{name.replace(' ', '_')}"):
                result = loop()
            seen = best.get(name, {}).get("all_images_per_s", []) + [result["images_per_s"]]
            if name not in best or result["images_per_s"] > best[name]["images_per_s"]:
                best[name] = result
            best[name]["all_images_per_s"] = seen
            _say(progress, f"  round {r + 1}/{rounds}: {name}: {result['images_per_s']:.0f} images/s")
    textbook, plain, harness = best.pop("textbook"), best.pop("harness_plain"), best.pop("harness")
    out["throughput"] = {"textbook": textbook, "harness_plain": plain, "harness": harness,
                         "speedup": harness["images_per_s"] / textbook["images_per_s"],
                         "speedup_plain": plain["images_per_s"] / textbook["images_per_s"],
                         "rounds": rounds}
    if ablate:
        out["throughput"]["ablation"] = best
    _say(progress, "  compute: FLOPs per image and the device's conv peak")
    out["compute"] = compute_use(cfg, train_full, out["throughput"])
    section_done("throughput")

    _say(progress, f"perf [2/4] evaluation: {eval_model}, {eval_n:,} generated + {min(eval_n, len(test)):,} real")
    ecfg = apply_overrides(cfg, {"model.name": eval_model})
    evaluator = timing_evaluator(ecfg, train_full, test)
    with _cuda_peak(device, memory, "cuda_peak_allocated_mb_eval"):
        out["eval"] = eval_timing(ecfg, evaluator, test, eval_n)
    _say(progress, f"  evaluation: {out['eval']['seconds']:.2f} s")
    section_done("eval")

    _say(progress, f"perf [3/4] tracking overhead: {cfg.model.name}, {track_epochs} epoch(s) on "
                   f"{track_subset} images, x{track_repeats}")
    from bench.experiment import Context

    tcfg = apply_overrides(cfg, {"data.train_subset": track_subset, "optim.epochs": track_epochs,
                                 "eval.n_samples": track_eval_n, "eval.n_real": min(track_eval_n, len(test)),
                                 "eval.n_per_class": max(2, track_eval_n // 10),
                                 "eval.splits": min(cfg.eval.splits, track_eval_n)})
    with tempfile.TemporaryDirectory(prefix="gan-bench-perf-") as tmp:
        out["tracking"] = tracking_overhead(tcfg, Context(device, train_full, test, evaluator), Path(tmp),
                                            repeats=track_repeats, progress=progress)
    _say(progress, f"  tracking overhead: {out['tracking']['overhead_pct']:.2f}%")
    section_done("tracking")

    _say(progress, f"perf [4/4] concurrent trials: {levels}")
    out["concurrency"] = concurrency(cfg, device, levels, steps, warmup, progress)
    section_done("concurrency")

    memory["host_peak_rss_mb"] = _peak_rss_mb()
    memory["workers_peak_rss_mb"] = max(r["peak_rss_mb_max"] for r in out["concurrency"]["levels"])
    if device.type == "cuda":
        memory["cuda_peak_allocated_mb"] = max(v for k, v in memory.items() if k.startswith("cuda_peak"))
    out["memory"] = memory
    out["load_avg_end"] = list(os.getloadavg())
    out["sections_s"] = sections
    out["total_s"] = time.perf_counter() - t_all
    return out


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
    rows.append(("peak host RSS", f"{m['host_peak_rss_mb']:.0f} MB",
                 f"this process; largest concurrent worker {m['workers_peak_rss_mb']:.0f} MB"))
    if "cuda_peak_allocated_mb" in m:
        rows.append(("peak CUDA allocated", f"{m['cuda_peak_allocated_mb']:.0f} MB", ""))
    w0, w1 = max(len(a) for a, _, _ in rows), max(len(b) for _, b, _ in rows)
    lines = [f"gan-bench perf: {r['model']}, batch {r['batch_size']}, {t['harness']['steps']} steps per loop "
             f"(best of {t.get('rounds', 1)} rounds) on {r['device']} ({r['device_name']}), torch {r['torch']}",
             f"  fast path: " + ", ".join(f"{k2}={v}" for k2, v in r["fast_path"].items()),
             f"  load average {r['load_avg_start'][0]:.1f} at start, {r['load_avg_end'][0]:.1f} at end "
             f"({r['cpu_count']} cores, {r['threads']} threads); concurrency: {r['concurrency']['mode']}; "
             f"evaluator: {e['evaluator']}"]
    lines += [f"  {a:<{w0}}  {b:>{w1}}  {c}".rstrip() for a, b, c in rows]
    lines.append(f"  total {r['total_s']:.0f} s")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Parity: the fast path learns what the plain path learns


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def run_parity(cfg: RunConfig, seeds: list[int], progress: bool = True) -> dict:
    """Train cfg with the plain path and with the fast path (cfg's train settings) for each seed."""
    from bench import experiment

    device = resolve_device(cfg.device)
    ctx = experiment.prepare(cfg, progress=progress)
    paths = {"plain": apply_overrides(cfg, PLAIN), "fast": cfg}
    runs: dict[str, list[dict]] = {name: [] for name in paths}
    for name, pcfg in paths.items():
        for seed in seeds:
            scfg = apply_overrides(pcfg, {"seed": seed})
            t0 = time.perf_counter()
            res = experiment.run(scfg, tracking_uri=None, context=ctx, progress=False, log_checkpoints=False)
            metrics = {m: res.metrics[f"eval/{m}"] for m, _, _ in PARITY_METRICS}
            metrics["train_s"] = res.metrics["time/train_s"]
            metrics["stopped_early"] = res.result.stop_reason  # diverged / collapsed: metrics of the last good state
            runs[name].append(metrics)
            _say(progress, f"  parity: {name} seed {seed}: "
                           + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
                           + (f", stopped early: {metrics['stopped_early']}" if metrics["stopped_early"] else "")
                           + f" ({time.perf_counter() - t0:.0f} s)")
    summary = {}
    for name in paths:
        summary[name] = {m: dict(zip(("mean", "std"), _mean_std([r[m] for r in runs[name]])))
                         for m in [*(m for m, _, _ in PARITY_METRICS), "train_s"]}
        summary[name]["fast_path"] = _fast_path(paths[name], device)
    verdicts = {}
    for m, _, _ in PARITY_METRICS:
        a, b = [r[m] for r in runs["plain"]], [r[m] for r in runs["fast"]]
        diff = statistics.fmean(b) - statistics.fmean(a)
        spread = math.sqrt((_mean_std(a)[1] ** 2 + _mean_std(b)[1] ** 2) / 2)  # pooled seed-to-seed sd
        p_value = None
        if len(a) > 1 and spread > 0:
            from scipy import stats

            p_value = float(stats.ttest_ind(b, a, equal_var=False).pvalue)
        verdicts[m] = {"diff": diff, "seed_sd": spread, "within_spread": abs(diff) <= 2 * spread,
                       "welch_p": p_value}
    return {"model": cfg.model.name, "device": str(device), "seeds": seeds, "epochs": cfg.optim.epochs,
            "train_subset": cfg.data.train_subset, "runs": runs, "summary": summary, "comparison": verdicts,
            "speedup": summary["plain"]["train_s"]["mean"] / summary["fast"]["train_s"]["mean"]}


def format_parity(r: dict) -> str:
    lines = [f"parity: {r['model']}, {r['epochs']} epoch(s) on "
             f"{r['train_subset'] or 'all'} training images, seeds {r['seeds']}, {r['device']}"]
    header = ["path", *(label for _, label, _ in PARITY_METRICS), "train s"]
    table = [header]
    for name in ("plain", "fast"):
        s = r["summary"][name]
        table.append([name, *(f"{s[m]['mean']:.4f} ± {s[m]['std']:.4f}" for m, _, _ in PARITY_METRICS),
                      f"{s['train_s']['mean']:.1f} ± {s['train_s']['std']:.1f}"])
    c = r["comparison"]
    table.append(["fast - plain", *(f"{c[m]['diff']:+.4f}" for m, _, _ in PARITY_METRICS),
                  f"{r['speedup']:.2f}x faster"])
    table.append(["within spread?", *(("yes" if c[m]["within_spread"] else "NO")
                                      + (f" (p={c[m]['welch_p']:.2f})" if c[m]["welch_p"] is not None else "")
                                      for m, _, _ in PARITY_METRICS), ""])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    lines.append("  within spread: |fast - plain| <= 2 x pooled seed-to-seed sd; p: Welch's t-test")
    stopped = [f"{name} seed {seed}" for name in ("plain", "fast")
               for seed, run in zip(r["seeds"], r["runs"][name]) if run.get("stopped_early")]
    if stopped:
        lines.append(f"  stopped early (diverged or collapsed): {', '.join(stopped)}")
    for name in ("plain", "fast"):
        lines.append(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in r["summary"][name]["fast_path"].items()))
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Command line


def _levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return levels


_positive = positive_int


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "perf", help="benchmark: harness vs textbook loop, evaluation, tracking overhead, concurrency; --parity",
        description=__doc__.split("\n\n")[0] + " Prints a table and writes JSON (--out).")
    p.add_argument("--config", help="TOML or JSON config file (base for every run)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set train.amp=true (repeatable)")
    p.add_argument("--model", help=f"model (default: dcgan-report000; with --parity: {PARITY_MODEL})")
    p.add_argument("--batch-size", type=_positive, help="batch size (default: the config's, 32)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--data-root", help="data root in torchvision layout (default: $GANBENCH_DATA_ROOT or ./data)")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"])
    p.add_argument("--seed", type=int)
    p.add_argument("--steps", type=_positive, default=DEFAULT_STEPS, help="timed steps per training loop (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="untimed steps before each loop (default: %(default)s)")
    p.add_argument("--rounds", type=_positive, default=DEFAULT_ROUNDS,
                   help="throughput rounds (all loops in rotation); each loop's best round is reported (default: %(default)s)")
    p.add_argument("--textbook-workers", type=int, default=2, help="DataLoader workers of the textbook loop "
                   "(pytorch/examples' dcgan default) (default: %(default)s)")
    p.add_argument("--eval-n", type=_positive, default=DEFAULT_EVAL_N, help="generated and real images to evaluate (default: %(default)s)")
    p.add_argument("--eval-model", default=PARITY_MODEL, help="conditional model for the evaluation timing (default: %(default)s)")
    p.add_argument("--track-subset", type=_positive, default=3200, help="training images of the tracking trial (default: %(default)s)")
    p.add_argument("--track-epochs", type=_positive, default=2, help="epochs of the tracking trial (default: %(default)s)")
    p.add_argument("--track-eval-n", type=_positive, default=1000, help="evaluation size of the tracking trial (default: %(default)s)")
    p.add_argument("--track-repeats", type=_positive, default=2, help="tracked/untracked trial pairs (default: %(default)s)")
    p.add_argument("--concurrency", type=_levels, help="concurrent trials to measure, e.g. 1,2,4,8 "
                   "(default: 1,2,4,8 on GPU; powers of 2 up to the core count on CPU)")
    p.add_argument("--ablate", action="store_true",
                   help="also time the harness with each fast-path switch flipped (fast, joint_d, channels_last, amp)")
    p.add_argument("--threads", type=_positive, help="torch threads (default: torch's, the core count); "
                   "concurrent trials split them")
    p.add_argument("--parity", action="store_true", help="instead: the fast vs plain path parity comparison")
    p.add_argument("--seeds", type=_positive, default=3, help="--parity: seeds per path (default: %(default)s)")
    p.add_argument("--epochs", type=_positive, default=1, help="--parity: epochs per run (default: %(default)s)")
    p.add_argument("--train-subset", type=int, default=0, help="--parity: training images per run (0: all) (default: %(default)s)")
    p.add_argument("--out", default=None, help="JSON output file (default: perf.json, or parity.json with --parity)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_perf)


def config_from_perf_args(args: argparse.Namespace) -> RunConfig:
    from bench.cli import parse_overrides

    base = load_file(args.config) if args.config else {}
    overrides = parse_overrides(args.overrides)
    model = args.model or (PARITY_MODEL if args.parity else "dcgan-report000")
    shortcuts = {"model.name": model, "optim.batch_size": args.batch_size, "device": args.device,
                 "data.root": args.data_root, "data.dataset": args.dataset, "seed": args.seed}
    if args.parity:
        shortcuts.update({"optim.epochs": args.epochs, "data.train_subset": args.train_subset or None})
    overrides.update({k: v for k, v in shortcuts.items() if v is not None})
    return build_config(base, overrides)


def cmd_perf(args: argparse.Namespace) -> int:
    cfg = config_from_perf_args(args)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _perf(args, cfg)
    finally:
        torch.set_num_threads(threads)  # callers in the same process (tests) keep their setting


def _perf(args: argparse.Namespace, cfg: RunConfig) -> int:
    progress = not args.quiet
    if args.parity:
        result = run_parity(cfg, [cfg.seed + i for i in range(args.seeds)], progress=progress)
        text = format_parity(result)
        out = Path(args.out or "parity.json")
    else:
        result = run_benchmark(cfg, steps=args.steps, warmup=args.warmup, eval_n=args.eval_n,
                               eval_model=args.eval_model, textbook_workers=args.textbook_workers,
                               track_subset=args.track_subset, track_epochs=args.track_epochs,
                               track_eval_n=args.track_eval_n, track_repeats=args.track_repeats,
                               levels=args.concurrency, ablate=args.ablate, rounds=args.rounds,
                               progress=progress)
        text = format_benchmark(result)
        out = Path(args.out or "perf.json")
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {out}")
    return 0
