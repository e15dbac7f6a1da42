"""Constants and small helpers every part of the benchmark shares."""

from __future__ import annotations

import contextlib
import resource
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from bench.run_config import RunConfig
from bench.metrics import registry
from bench.step import autocast_dtype

DEFAULT_STEPS = 100
DEFAULT_ROUNDS = 2
DEFAULT_WARMUP = 10
DEFAULT_EVAL_N = 10_000
# The tracked trial: 2 epochs of 200 steps at batch 32, still a tenth of one real MNIST epoch. MLflow's
# cost is mostly per run (params, the four curve PNGs), so a shorter trial overstates it.
DEFAULT_TRACK_SUBSET = 6400
PARITY_MODEL = "cgan-conv"
# (name, label, direction) of the metrics the parity check compares, from the metric registry.
PARITY_METRICS = tuple((m.name, m.label, m.direction) for m in map(registry.get, ("eval/tarr", "eval/is", "eval/fid")))
# The plain path: what the parity check compares the fast path against.
PLAIN = {"train.fast": False, "train.amp": False, "train.channels_last": False, "train.compile": "off",
         "train.cuda_graph": False}
# `--ablate`: the harness again with one switch of the fast path flipped (off if on, on if off).
ABLATIONS = ("fast", "joint_d", "channels_last", "amp")
CUDA_ABLATIONS = ("cuda_graph",)  # switches that change nothing elsewhere


def say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mb() -> float:
    """This process's peak resident memory."""
    # VmHWM first: Linux keeps ru_maxrss across exec, so a spawned worker would report its parent's peak.
    with contextlib.suppress(OSError, StopIteration, ValueError):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("VmHWM:")).split()[1]) / 1024
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux (bytes on macOS)
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


@contextlib.contextmanager
def cuda_peak(device: torch.device, into: dict, key: str = "cuda_peak_allocated_mb") -> Iterator[None]:
    """Record the device's peak allocated memory over the block (CUDA only)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield
    if device.type == "cuda":
        into[key] = torch.cuda.max_memory_allocated(device) / 2**20


def fast_path_summary(cfg: RunConfig, device: torch.device) -> dict[str, Any]:
    t = cfg.train
    dtype = autocast_dtype(t, device)
    return {"fast": t.fast, "joint_d": t.fast and t.joint_d, "amp": t.amp, "channels_last": t.channels_last,
            "compile": t.compile if device.type == "cuda" else "off (CPU)",
            "cuda_graph": t.cuda_graph if device.type == "cuda" else "off (CPU)",
            "precision": "bf16" if dtype is not None else "fp32"}


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of the convolutions and matmuls (forward and backward) that fn runs, by torch's counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()
