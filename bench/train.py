"""The training loop: one D step, one G step, the D:G schedule, and hooks at each epoch's end.

Kept as readable as pytorch/examples' dcgan. What makes it fast (`cfg.train`, each part
switchable; `gan-bench perf` measures them):

* the data is already on the device (`DeviceDataset`): no DataLoader, no per-sample Python;
* `fast`: per-step statistics are accumulated on the device and fetched only every
  `log_every` steps; D's parameters are frozen during the G step (their gradients would be
  thrown away by the next D step); Adam uses its fused kernel;
* `joint_d` (with `fast`): D sees real and fake in one pass when it has no batch statistics
  (then it is the same computation as two passes);
* `amp`: bf16 autocast where the device runs bf16 natively; `channels_last`: NHWC convs;
* `compile` (CUDA only, ignored elsewhere): `torch.compile` of the two forward passes.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from bench.progress import bar as progress_bar

from bench import techniques
from bench.config import ConfigError, RunConfig, TrainConfig
from bench.data import DeviceDataset
from bench.metrics.registry import progress_keys
from bench.models import GAN, sample_latent

STEP_METRICS = ("loss_d", "loss_g", "d_real", "d_fake", "d_acc_real", "d_acc_fake")

# Called after each epoch's evaluation with (epoch, metrics); may raise to stop (e.g. optuna.TrialPruned).
EpochHook = Callable[[int, dict[str, float]], None]


class Diverged(RuntimeError):
    """A loss became non-finite: the run stops and keeps the last finite evaluation."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda': no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


def has_batch_stats(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


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


@contextlib.contextmanager
def frozen(net: nn.Module) -> Iterator[None]:
    """No parameter gradients for `net` inside the block (gradients still flow through it)."""
    params = [p for p in net.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@dataclass
class History:
    """What was logged, kept in memory for the end-of-run curve plots."""

    steps: list[int] = field(default_factory=list)
    train: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in STEP_METRICS})
    epochs: list[int] = field(default_factory=list)
    eval: dict[str, list[float]] = field(default_factory=dict)
    init_sample_std: float | None = None  # G's sample std before training (the collapse check compares to it)


@dataclass
class TrainResult:
    metrics: dict[str, float]
    history: History
    train_s: float
    eval_s: float
    diverged: bool = False
    stop_reason: str | None = None  # why a diverged run stopped early


