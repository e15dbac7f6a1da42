"""One training run end to end: data, models, evaluator, training loop, MLflow run.

Order matters: everything that can fail because of bad input (config, data files, the
tracking store) is checked before a run is created, so a typo never leaves an empty run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from bench import data as data_mod
from bench import techniques
from bench.evaluator import Evaluation, Evaluator, load_or_train
from bench.models import GAN, MODELS, count_params, eval_mode, sample_latent, summary
from bench.plots import curves_figure, image_grid
from bench.run_config import RunConfig, params
from bench.step import build_grouped_step, build_step, resolve_device
from bench.tracking import TAG_CONFIG_ID, TAG_DIVERGED, MlflowTracker, NullTracker, ensure_experiment, git_commit
from bench.train import Checkpoint, EpochHook, Member, TrainResult, train

GRID_COLUMNS = 10
# A finished run's last checkpoint (nets, optimizers, RNG and data order, history): what extending it to more
# epochs continues from (`bench.studies.extend`). Kept with the run, so it goes wherever the run goes.
STATE_ARTIFACT = "checkpoints/state.pt"


@dataclass
class Context:
    """Everything a run needs besides its config, loaded once (studies reuse it across trials)."""

    device: torch.device
    train_full: data_mod.DeviceDataset
    test: data_mod.DeviceDataset
    evaluator: Evaluator


@dataclass
class RunResult:
    run_id: str | None
    metrics: dict[str, float]
    result: TrainResult
    gan: GAN


def prepare(cfg: RunConfig, progress: bool = True, tracking_uri: str | None = None,
            experiment: str | None = None) -> Context:
    """Device, data and evaluator, checked in the order that writes nothing on bad input:
    data files (`DataError`), then the tracking store (`TrackingError`), then training."""
    device = resolve_device(cfg.device)
    root = data_mod.resolve_root(cfg.data.root)
    kw = dict(device=device, download=cfg.data.download)
    train_full = data_mod.load_dataset(root, cfg.data.dataset, "train", **kw)
    test = data_mod.load_dataset(root, cfg.data.dataset, "test", **kw)
    if tracking_uri is not None:
        ensure_experiment(tracking_uri, experiment or "gan-bench")
    evaluator = load_or_train(cfg.data.dataset, train_full, test, cfg.eval, progress=progress).to(device)
    return Context(device, train_full, test, evaluator)


def run_name(cfg: RunConfig) -> str:
    labels = [f"{k}={v}" for k, v in techniques.technique_labels(cfg).items()]
    return ",".join([cfg.model.name, *labels, f"seed={cfg.seed}"])


def config_id(cfg: RunConfig) -> str:
    """Identifies a configuration across seeds (runs that differ only by seed share it)."""
    flat = {k: v for k, v in params(cfg).items() if k != "seed"}
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_tags(cfg: RunConfig, device: torch.device) -> dict[str, str]:
    labels = techniques.technique_labels(cfg)
    tags = {"model_family": cfg.model.name, "dataset": cfg.data.dataset, "seed": str(cfg.seed),
            "device": str(device), "techniques": ",".join(f"{k}={v}" for k, v in labels.items()) or "baseline",
            "host": platform.node()}
    tags.update({f"technique.{k}": v for k, v in labels.items()})
    tags[TAG_CONFIG_ID] = config_id(cfg)
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def watch_text(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """Where to watch a run while it trains (its curves reach the store every few seconds)."""
    from bench.ui import run_url

    url = run_url(tracking_uri, experiment_id, run_id)
    how = "in the MLflow UI" if tracking_uri.startswith(("http://", "https://")) else "after `gan-bench ui`"
    return f"run {run_id} started; watch it {how}: {url}"


def sample_grid(gan: GAN, noise: torch.Tensor, labels: torch.Tensor | None) -> np.ndarray:
    """HWC uint8 grid from fixed noise; conditional models get one row per class."""
    with eval_mode([gan.generator]), torch.inference_mode():
        images = gan.generator(noise, labels).float()
    grid = image_grid(images, GRID_COLUMNS)
    return (grid.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


@dataclass
class MemberRun:
    """One run of a group: its config and what the caller wants it logged with (as `run`'s arguments)."""

    cfg: RunConfig
    name: str | None = None
    tags: dict[str, Any] | None = None
    hooks: Sequence[EpochHook] = ()
    on_run_start: Callable[[str], None] | None = None
    checkpoint_path: Path | None = None
    # The MLflow run this member continues (an extension, from the checkpoint at `checkpoint_path`): its
    # params and setup are logged already; its curves go on where they stopped.
    continues: str | None = None


def run(cfg: RunConfig, *, tracking_uri: str | None, experiment: str = "gan-bench",
        context: Context | None = None, name: str | None = None, tags: dict[str, Any] | None = None,
        parent_run_id: str | None = None, hooks: Sequence[EpochHook] = (), progress: bool = True,
        log_checkpoints: bool = True, killed_on: tuple[type[BaseException], ...] = (KeyboardInterrupt,),
        on_run_start: Callable[[str], None] | None = None, checkpoint_path: Path | None = None,
        announce: bool = False) -> RunResult:
    """Train `cfg` and log it as one MLflow run (tracking_uri None: tracking off).

    `announce`: print the run id and where to watch it in the MLflow UI as soon as the run exists.
    """
    (result,) = run_group([MemberRun(cfg, name, tags, hooks, on_run_start, checkpoint_path)],
                          tracking_uri=tracking_uri, experiment=experiment, context=context,
                          parent_run_id=parent_run_id, progress=progress, log_checkpoints=log_checkpoints,
                          killed_on=killed_on, announce=announce)
    if isinstance(result, BaseException):
        raise result
    return result


def run_group(runs: Sequence[MemberRun], *, tracking_uri: str | None, experiment: str = "gan-bench",
              context: Context | None = None, parent_run_id: str | None = None, progress: bool = True,
              log_checkpoints: bool = True, killed_on: tuple[type[BaseException], ...] = (KeyboardInterrupt,),
              announce: bool = False) -> list[RunResult | BaseException]:
    """Train several configs together (one `GroupedStep`; check `bench.step.grouping_refusal` first), each
    logged as its own MLflow run exactly as `run` logs it, plus the tags `train.group_size`, `train.group` (the
    run id of the group's first member: every member has it) and `train.group_member` (its place in the group).

    Returns one entry per run: its result, or what stopped it (what one of its hooks raised, e.g. a pruned
    trial; its MLflow run ends as `killed_on` says). The others go on.
    """
    ctx = context or prepare(runs[0].cfg, progress, tracking_uri, experiment)
    device = ctx.device
    parts = [_member_parts(r.cfg, ctx) for r in runs]
    if len(runs) == 1:
        torch.manual_seed(runs[0].cfg.seed)
        step = build_step(runs[0].cfg, parts[0].data, ref_gen=parts[0].ref_gen)
    else:
        step = build_grouped_step([r.cfg for r in runs], [p.data for p in parts], ref_gens=[p.ref_gen for p in parts])
    trackers, open_runs = [], []  # open_runs[k] holds member k's tracker until `_finish` ends its run
    # Until every run has ended, an error ends each run still open with it (FAILED, or KILLED on Ctrl-C).
    with contextlib.ExitStack() as group:
        for k, (r, part) in enumerate(zip(runs, parts)):
            tags = ({TAG_CONFIG_ID: config_id(r.cfg), **(r.tags or {})} if r.continues else
                    {**run_tags(r.cfg, device), **ctx.evaluator.tags(), **(r.tags or {})})
            open_runs.append(group.enter_context(contextlib.ExitStack()))
            tracker = open_runs[-1].enter_context(
                NullTracker() if tracking_uri is None else
                MlflowTracker(tracking_uri, experiment, run_name=r.name or run_name(r.cfg), tags=tags,
                              parent_run_id=parent_run_id, killed_on=killed_on, run_id=r.continues))
            trackers.append(tracker)
            if r.on_run_start is not None and tracker.run_id is not None:
                r.on_run_start(tracker.run_id)
            if announce and tracker.run_id is not None:
                print(watch_text(tracking_uri, tracker.experiment_id, tracker.run_id), flush=True)
            if r.continues:
                tracker.log_dict(r.cfg.model_dump(), "config.json")  # the config it has trained now: its epochs
            else:
                _log_setup(tracker, r.cfg, step.gan_of(k), part)
        if len(runs) > 1 and trackers[0].run_id is not None:  # find a member's group in the UI: tags.train.group
            for k, tracker in enumerate(trackers):
                tracker.set_tags({"train.group": trackers[0].run_id, "train.group_member": str(k)})
        members = [Member(r.cfg, p.data, t, evaluate=p.evaluate, samples=p.samples, hooks=r.hooks,
                          checkpoint=Checkpoint(r.checkpoint_path) if r.checkpoint_path else None,
                          logged=_logged_until(t) if r.continues and t.run_id else None)
                   for r, p, t in zip(runs, parts, trackers)]
        results = train(step, members, progress=progress)
        return [_finish(r, result, tracker, run, log_checkpoints)
                for r, result, tracker, run in zip(runs, results, trackers, open_runs)]


@dataclass
class _Parts:
    """What a run trains on and how it is evaluated and drawn, made before its nets (the RNG order counts)."""

    data: data_mod.DeviceDataset
    ref_gen: torch.Generator
    evaluate: Callable[[GAN], dict[str, float]]
    samples: Callable[[GAN], np.ndarray]
    grid: tuple[torch.Tensor, torch.Tensor | None]


def _member_parts(cfg: RunConfig, ctx: Context) -> _Parts:
    train_data = ctx.train_full
    if cfg.data.train_subset is not None:
        train_data = train_data.subset(cfg.data.train_subset, seed=cfg.seed)
    # The grid's noise, then VBN's reference batches, come from one generator seeded apart from training.
    ref_gen = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)
    n_classes = train_data.num_classes
    conditional = MODELS[cfg.model.name].conditional
    grid_labels = torch.arange(n_classes).repeat_interleave(GRID_COLUMNS).to(ctx.device) if conditional else None
    grid_noise = sample_latent(GRID_COLUMNS * (n_classes if conditional else 8), cfg.model.latent_dim,
                               cfg.model.latent_prior, generator=ref_gen, device=ctx.device)
    return _Parts(train_data, ref_gen,
                  evaluate=Evaluation(ctx.evaluator, ctx.test, cfg.eval, cfg.model.latent_dim, seed=cfg.seed),
                  samples=lambda g: sample_grid(g, grid_noise, grid_labels), grid=(grid_noise, grid_labels))


