"""The training loop, a driver: epochs, batches, logging windows, evaluation, checkpoints, hooks.

It drives any step with the `bench.step.Step` protocol: K members trained together (K = 1 for
`GANStep`), each with its own data order, curves, evaluation, checkpoint, hooks and tracker. It names
no model and no technique. A member that diverges, collapses or is stopped by one of its hooks (a
pruned trial) stops alone; the others go on.

What makes training fast lives in the step (`bench.step.factory`, `cfg.train`); the loop adds one thing:
the per-step statistics stay on the device and are fetched once per `log_every` steps, for all members.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.data import DeviceDataset
from bench.evaluator import Evaluation, evaluate_gans
from bench.metrics.registry import progress_keys
from bench.models import GAN, eval_mode
from bench.progress import bar as progress_bar
from bench.run_config import RunConfig
from bench.step import STEP_METRICS, Step
from bench.threads import announce

# Called after each epoch's evaluation with (epoch, metrics); may raise to stop its member (optuna.TrialPruned).
EpochHook = Callable[[int, dict[str, float]], None]


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
    gan: GAN | None = None          # the member's GAN as evaluated (e.g. averaged weights): the one to keep
    raised: Exception | None = None  # what one of its hooks raised to stop it (e.g. optuna.TrialPruned)


# The layout of a checkpoint's state and what a step does with it; a checkpoint of another format is not
# continued (`bench.studies.extend` refuses it). Raise it when either changes.
CHECKPOINT_FORMAT = 1


class Checkpoint:
    """Per-epoch training state on disk, so a killed run resumes from its last finished epoch."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> dict | None:
        """The saved state, or None when there is none, or none that can be read: a file that a crash or
        a full disk cut short is removed (said on stderr), so the run trains again from its first epoch
        instead of failing on it every time."""
        if not self.path.exists():
            return None
        try:  # on the CPU whatever device saved it: the step's load_state_dict moves it to its own
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:
            print(f"warning: checkpoint {self.path} cannot be read ({type(e).__name__}: {e}); removed, the run "
                  "trains from its first epoch", file=sys.stderr, flush=True)
            self.remove()
            return None

    def save(self, state: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")  # never shared between processes
        torch.save(state, tmp)
        tmp.replace(self.path)  # atomic: a kill during the save leaves the previous epoch's file

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass
class Member:
    """One model a step trains, as the loop sees it.

    `samples` draws an HWC uint8 grid from fixed noise: logged as "samples" after each epoch (from the
    evaluated GAN) and as "samples_at_step" at `cfg.train.sample_steps` (from the GAN as it trains).
    """

    cfg: RunConfig
    data: DeviceDataset
    tracker: Any
    evaluate: Callable[[GAN], dict[str, float]] | None = None
    samples: Callable[[GAN], Any] | None = None
    hooks: Sequence[EpochHook] = ()
    checkpoint: Checkpoint | None = None
    # (last train step, last evaluated epoch) its tracker's run holds already: it continues that run (an
    # extension), so a checkpoint replays only what comes after. None: a new run, given the whole history.
    logged: tuple[int, int] | None = None


class _Progress:
    """A member's state through the loop."""

    def __init__(self, index: int, member: Member):
        self.k, self.m = index, member
        self.gen = torch.Generator(device="cpu").manual_seed(member.cfg.seed)  # its data order
        self.history = History()
        self.last_eval: dict[str, float] = {}
        self.train_s = self.eval_s = 0.0
        self.first_epoch, self.global_step = 1, 0
        self.stop_reason: str | None = None
        self.raised: Exception | None = None
        self.finite_state: dict | None = None  # its state at the start of the epoch, restored if it diverges

    @property
    def live(self) -> bool:
        return self.stop_reason is None and self.raised is None


def train(step: Step, members: Sequence[Member], *, progress: bool = True) -> list[TrainResult]:
    """Train every member for cfg.optim.epochs; evaluate, checkpoint and call hooks after each epoch; log.

    A non-finite loss or a collapsed generator stops a member early (`diverged`); its result is then the
    evaluation of its last finite state (the weights at the start of the failing epoch). With a
    checkpoint, each finished epoch is saved and a rerun continues after the last one. The members share
    the loop's shape (epochs, batch size, windows), taken from the first member's config.
    """
    announce()  # the command's thread choice, said as its training starts
    cfg = members[0].cfg
    device, batch, epochs = step.device, cfg.optim.batch_size, cfg.optim.epochs
    iters = max(1, members[0].data.batches_per_epoch(batch) // step.batches_per_iteration)
    log_every = cfg.train.log_every if cfg.train.fast else 1
    sample_steps = set(cfg.train.sample_steps)
    runs = [_start(step, _Progress(k, m)) for k, m in enumerate(members)]
    if len({(r.first_epoch, r.global_step) for r in runs}) > 1:
        raise ValueError("the members' checkpoints are at different epochs; a group resumes together")
    first_epoch, global_step = runs[0].first_epoch, runs[0].global_step

    bar = progress_bar(total=epochs * iters, initial=(first_epoch - 1) * iters, desc=cfg.model.name, unit="it",
                       enabled=progress, dynamic_ncols=True)
    for epoch in range(first_epoch, epochs + 1):
        live = [r for r in runs if r.live]
        if not live:
            break
        for r in live:
            r.finite_state = step.state_dict(r.k)
        t0 = _now(device)
        feeds = [r.m.data.epoch(batch, r.gen) for r in runs]
        window = torch.zeros(step.members, len(STEP_METRICS), device=device)
        in_window = 0
        for _ in range(iters):
            window += step.iteration(feeds)
            in_window += 1
            global_step += 1
            for r in live:
                r.global_step = global_step
                if r.m.samples is not None and global_step in sample_steps:
                    r.m.tracker.log_image(r.m.samples(step.gan_of(r.k)), key="samples_at_step", step=global_step)
            if in_window == log_every or global_step == epoch * iters:
                rows = (window / in_window).tolist()  # the one host sync, for every member
                window.zero_()
                in_window = 0
                for r in live:
                    _log_window(step, r, dict(zip(STEP_METRICS, rows[r.k])), epoch, t0)
                live = [r for r in live if r.live]
                if not live:
                    break
                values = dict(zip(STEP_METRICS, rows[live[0].k]))
                bar.set_postfix(loss_d=f"{values['loss_d']:.3f}", loss_g=f"{values['loss_g']:.3f}", refresh=False)
            bar.update()
        elapsed = _now(device) - t0
        for r in live:
            r.train_s += elapsed
        _evaluate_all(step, [r for r in live if _eval_due(r.m, epoch)], epoch)
        for r in live:
            _end_epoch(step, r, epoch, bar)
    bar.close()
    return [_finish(step, r) for r in runs]


def _start(step: Step, r: _Progress) -> _Progress:
    """Tags, then the member's checkpoint if it has one, then G's diversity before training."""
    m = r.m
    m.tracker.set_tags(step.tags)
    saved = m.checkpoint.load() if m.checkpoint else None
    if saved is not None:
        r.first_epoch, r.global_step = saved["epoch"] + 1, saved["global_step"]
        step.load_state_dict(r.k, saved["step"])
        r.gen.set_state(saved["data_rng"])
        step.set_rng_state(r.k, saved)
        r.history, r.last_eval = History(**saved["history"]), saved["last_eval"]
        r.train_s, r.eval_s = saved["train_s"], saved["eval_s"]
        _replay(r.history, m.tracker, after=m.logged or (-1, -1))
        if m.logged is None:
            m.tracker.set_tags({"resumed_from_epoch": saved["epoch"]})
    if m.evaluate is not None and m.cfg.train.collapse_std > 0 and r.history.init_sample_std is None:
        r.history.init_sample_std = initial_sample_std(step.gan_of(r.k), m.cfg.model.latent_dim, step.device,
                                                       seed=m.cfg.seed)
    return r


def _log_window(step: Step, r: _Progress, values: dict[str, float], epoch: int, t0: float) -> None:
    """Record a window's means, or stop the member at its first non-finite one."""
    if all(math.isfinite(v) for v in values.values()):
        _record(r.history, r.m.tracker, values, r.global_step)
        return
    r.stop_reason = f"non-finite loss at step {r.global_step}"
    r.train_s += _now(step.device) - t0
    step.drop(r.k)
    step.load_state_dict(r.k, r.finite_state)
    if r.m.evaluate is not None and (not r.history.epochs or r.history.epochs[-1] != epoch - 1):
        _evaluate(step, r, epoch - 1)


def _end_epoch(step: Step, r: _Progress, epoch: int, bar) -> None:
    """Evaluate (when due) and check for collapse; save the checkpoint; log samples; call the hooks."""
    m = r.m
    if _eval_due(m, epoch):  # evaluated already, with the group (`_evaluate_all`)
        if r.k == 0:
            bar.set_postfix({k: f"{r.last_eval[k]:.3f}" for k in progress_keys() if k in r.last_eval}, refresh=True)
        if collapsed(r.history.eval.get("sample_std", []), m.cfg.train.collapse_std, r.history.init_sample_std):
            r.stop_reason = f"generator collapsed at epoch {epoch} (sample std {r.last_eval['sample_std']:.2g})"
            step.drop(r.k)
            return
    if m.checkpoint is not None:
        state = {"format": CHECKPOINT_FORMAT, "config": m.cfg.model_dump(mode="json"),
                 "epoch": epoch, "global_step": r.global_step, "step": step.state_dict(r.k),
                 "data_rng": r.gen.get_state(), **step.rng_state(r.k),  # torch_rng (and cuda_rng)
                 "history": asdict(r.history), "last_eval": r.last_eval, "train_s": r.train_s, "eval_s": r.eval_s}
        m.checkpoint.save(state)
    if m.samples is not None:  # sample grids and pruning see the evaluated generator
        m.tracker.log_image(m.samples(step.evaluated(r.k)), key="samples", step=epoch)
    try:
        for hook in m.hooks:
            hook(epoch, r.last_eval)
    except Exception as e:  # this member stops (a pruned trial); the others go on
        r.raised = e
        step.drop(r.k)


def _finish(step: Step, r: _Progress) -> TrainResult:
    r.m.tracker.set_tags(step.tags)  # again: how it trained may have changed on the way (a CUDA graph fell back)
    if r.raised is None:
        r.m.tracker.log_metrics({"time/train_s": r.train_s, "time/eval_s": r.eval_s}, step=r.global_step)
        r.m.tracker.flush()
    return TrainResult(metrics=dict(r.last_eval), history=r.history, train_s=r.train_s, eval_s=r.eval_s,
                       diverged=r.stop_reason is not None, stop_reason=r.stop_reason, gan=step.evaluated(r.k),
                       raised=r.raised)


COLLAPSE_VS_INIT = 0.1  # below the threshold and 10x less varied than the untrained G: collapsed from the start


def collapsed(sample_std: list[float], threshold: float, init_std: float | None = None) -> bool:
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

    with eval_mode([gan.generator]):
        gen = torch.Generator(device="cpu").manual_seed(seed)
        labels = torch.arange(n) % gan.num_classes if gan.conditional else None
        return generate(gan, n, latent_dim, device, gen, labels).float().std(dim=0).mean().item()


def _eval_due(m: Member, epoch: int) -> bool:
    return m.evaluate is not None and (epoch % m.cfg.eval.every == 0 or epoch == m.cfg.optim.epochs)


def _evaluate_all(step: Step, due: list[_Progress], epoch: int) -> None:
    """Evaluate these members; a group's together (one batched pass) when their evaluations allow it."""
    first = due[0].m.evaluate if due else None
    if len(due) < 2 or not all(isinstance(r.m.evaluate, Evaluation) and first.shares_with(r.m.evaluate)
                               for r in due):
        for r in due:
            _evaluate(step, r, epoch)
        return
    t0 = _now(step.device)
    results = evaluate_gans([step.evaluated(r.k) for r in due], [r.m.evaluate for r in due])
    share = (_now(step.device) - t0) / len(due)
    for r, metrics in zip(due, results):
        _record_eval(r, metrics, epoch, share)


def _evaluate(step: Step, r: _Progress, epoch: int) -> None:
    t0 = _now(step.device)
    metrics = r.m.evaluate(step.evaluated(r.k))
    _record_eval(r, metrics, epoch, _now(step.device) - t0)


def _record_eval(r: _Progress, metrics: dict[str, float], epoch: int, seconds: float) -> None:
    r.eval_s += seconds
    r.last_eval = metrics
    r.history.epochs.append(epoch)
    for k, v in metrics.items():
        r.history.eval.setdefault(k, []).append(v)
    r.m.tracker.log_metrics({f"eval/{k}": v for k, v in metrics.items()}, step=epoch)


def _replay(history: History, tracker, after: tuple[int, int]) -> None:
    """A resumed run is a new MLflow run: give it the curves of the epochs it did not train itself (those
    after `after`, the last train step and evaluated epoch its run holds already)."""
    for i, step in enumerate(history.steps):
        if step > after[0]:
            tracker.log_metrics({f"train/{k}": v[i] for k, v in history.train.items()}, step=step)
    for i, epoch in enumerate(history.epochs):
        if epoch > after[1]:
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