class Checkpoint:
    """Per-epoch training state on disk, so a killed run resumes from its last finished epoch."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> dict | None:
        return torch.load(self.path, weights_only=True) if self.path.exists() else None

    def save(self, state: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")  # never shared between processes
        torch.save(state, tmp)
        tmp.replace(self.path)  # atomic: a kill during the save leaves the previous epoch's file

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class GANStep:
    """Optimizers and the two update steps; the techniques' hooks act inside them (see
    `bench.techniques`), so this class names no technique. Returns device tensors: no host sync."""

    def __init__(self, cfg: RunConfig, gan: GAN, device: torch.device, total_steps: int = 1):
        self.cfg, self.gan = cfg, gan
        self.G, self.D = gan.generator, gan.discriminator
        self.conditional = gan.conditional
        self.num_classes = getattr(gan, "num_classes", 10)
        self.device = device
        fast = cfg.train.fast
        if cfg.train.channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        self.info = techniques.StepInfo(self.G, self.D, device, total_steps)
        self.tech = techniques.Stack(cfg, self.info)
        o = cfg.optim
        lr_g, lr_d = self.tech.learning_rates(o.effective_lr_g, o.effective_lr_d)
        fused = fast and device.type in ("cpu", "cuda")
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=lr_g, betas=(o.beta1_g, o.beta2_g), fused=fused)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr_d, betas=(o.beta1_d, o.beta2_d), fused=fused)
        # With batch statistics in D (batch norm, minibatch std), a joint pass would mix real and
        # fake examples: keep two passes.
        self.joint_d = fast and cfg.train.joint_d and not has_batch_stats(self.D) and not self.tech.couples_batch
        # D's gradients from the G step are never used (the D step starts with zero_grad): skip them.
        self.d_frozen_in_g = (lambda: frozen(self.D)) if fast else contextlib.nullcontext
        self.precision = autocast_dtype(cfg.train, device)
        self.autocast = (torch.autocast(device.type, dtype=self.precision) if self.precision is not None
                         else contextlib.nullcontext())
        # The forward passes the steps call: the modules themselves, or compiled wrappers (CUDA only;
        # evaluation and checkpoints keep using the plain modules).
        self.g_fwd, self.d_fwd = self.G, self.D
        if cfg.train.compile != "off" and device.type == "cuda":
            self.g_fwd = torch.compile(self.G, mode=cfg.train.compile)
            self.d_fwd = torch.compile(self.D, mode=cfg.train.compile)

    def _noise(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = sample_latent(n, self.cfg.model.latent_dim, self.cfg.model.latent_prior, device=self.device)
        y = torch.randint(self.num_classes, (n,), device=self.device) if self.conditional else None
        return z, y

    def d_step(self, real: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n = real.shape[0]
        real_y = labels if self.conditional else None
        z, fake_y = self._noise(n)
        with torch.no_grad(), self.autocast:
            fake = self.g_fwd(z, fake_y)
        real_t, fake_t = self.tech.d_targets(n, n, self.device)
        with self.autocast:
            real, fake = self.tech.d_input(real, True), self.tech.d_input(fake.to(real.dtype), False)
            if self.joint_d:
                y = torch.cat([real_y, fake_y]) if self.conditional else None
                logits = self.d_fwd(torch.cat([real, fake]), y).float()
                real_logits, fake_logits = logits[:n], logits[n:]
            else:
                real_logits = self.d_fwd(real, real_y).float()
                fake_logits = self.d_fwd(fake, fake_y).float()
            loss = self.tech.d_loss(techniques.Batch(real, fake, real_y, fake_y, fake_logits, real_logits,
                                                     real_t, fake_t))
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        self.tech.after_step("d")
        with torch.no_grad():
            return torch.stack([loss.detach(), torch.sigmoid(real_logits).mean(), torch.sigmoid(fake_logits).mean(),
                                (real_logits > 0).float().mean(), (fake_logits <= 0).float().mean()])

    def g_step(self, real: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One G update on a fresh batch of noise; `real` is there for losses that compare with data."""
        z, y = self._noise(real.shape[0])
        with self.d_frozen_in_g(), self.autocast:  # the graph is recorded without D's parameters
            fake = self.tech.d_input(self.g_fwd(z, y), False)
            b = techniques.Batch(real, fake, labels if self.conditional else None, y, self.d_fwd(fake, y).float())
            loss = self.tech.g_loss(b)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        self.tech.after_step("g")
        return loss.detach()

    def evaluated(self):
        """Inside the block `gan.generator` is the generator techniques want evaluated (e.g. averaged weights)."""
        return techniques.swapped_generator(self.gan, self.tech.eval_generator())

    def state_dict(self) -> dict:
        """Both nets, both optimizers and the techniques' state, copied (later steps do not change it)."""
        return copy.deepcopy({"G": self.G.state_dict(), "D": self.D.state_dict(),
                              "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                              "techniques": self.tech.state_dict()})

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.tech.load_state_dict(state.get("techniques", {}))


def train(cfg: RunConfig, gan: GAN, data: DeviceDataset, tracker, *,
          evaluate: Callable[[], dict[str, float]] | None = None,
          hooks: Sequence[EpochHook] = (), progress: bool = True,
          checkpoint: Checkpoint | None = None, samples: Callable[[], Any] | None = None) -> TrainResult:
    """Train for cfg.optim.epochs; evaluate and call hooks after each epoch; log to tracker.

    A non-finite loss or a collapsed generator stops the run early (`diverged`); its result is
    then the evaluation of its last finite state (the weights at the start of the failing epoch).
    With a `checkpoint`, each finished epoch is saved and a rerun continues after the last one.
    `samples` (an HWC uint8 grid from fixed noise) is logged at the steps in `cfg.train.sample_steps`.
    """
    device = data.device
    d_steps, g_steps = techniques.schedule(cfg)
    batch = cfg.optim.batch_size
    iters = max(1, data.batches_per_epoch(batch) // d_steps)
    step = GANStep(cfg, gan, device, total_steps=cfg.optim.epochs * iters)
    tracker.set_tags({"train.precision": str(step.precision or torch.float32).removeprefix("torch."),
                      "train.joint_d": str(step.joint_d).lower()})
    log_every = cfg.train.log_every if cfg.train.fast else 1
    sample_steps = set(cfg.train.sample_steps)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    history = History()
    last_eval: dict[str, float] = {}
    train_s = eval_s = 0.0
    stop_reason = None
    first_epoch, global_step = 1, 0
    saved = checkpoint.load() if checkpoint else None
    if saved is not None:
        first_epoch, global_step = saved["epoch"] + 1, saved["global_step"]
        step.load_state_dict(saved["step"])
        gen.set_state(saved["data_rng"])
        torch.set_rng_state(saved["torch_rng"])
        history, last_eval = History(**saved["history"]), saved["last_eval"]
        train_s, eval_s = saved["train_s"], saved["eval_s"]
        _replay(history, tracker)
        tracker.set_tags({"resumed_from_epoch": saved["epoch"]})

    if evaluate is not None and cfg.train.collapse_std > 0 and history.init_sample_std is None:
        history.init_sample_std = initial_sample_std(gan, cfg.model.latent_dim, device, seed=cfg.seed)

    bar = progress_bar(total=cfg.optim.epochs * iters, initial=(first_epoch - 1) * iters, desc=cfg.model.name, unit="it",
                       enabled=progress, dynamic_ncols=True)
    for epoch in range(first_epoch, cfg.optim.epochs + 1):
        finite_state = step.state_dict()  # restored if this epoch diverges
        t0 = _now(device)
        batches = data.epoch(batch, gen)
        window = torch.zeros(len(STEP_METRICS), device=device)
        in_window = 0
        for _ in range(iters):
            d_stats = 0
            for _ in range(d_steps):
                real, labels = next(batches)
                d_stats = d_stats + step.d_step(real, labels) / d_steps
            g_loss = sum(step.g_step(real, labels) for _ in range(g_steps)) / g_steps  # G sees D's last batch
            window += torch.cat([d_stats[:1], g_loss.view(1), d_stats[1:]])
            in_window += 1
            global_step += 1
            step.info.step = global_step
            if samples is not None and global_step in sample_steps:
                tracker.log_image(samples(), key="samples_at_step", step=global_step)
            if in_window == log_every or global_step == epoch * iters:
                values = dict(zip(STEP_METRICS, (window / in_window).tolist()))  # the one host sync
                window.zero_()
                in_window = 0
                if not all(math.isfinite(v) for v in values.values()):
                    stop_reason = f"non-finite loss at step {global_step}"
                    break
                _record(history, tracker, values, global_step)
                bar.set_postfix(loss_d=f"{values['loss_d']:.3f}", loss_g=f"{values['loss_g']:.3f}", refresh=False)
            bar.update()
        train_s += _now(device) - t0
        if stop_reason:
            step.load_state_dict(finite_state)
            if evaluate is not None and (not history.epochs or history.epochs[-1] != epoch - 1):
                with step.evaluated():
                    last_eval, eval_s = _evaluate(evaluate, history, tracker, epoch - 1, eval_s, device)
            break

        if evaluate is not None and (epoch % cfg.eval.every == 0 or epoch == cfg.optim.epochs):
            with step.evaluated():
                last_eval, eval_s = _evaluate(evaluate, history, tracker, epoch, eval_s, device)
            bar.set_postfix({k: f"{last_eval[k]:.3f}" for k in progress_keys() if k in last_eval}, refresh=True)
            if _collapsed(history.eval.get("sample_std", []), cfg.train.collapse_std, history.init_sample_std):
                stop_reason = f"generator collapsed at epoch {epoch} (sample std {last_eval['sample_std']:.2g})"
                break
        if checkpoint is not None:
            checkpoint.save({"epoch": epoch, "global_step": global_step, "step": step.state_dict(),
                             "data_rng": gen.get_state(), "torch_rng": torch.get_rng_state(),
                             "history": asdict(history), "last_eval": last_eval,
                             "train_s": train_s, "eval_s": eval_s})
        with step.evaluated():  # sample grids and pruning see the evaluated generator too
            for hook in hooks:
                hook(epoch, last_eval)
    bar.close()
    # The run's generator is the one it evaluated (e.g. averaged weights): checkpoints keep that one.
    gan.generator = step.tech.eval_generator() or gan.generator

    tracker.log_metrics({"time/train_s": train_s, "time/eval_s": eval_s}, step=global_step)
    tracker.flush()
    return TrainResult(metrics=dict(last_eval), history=history, train_s=train_s, eval_s=eval_s,
                       diverged=stop_reason is not None, stop_reason=stop_reason)


COLLAPSE_VS_INIT = 0.1  # below the threshold and 10x less varied than the untrained G: collapsed from the start


def _collapsed(sample_std: list[float], threshold: float, init_std: float | None = None) -> bool:
    """G gives (almost) the same image for every z.

    A freshly initialised G is also nearly constant (sample std ~1e-5..1e-3 in eval mode), so a
    low std alone is not collapse. Two things are: a *loss* of diversity (varied once, not now),
    or, from the first epoch on, far less diversity than the untrained G had.
    """
    if not sample_std or not sample_std[-1] < threshold:
        return False
    lost = len(sample_std) >= 2 and threshold <= max(sample_std[:-1])
    below_init = init_std is not None and sample_std[-1] < COLLAPSE_VS_INIT * init_std
    return lost or below_init


def initial_sample_std(gan: GAN, latent_dim: int, device: torch.device, seed: int = 0, n: int = 256) -> float:
    """Per-pixel std over n samples of G in eval mode, measured like the evaluator's `sample_std`."""
    from bench.evaluator import generate

    G = gan.generator
    was_training = G.training
    G.eval()
    try:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        labels = torch.arange(n) % gan.num_classes if gan.conditional else None
        return generate(gan, n, latent_dim, device, gen, labels).float().std(dim=0).mean().item()
    finally:
        G.train(was_training)


def _evaluate(evaluate, history: History, tracker, epoch: int, eval_s: float, device) -> tuple[dict, float]:
    t0 = _now(device)
    metrics = evaluate()
    eval_s += _now(device) - t0
    history.epochs.append(epoch)
    for k, v in metrics.items():
        history.eval.setdefault(k, []).append(v)
    tracker.log_metrics({f"eval/{k}": v for k, v in metrics.items()}, step=epoch)
    return metrics, eval_s


def _replay(history: History, tracker) -> None:
    """A resumed run is a new MLflow run: give it the curves of the epochs it did not train itself."""
    for i, step in enumerate(history.steps):
        tracker.log_metrics({f"train/{k}": v[i] for k, v in history.train.items()}, step=step)
    for i, epoch in enumerate(history.epochs):
        tracker.log_metrics({f"eval/{k}": v[i] for k, v in history.eval.items()}, step=epoch)


def _record(history: History, tracker, values: dict[str, float], step: int) -> None:
    history.steps.append(step)
    for k, v in values.items():
        history.train[k].append(v)
    tracker.log_metrics({f"train/{k}": v for k, v in values.items()}, step=step)


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