def _log_setup(tracker, cfg: RunConfig, gan: GAN, part: _Parts) -> None:
    """Params, the config and the nets' summary: what a run logs before it trains."""
    n_g, n_d = count_params(gan.generator), count_params(gan.discriminator)
    tracker.log_params({**params(cfg), "model/g_params": n_g, "model/d_params": n_d,
                        "model/conditional": gan.conditional})
    tracker.log_dict(cfg.model_dump(), "config.json")
    grid_noise, grid_labels = part.grid
    z1 = grid_noise[:2]
    y1 = grid_labels[:2] if grid_labels is not None else None
    tracker.log_text(f"Generator ({n_g:,} parameters)\n{summary(gan.generator, z1, y1)}\n\n"
                     f"Discriminator ({n_d:,} parameters)\n"
                     f"{summary(gan.discriminator, part.data.sample(2, part.ref_gen)[0], y1)}\n",
                     "model_summary.txt")


def _logged_until(tracker) -> tuple[int, int]:
    """(last train step, last evaluated epoch) the tracker's run holds; -1 where it holds none."""
    from bench.step import STEP_METRICS

    keys = tracker.client.get_run(tracker.run_id).data.metrics
    eval_key = next((k for k in sorted(keys) if k.startswith("eval/")), None)

    def last(key: str | None) -> int:
        return max((m.step for m in tracker.client.get_metric_history(tracker.run_id, key)), default=-1) if key else -1

    return last(f"train/{STEP_METRICS[0]}"), last(eval_key)


