"""`GraphedStep`: a step whose whole iteration replays from a CUDA graph, without the host.

A batch-32 DCGAN iteration is about 290 kernel launches for under a millisecond of GPU work, so on a GPU
the eager step is bound by Python and launch overhead. A CUDA graph records the iteration once (both
updates, Adam with `capturable=True`, the noise drawn on the device, every technique's hooks) and
replays it with one launch. It wraps a run's `GANStep` or a group's `GroupedStep` (whose per-member
Python loops are exactly the host work a graph removes). What changes from one iteration to the next
lives on the device, where a replay sees it: the batch is copied into the graph's input buffers (the
feed already gathered it from the device-resident split by a device-resident permutation), the Philox
offsets of the default generator and of a group's member generators (registered with the graph)
advance at each replay, and the iteration count and Adam's step count are device tensors.

The first `WARMUP` iterations run eagerly on a side stream (cuDNN autotuning, Adam's state, the
allocator), then the next one is captured and replayed. Capture fails on anything that syncs with the
host or cannot be recorded; the step then says so once, trains on eagerly, and its `train.cuda_graph`
tag says why. Loading a state replaces Adam's state tensors, whose addresses the graph holds, and
dropping a group's member changes what an iteration does: either drops the graph, and the step warms
up and captures again.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

from bench.models import GAN
from bench.step.protocol import Capturable, Feed

_SAID: set[str] = set()  # each reason once per process, not once per run

WARMUP = 3  # eager iterations before capture (the recipe in torch.cuda.graphs' notes uses 3)

# capture(fn, stream, generators) -> (graph, out): records fn's kernels on `stream` without running them
# (with `generators`' states registered, besides the default one); graph.replay() runs them and leaves fn's
# result in `out`. `cuda_capture` on a GPU; the tests pass a stand-in to check the plumbing on a CPU.
Capture = Callable[[Callable[[], torch.Tensor], Any, list], tuple[Any, torch.Tensor]]


def cuda_capture(fn: Callable[[], torch.Tensor], stream: torch.cuda.Stream,
                 generators: list[torch.Generator]) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    graph = torch.cuda.CUDAGraph()
    for g in generators:  # before capture begins, as torch requires
        graph.register_generator_state(g)
    with torch.cuda.graph(graph, stream=stream):  # the warm-up's stream: its library handles exist already
        out = fn()
    return graph, out


def graph_refusal(cfg, device: torch.device) -> str | None:
    """Why a run on `device` trains eagerly rather than from a CUDA graph (None: it is graphed)."""
    t = cfg.train
    if device.type != "cuda":
        return "not on CUDA"
    if not t.cuda_graph:
        return "train.cuda_graph is off"
    if not t.fast:
        return "train.fast is off (the textbook step syncs every iteration)"
    if t.compile != "off":
        return f"train.compile is {t.compile!r} (torch.compile makes its own graphs)"
    return None


class GraphedStep:
    """The `bench.step.Step` protocol of the wrapped step, its iterations replayed from a CUDA graph.

    Built by `bench.step.build_step` / `build_grouped_step` where `graph_refusal` is None; a `GANStep`'s
    optimizers must be capturable (a group's `MemberAdam` always is).
    """

    fell_back: Callable[[str], None] | None = None  # told why a capture failed (else it is said on stderr)

    def __init__(self, step: Capturable, capture: Capture = cuda_capture):
        self.step, self._capture = step, capture
        self.members, self.device = step.members, step.device
        self.batches_per_iteration = step.batches_per_iteration
        self.tags = {**step.tags, "train.cuda_graph": "on"}
        self.graph, self.out, self.inputs = None, None, None
        self.eager_left, self.failed = WARMUP, False
        self.stream = torch.cuda.Stream(step.device) if step.device.type == "cuda" else None
        step.disable_autocast_cache()

    @property
    def gan(self) -> GAN:
        """The only member's GAN, as a `GANStep` has it (for one run's step)."""
        return self.step.gan_of(0)

    def iteration(self, feeds: Sequence[Feed]) -> torch.Tensor:
        """One iteration (see `Step.iteration`); once captured, the result is the graph's output buffer,
        valid until the next iteration."""
        batches = [[next(feed) for _ in range(self.batches_per_iteration)] for feed in feeds]
        if self.graph is None and not self.failed:
            if self.eager_left > 0:
                self.eager_left -= 1
                with _on(self.stream):
                    return self.step.iteration([iter(b) for b in batches])
            self._try_capture(batches)
        if self.graph is None:
            return self.step.iteration([iter(b) for b in batches])
        for mine, given in zip(self.inputs, batches, strict=True):
            for (real, labels), (x, y) in zip(mine, given, strict=True):
                real.copy_(x)
                labels.copy_(y)
        self.graph.replay()
        return self.out

    def _try_capture(self, batches: list[list[tuple[torch.Tensor, torch.Tensor]]]) -> None:
        self.inputs = [[(x.clone(), y.clone()) for x, y in member] for member in batches]
        self.step.zero_grad()
        try:
            self.graph, self.out = self._capture(lambda: self.step.iteration([iter(b) for b in self.inputs]),
                                                 self.stream, list(self.step.generators))
        except Exception as e:  # noqa: BLE001  capture refuses many things (a host sync, an uncapturable op)
            self.graph, self.inputs, self.failed = None, None, True
            while e.__context__ is not None:  # ending a broken capture raises again: name what broke it
                e = e.__context__
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            self.tags["train.cuda_graph"] = f"off: capture failed ({reason})"[:500]
            if self.fell_back is not None:  # the factory's: a run re-tags its fast path, a proof fails
                self.fell_back(reason)
            elif reason not in _SAID:
                _SAID.add(reason)
                print(f"CUDA graph capture failed, training eagerly: {reason}", file=sys.stderr, flush=True)

    def _drop_graph(self) -> None:
        self.graph, self.out, self.inputs = None, None, None
        self.eager_left = WARMUP if not self.failed else 0

    # -- the rest of the protocol: the member's own step ----------------------------------------

    def drop(self, member: int) -> None:
        self.step.drop(member)
        self._drop_graph()  # the group's iteration no longer updates that member: record it again

    def gan_of(self, member: int) -> GAN:
        return self.step.gan_of(member)

    def evaluated(self, member: int) -> GAN:
        return self.step.evaluated(member)

    def state_dict(self, member: int = 0) -> dict:
        return self.step.state_dict(member)

    def load_state_dict(self, member: int, state: dict) -> None:
        self.step.load_state_dict(member, state)
        self._drop_graph()  # the graph holds the addresses of the state tensors just replaced

    def rng_state(self, member: int) -> dict:
        return self.step.rng_state(member)

    def set_rng_state(self, member: int, state: dict) -> None:
        self.step.set_rng_state(member, state)  # a replay reads the generator's state as it is then


@contextlib.contextmanager
def _on(side: torch.cuda.Stream | None):
    """Warm-up iterations run on the side stream that capture will use (torch.cuda.graphs' whole-network
    recipe; cuBLAS and cuDNN create their per-stream handles there before capture, not during it)."""
    if side is None:
        yield
        return
    main = torch.cuda.current_stream(side.device)
    side.wait_stream(main)
    with torch.cuda.stream(side):
        yield
    main.wait_stream(side)
