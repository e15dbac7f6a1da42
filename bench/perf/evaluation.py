"""Time of the per-epoch evaluation (10k + 10k images) and of MLflow tracking in a short trial."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from bench.run_config import apply_overrides, RunConfig
from bench.data import DeviceDataset
from bench.evaluator import Evaluator, evaluate_gan, evaluator_path, load_or_train
from bench.metrics import registry
from bench.models import LeNet
from bench.perf.common import say, sync
from bench.step import build_step


def timing_evaluator(cfg: RunConfig, train_full: DeviceDataset, test: DeviceDataset) -> Evaluator:
    """The shipped or cached evaluator when there is one; else an untrained LeNet (the same work, for timing only)."""
    if evaluator_path(cfg.data.dataset, cfg.eval).exists():
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
    gan = build_step(cfg, test).gan
    fresh = Evaluator(evaluator.net, evaluator.meta)  # an empty real-feature cache: the first call pays for it
    times, metrics = [], {}
    for _ in range(2):
        sync(test.device)
        t0 = time.perf_counter()
        metrics = evaluate_gan(gan, fresh, test, ecfg, cfg.model.latent_dim, seed=cfg.seed)
        sync(test.device)
        times.append(time.perf_counter() - t0)
    missing = set(registry.evaluated(conditional=True, num_classes=test.num_classes)) - set(metrics)
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
        say(progress, f"  tracking: repeat {r + 1}/{repeats}: off {off[-1]:.2f} s, on {on[-1]:.2f} s "
                       f"({watch.seconds:.2f} s in {watch.calls} tracking calls)")
    trial_off, trial_on, tracking_s = min(off), min(on), statistics.median(inside)
    return {"trial_s_off": trial_off, "trial_s_on": trial_on, "tracking_s": tracking_s,
            "overhead_pct": 100 * tracking_s / trial_off, "ab_overhead_pct": 100 * (trial_on - trial_off) / trial_off,
            "repeats": repeats, "epochs": cfg.optim.epochs, "train_subset": cfg.data.train_subset,
            "tracking_s_by_call": dict(sorted(by_name.items(), key=lambda kv: -kv[1]))}