def _finish(r: MemberRun, result: TrainResult, tracker, run: contextlib.ExitStack,
            log_checkpoints: bool) -> RunResult | BaseException:
    """End one run (`run` holds its tracker): with what stopped it (returned), or FINISHED with its plots, the
    weights it keeps (the evaluated ones) and, for a run with a checkpoint that did not diverge, its last
    checkpoint (`STATE_ARTIFACT`)."""
    try:
        with run:
            if result.raised is not None:
                raise result.raised  # the run ends with it: FAILED, or KILLED as `killed_on` says
            _log_outcome(r, result, tracker, log_checkpoints)
    except BaseException as e:
        if e is result.raised:
            return e
        raise
    if r.checkpoint_path:
        Checkpoint(r.checkpoint_path).remove()  # the run completed: nothing left to resume (its state is logged)
    metrics = {**{f"eval/{k}": v for k, v in result.metrics.items()},
               "time/train_s": result.train_s, "time/eval_s": result.eval_s}
    return RunResult(tracker.run_id, metrics, result, result.gan)


def _log_outcome(r: MemberRun, result: TrainResult, tracker, log_checkpoints: bool) -> None:
    """What a run that trained to its end logs before it ends: the diverged tag, plots, weights, checkpoint."""
    gan = result.gan
    if result.diverged:
        tracker.set_tags({TAG_DIVERGED: "true", "diverged_reason": result.stop_reason})
    for fig_name, fig in curves_figure(result.history).items():
        tracker.log_figure(fig, f"plots/{fig_name}.png")
    if log_checkpoints:
        tracker.log_torch(gan.generator.state_dict(), "checkpoints/generator.pt")
        tracker.log_torch(gan.discriminator.state_dict(), "checkpoints/discriminator.pt")
        state = Checkpoint(r.checkpoint_path).load() if r.checkpoint_path and tracker.run_id else None
        if state is not None and not result.diverged:
            tracker.log_torch(state, STATE_ARTIFACT)
