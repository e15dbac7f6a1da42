"""The GPU path, checked on the CPU: evaluation without TF32, no host sync inside a training step (one per
logging window in the loop), cuDNN autotuning only on CUDA, checkpoints that load on any device."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from bench import evaluator as ev
from bench.config import EvalConfig
from bench.evaluator import scoring
from bench.models import LeNet
from bench.run_config import build_config
from bench.step import build_gan, build_step
from bench.tracking import NullTracker
from bench import train as train_mod
from bench.train import Checkpoint, Member, train
from tests.conftest import random_data

# ---------------------------------------------------------------------------
# Counting host syncs


class _ScalarReads(TorchDispatchMode):
    """`aten._local_scalar_dense`: the op behind .item(), bool(t), float(t), int(t) (a sync on a GPU)."""

    def __init__(self, where: list[str]):
        super().__init__()
        self.where = where

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.where.append(func.name())
        return func(*args, **(kwargs or {}))


class _HostReads(TorchFunctionMode):
    """.tolist() and .numpy(): they read a tensor's values on the host without a dispatched op on the CPU
    (on a GPU they copy to the host: a sync)."""

    def __init__(self, where: list[str]):
        super().__init__()
        self.where = where

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", None) in ("tolist", "numpy"):
            self.where.append(func.__name__)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def host_syncs() -> Iterator[list[str]]:
    """Inside the block, every read of a tensor's values by the host, by name: what would sync on a GPU."""
    where: list[str] = []
    with _HostReads(where), _ScalarReads(where):
        yield where


def test_the_counter_sees_every_kind_of_host_read():
    t = torch.ones(3)
    with host_syncs() as syncs:
        t.sum().item()
        bool(t[0] > 0)
        float(t[1])
        t.tolist()
        t.numpy()
        torch.where(t > 0, t, -t)  # device-side: not a sync
    assert len(syncs) == 5, syncs


# ---------------------------------------------------------------------------
# 1. Evaluation in full fp32


@pytest.fixture
def tf32_on():
    """Both TF32 flags on (as a user's script might set them), torch's settings back afterwards."""
    precision, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    yield
    torch.set_float32_matmul_precision(precision)
    torch.backends.cudnn.allow_tf32 = cudnn


def _flags() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def _record_flags(monkeypatch, *nets: torch.nn.Module) -> list[tuple[bool, bool]]:
    """The TF32 flags at every forward of the nets' modules and at every FID, as the scoring runs."""
    seen: list[tuple[bool, bool]] = []
    for net in nets:
        for m in net.modules():
            m.register_forward_pre_hook(lambda *_: seen.append(_flags()))
    real_fid = scoring.fid_to_real
    monkeypatch.setattr(scoring, "fid_to_real", lambda *a: seen.append(_flags()) or real_fid(*a))
    return seen


def _small_eval() -> EvalConfig:
    return EvalConfig(n_samples=40, n_per_class=4, n_real=40, splits=2)


def test_evaluate_gan_runs_without_tf32_and_restores_the_flags(tf32_on, monkeypatch):
    torch.manual_seed(0)
    cfg = build_config(overrides={"model.name": "cgan-mlp", "model.hidden": 32, "device": "cpu"})
    gan = build_gan(cfg)
    evaluator = ev.Evaluator(LeNet())
    seen = _record_flags(monkeypatch, gan.generator, gan.discriminator, evaluator.net)
    metrics = ev.evaluate_gan(gan, evaluator, random_data(64), _small_eval(), cfg.model.latent_dim)
    assert "fid" in metrics and "d_acc_real_test" in metrics
    assert len(seen) > 10 and set(seen) == {(False, False)}  # G, D, the evaluator and FID: all in full fp32
    assert _flags() == (True, True)


def test_real_scores_and_the_evaluator_run_without_tf32(tf32_on, monkeypatch):
    torch.manual_seed(0)
    evaluator = ev.Evaluator(LeNet())
    seen = _record_flags(monkeypatch, evaluator.net)
    scores = ev.real_scores(evaluator, random_data(64, seed=1), random_data(64, seed=2), _small_eval())
    assert "fid_train_test" in scores
    assert len(seen) > 10 and set(seen) == {(False, False)}
    assert _flags() == (True, True)
    # The evaluator on its own too (the analyses call it directly), even when it raises.
    seen.clear()
    evaluator(torch.zeros(2, 1, 28, 28))
    assert seen and set(seen) == {(False, False)} and _flags() == (True, True)
    with pytest.raises(RuntimeError):
        evaluator(torch.zeros(2, 3, 28, 28))  # wrong channel count
    assert _flags() == (True, True)


