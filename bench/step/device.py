"""Where and in what precision a step runs."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn

from bench.config import TrainConfig
from bench.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda': no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


@functools.cache
def _cpu_has_native_bf16() -> bool:
    """oneDNN bf16 kernels, on a CPU with bf16 instructions (AVX512-BF16 or AMX); elsewhere bf16 is emulated."""
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: trust oneDNN
        return True
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(train_cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 when `amp` is on and the device runs it natively, else None (fp32)."""
    if not train_cfg.amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        return torch.bfloat16 if _cpu_has_native_bf16() else None
    return None


def has_batch_stats(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


@contextlib.contextmanager
def frozen(params: Iterable[torch.Tensor]) -> Iterator[None]:
    """No gradients for `params` (a net's parameters) inside the block; gradients still flow through the net."""
    params = [p for p in params if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The global RNG states a step on `device` draws from, under the names checkpoints keep them by."""
    state = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(device: torch.device, state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
