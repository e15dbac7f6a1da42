"""The CUDA-graph step, checked on the CPU.

A CUDA graph replays the kernels of the iteration it recorded, with the scalars they had then. So an
iteration is capturable when (1) it makes no host sync and (2) every iteration dispatches the same
kernels with the same non-tensor arguments: what changes (the iteration count, Adam's step, a running
mean's weight) must be a device tensor. (1) is `tests/test_gpu_path.py`'s counter; (2) is recorded here
for every technique. The wrapper's plumbing (warm-up, input buffers, replays, fallback, recapture after
a load) is driven with a stand-in for `torch.cuda.graph` whose replay runs the recorded function: its
runs must equal the plain step's exactly.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench.data import DeviceDataset
from bench.run_config import build_config
from bench.step import GANStep, build_grouped_step, build_step
from bench.step.graphed import WARMUP, GraphedStep, graph_refusal
from bench.train import Checkpoint, Member, train
from tests.conftest import random_data
from tests.step.test_grouped import (CASES, MEMBERS, NORMALIZED, TINY, Recorder, assert_close_states, configs,
                                     members)
from tests.test_gpu_path import host_syncs

REPLAY_CASES = {**CASES, **{f"{k}-norm": v for k, v in NORMALIZED.items()},
                "dcgan-hist-avg-spectral": {"model.name": "dcgan", "techniques.hist_avg_lambda": 0.1,
                                            "model.d_spectral_norm": True}}


class _Kernels(TorchDispatchMode):
    """Every dispatched op with its non-tensor arguments (a tensor stands for its shape and dtype)."""

    def __init__(self):
        super().__init__()
        self.ops: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append((func.name(), _shape_of(args), _shape_of(kwargs or {})))
        return func(*args, **(kwargs or {}))


def _shape_of(x):
    if isinstance(x, torch.Tensor):
        return ("tensor", tuple(x.shape), x.dtype)
    if isinstance(x, (list, tuple)):
        return tuple(_shape_of(v) for v in x)
    if isinstance(x, dict):
        return tuple((k, _shape_of(v)) for k, v in sorted(x.items()))
    if x is None or isinstance(x, (bool, int, float, str, torch.dtype, torch.device, torch.memory_format,
                                   torch.layout)):
        return x
    return type(x).__name__  # a profiler handle and the like: not an argument a kernel computes with


def kernels_of(fn) -> list[tuple]:
    with _Kernels() as k:
        fn()
    return k.ops


def test_the_recorder_sees_a_changing_host_scalar():
    x, count = torch.ones(3), [1]

    def running_mean_on_the_host():
        count[0] += 1
        x.mul_(1.0 / count[0])

    assert kernels_of(running_mean_on_the_host) != kernels_of(running_mean_on_the_host)


@pytest.mark.parametrize("case", sorted(REPLAY_CASES))
def test_every_iteration_dispatches_the_same_kernels_without_a_host_sync(case):
    cfg = build_config(overrides={**TINY, **REPLAY_CASES[case], "seed": 1})
    torch.manual_seed(cfg.seed)
    data = random_data(256)
    step = build_step(cfg, data)
    feed = data.epoch(cfg.optim.batch_size, torch.Generator().manual_seed(0))
    for _ in range(WARMUP):  # first-call setup (optimizer state, the EMA's first copy) comes before capture
        step.iteration([feed])

    def one_iteration():  # the batches come from outside, as the graph's input buffers do
        batches = [next(feed) for _ in range(step.batches_per_iteration)]
        return kernels_of(lambda: step.iteration([iter(batches)]))

    with host_syncs() as syncs:
        first, second = one_iteration(), one_iteration()
    assert syncs == []
    assert len(first) > 50
    assert first == second


@pytest.mark.parametrize("case", ["cgan-conv-dropout2d-r1", "cgan-mlp-targets-noise-ema", "vanilla-dropout-wgan-gp"])
def test_a_groups_iterations_dispatch_the_same_kernels_without_a_host_sync(case):
    cfgs, data = configs(CASES[case]), random_data(256)
    step = build_grouped_step(cfgs, [data] * len(cfgs))
    feeds = [data.epoch(16, torch.Generator().manual_seed(k)) for k in range(len(cfgs))]
    for _ in range(WARMUP):
        step.iteration(feeds)

    def one_iteration():
        batches = [[next(f) for _ in range(step.batches_per_iteration)] for f in feeds]
        return kernels_of(lambda: step.iteration([iter(b) for b in batches]))

    with host_syncs() as syncs:
        first, second = one_iteration(), one_iteration()
    assert syncs == [] and len(first) > 100 and first == second


# -- the wrapper, with a stand-in for torch.cuda.graph -------------------------------------------


class _Recorded:
    """Capture records the function without running it; each replay runs it into the same output buffer."""

    def __init__(self, log: list[str]):
        self.log = log

    def __call__(self, fn, stream, generators):
        self.log.append("capture")
        out = torch.empty(0)  # a replay writes it; nothing runs at capture
        return _Replay(fn, out, self.log), out


class _Replay:
    def __init__(self, fn, out, log):
        self.fn, self.out, self.log = fn, out, log

    def replay(self):
        self.log.append("replay")
        result = self.fn()
        self.out.resize_(result.shape).copy_(result)  # in place: the step returns this very tensor


def _refused(fn, stream, generators):
    try:
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore detail")
    finally:  # as torch.cuda.graph's exit does: ending the broken capture raises its own error
        raise RuntimeError("CUDA error: operation failed due to a previous error during capture")


CFG = {**TINY, "model.name": "cgan-conv", "techniques.ema_decay": 0.9, "techniques.hist_avg_lambda": 0.1,
       "optim.epochs": 2, "seed": 3}


def _train(wrap=None, checkpoint=None, epochs: int = 2):
    cfg = build_config(overrides={**CFG, "optim.epochs": epochs})
    data = random_data(96)
    torch.manual_seed(cfg.seed)
    step = build_step(cfg, data)
    if wrap is not None:
        step = GraphedStep(step, wrap)
    (m,) = members([cfg], data, checkpoint=checkpoint)
    (result,) = train(step, [m], progress=False)
    return m.tracker, result, step


def _assert_same_run(a, b):
    (ta, ra, sa), (tb, rb, sb) = a, b
    assert {k: v for k, v in ta.metrics.items() if not k.startswith("time/")} == \
           {k: v for k, v in tb.metrics.items() if not k.startswith("time/")}
    for net in ("G", "D"):
        for k, v in sa.state_dict(0)[net].items():
            assert torch.equal(v, sb.state_dict(0)[net][k]), (net, k)


def test_replayed_iterations_equal_the_eager_step():
    log: list[str] = []
    eager, graphed = _train(), _train(_Recorded(log))
    _assert_same_run(eager, graphed)
    iterations = len(eager[1].history.steps) and int(eager[2].state_dict(0)["iteration"])
    assert log == ["capture"] + ["replay"] * (iterations - WARMUP)
    assert graphed[0].tags["train.cuda_graph"] == "on"


def test_a_failed_capture_trains_on_eagerly_says_why_once_and_tags_the_run(capsys):
    eager, fallen = _train(), _train(_refused)
    _assert_same_run(eager, fallen)
    assert fallen[0].tags["train.cuda_graph"] == ("off: capture failed (CUDA error: operation not permitted when "
                                                   "stream is capturing)")
    _train(_refused)
    assert capsys.readouterr().err.count("CUDA graph capture failed") == 1


def test_loading_a_state_drops_the_graph_and_captures_again_after_a_warm_up(tmp_path):
    log: list[str] = []
    ckpt = Checkpoint(tmp_path / "ckpt.pt")
    _train(_Recorded(log), checkpoint=ckpt, epochs=1)
    log.clear()
    resumed = _train(_Recorded(log), checkpoint=ckpt, epochs=2)
    assert log[0] == "capture" and "capture" not in log[1:]
    straight = _train(epochs=2)
    _assert_same_run(straight, resumed)


def test_graphs_are_for_cuda_with_the_fast_path_and_no_compile():
    cfg = build_config(overrides={**TINY, "model.name": "dcgan"})
    cuda = torch.device("cuda")
    assert graph_refusal(cfg, cuda) is None
    assert graph_refusal(cfg, torch.device("cpu")) == "not on CUDA"
    for change, reason in [({"train.cuda_graph": False}, "train.cuda_graph is off"),
                           ({"train.fast": False}, "train.fast is off"),
                           ({"train.compile": "default"}, "train.compile is 'default'")]:
        assert graph_refusal(build_config(overrides={**TINY, "model.name": "dcgan", **change}), cuda).startswith(reason)
    step = build_step(cfg, random_data(64))
    assert isinstance(step, GANStep) and not step.opt_d.param_groups[0]["capturable"]


def test_a_replayed_group_equals_the_eager_group_and_a_dropped_member_is_recorded_again():
    cfgs, data = configs(CASES["cgan-mlp-targets-noise-ema"]), random_data(512)

    def run(graphed: bool, log: list[str]):
        step = build_grouped_step(cfgs, [data] * 3)
        if graphed:
            step = GraphedStep(step, _Recorded(log))
        feeds = [data.epoch(16, torch.Generator().manual_seed(k)) for k in range(3)]
        stats = [step.iteration(feeds).clone() for _ in range(WARMUP + 2)]  # captured at the 4th, replayed
        step.drop(1)  # member 1 stops (diverged, pruned): the others go on
        stats += [step.iteration(feeds).clone() for _ in range(WARMUP + 2)]
        return stats, step

    log: list[str] = []
    (eager, e_step), (replayed, g_step) = run(False, []), run(True, log)
    assert log == ["capture", "replay", "replay", "capture", "replay", "replay"]
    for a, b in zip(eager, replayed, strict=True):
        assert torch.equal(a[[0, 2]], b[[0, 2]])
    for k in range(3):
        assert_close_states(e_step.state_dict(k), g_step.state_dict(k), atol=0)
    assert g_step.tags["train.cuda_graph"] == "on" and g_step.tags["train.group_size"] == "3"


# -- on a GPU (skipped elsewhere): the real capture ------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
@pytest.mark.parametrize("case", ["dcgan-report000-uniform", "cgan-mlp-targets-noise-ema", "batch-norm",
                                  "cgan-conv-dropout2d-r1", "dcgan-hist-avg-spectral"])
def test_on_cuda_a_graphed_run_is_captured_and_follows_the_eager_one(case):
    """Same kernels, same Philox offsets: the curves agree to cuDNN's autotuning (it may pick other kernels)."""
    def run(graph: bool):
        cfg = build_config(overrides={**TINY, **REPLAY_CASES[case], "device": "cuda", "seed": 1,
                                      "train.cuda_graph": graph})
        cpu = random_data(256)
        data = DeviceDataset(cpu.images, cpu.labels, "cuda")
        torch.manual_seed(cfg.seed)
        step = build_step(cfg, data)
        m = Member(cfg, data, Recorder())  # no evaluation: the curves are what is compared
        train(step, [m], progress=False)
        return m.tracker, step

    (eager, _), (graphed, step) = run(False), run(True)
    assert isinstance(step, GraphedStep) and graphed.tags["train.cuda_graph"] == "on"
    for key, values in eager.metrics.items():
        if key.startswith("train/"):
            for s, v in values.items():
                assert graphed.metrics[key][s] == pytest.approx(v, rel=1e-2, abs=0.1 if "acc" in key else 1e-3), key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_on_cuda_a_graphed_group_is_captured_and_follows_the_eager_group():
    """Members draw from their own CUDA generators (registered with the graph): same curves as eager."""
    cpu = random_data(256)
    data = DeviceDataset(cpu.images, cpu.labels, "cuda")

    def run(graph: bool):
        cfgs = [build_config(overrides={**TINY, **CASES["cgan-conv-dropout2d-r1"], **m, "device": "cuda",
                                        "train.cuda_graph": graph}) for m in MEMBERS]
        step = build_grouped_step(cfgs, [data] * len(cfgs))
        ms = [Member(c, data, Recorder()) for c in cfgs]
        train(step, ms, progress=False)
        return ms, step

    (eager, _), (graphed, step) = run(False), run(True)
    assert isinstance(step, GraphedStep) and graphed[0].tracker.tags["train.cuda_graph"] == "on"
    for a, b in zip(eager, graphed):
        for key, values in a.tracker.metrics.items():
            if key.startswith("train/"):
                for s, v in values.items():
                    assert b.tracker.metrics[key][s] == pytest.approx(v, rel=1e-2, abs=0.1 if "acc" in key else 1e-3)