def test_no_tf32_gives_back_a_matmul_precision_set_by_name(tf32_on):
    torch.set_float32_matmul_precision("medium")
    with ev.no_tf32():
        assert _flags() == (False, False)
    assert torch.get_float32_matmul_precision() == "medium" and _flags() == (True, True)


# ---------------------------------------------------------------------------
# 2. cuDNN autotuning: set by build_step on CUDA only (the CUDA side needs a GPU to build a step)


def test_a_cpu_step_leaves_cudnn_benchmark_alone(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    build_step(build_config(overrides={"model.name": "cgan-mlp", "model.hidden": 32, "device": "cpu"}),
               random_data(64))
    assert torch.backends.cudnn.benchmark is False


# ---------------------------------------------------------------------------
# 3. No host sync inside a step


TECHNIQUES = {"techniques.ema_decay": 0.9, "techniques.instance_noise_std": 0.1, "techniques.flip_prob": 0.05,
              "techniques.real_target": 0.9, "techniques.r1_gamma": 1.0, "techniques.hist_avg_lambda": 0.1}


def _cfg(**overrides):
    return build_config(overrides={"model.name": "cgan-mlp", "model.hidden": 32, "device": "cpu", "seed": 0,
                                   "train.amp": False, "optim.batch_size": 32, **TECHNIQUES, **overrides})


def _step(cfg, n: int = 320):
    torch.manual_seed(cfg.seed)
    data = random_data(n)
    return build_step(cfg, data), data


def test_ema_updates_never_sync():
    step, _ = _step(_cfg())
    (ema,) = [t for t in step.hooks.items if type(t).name == "ema"]
    with host_syncs() as syncs:
        for _ in range(4):  # the first update copies G, the others average
            ema.after_step("g")
    assert syncs == []
    assert ema.n_averaged == 4


def test_training_iterations_never_sync():
    step, data = _step(_cfg())
    feed = data.epoch(32, torch.Generator().manual_seed(0))
    step.iteration([feed])  # first-call setup (optimizer state) out of the count
    with host_syncs() as syncs:
        stats = [step.iteration([feed]) for _ in range(4)]
    assert syncs == []
    assert all(torch.isfinite(s).all() for s in stats)


def test_the_loop_syncs_once_per_logging_window():
    epochs, log_every = 2, 3
    cfg = _cfg(**{"optim.epochs": epochs, "train.log_every": log_every})
    step, data = _step(cfg)
    iters = 320 // 32
    with host_syncs() as syncs:
        (result,) = train(step, [Member(cfg, data, NullTracker())], progress=False)
    n = epochs * iters
    assert len(result.history.steps) == epochs * math.ceil(iters / log_every)  # windows: steps 3, 6, 9, 10, ...
    assert len(syncs) == len(result.history.steps) <= math.ceil(n / log_every) + epochs, syncs


# ---------------------------------------------------------------------------
# 4. Checkpoints


def test_checkpoints_load_onto_the_cpu_whatever_saved_them(tmp_path, monkeypatch):
    ckpt = Checkpoint(tmp_path / "ckpt.pt")
    ckpt.save({"w": torch.ones(2)})
    calls = []
    real_load = torch.load
    monkeypatch.setattr(train_mod.torch, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    assert torch.equal(ckpt.load()["w"], torch.ones(2))
    assert calls == [{"map_location": "cpu", "weights_only": True}]


def test_the_checkpoint_keeps_the_rng_and_a_resumed_run_continues_it(tmp_path):
    cfg = _cfg(**{"optim.epochs": 2})

    def final_weights(*, checkpoint=None, hooks=()):
        step, data = _step(cfg)
        train(step, [Member(cfg, data, NullTracker(), hooks=hooks, checkpoint=checkpoint)], progress=False)
        return [p.detach().clone() for p in [*step.G.parameters(), *step.hooks.eval_generator().parameters()]]

    full = final_weights()

    def stop_after_1(epoch, _metrics):
        if epoch == 1:
            raise KeyboardInterrupt  # a killed worker, after saving epoch 1

    ckpt = Checkpoint(tmp_path / "ckpt.pt")
    with pytest.raises(KeyboardInterrupt):
        final_weights(checkpoint=ckpt, hooks=[stop_after_1])
    saved = ckpt.load()
    assert saved["epoch"] == 1 and "torch_rng" in saved
    assert "cuda_rng" not in saved  # saved only when the step runs on CUDA
    assert saved["step"]["techniques"]["ema"]["n_averaged"] == 10  # the EMA's count goes through the checkpoint
    resumed = final_weights(checkpoint=ckpt)  # its RNG after building the step is not epoch 2's: restored
    assert all(torch.equal(a, b) for a, b in zip(resumed, full))
