"""The reference row: real data through the evaluator the runs used."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from bench.report.load import Group, param_value


def reference_scores(groups: list[Group], data_root: str | None, cache: dict,
                     progress=lambda message: None) -> tuple[dict | None, str]:
    """bench.evaluator.real_scores for the dataset and evaluator the runs used, or None and why not."""
    from bench.errors import ConfigError, DataError
    from bench.run_config import all_keys, build_config

    run = next((r for g in groups for r in g.usable), None)
    if run is None:
        return None, "reference row skipped: no finished run to take the dataset and evaluator settings from"
    known = set(all_keys())
    overrides = {k: param_value(v) for k, v in run.params.items() if k in known}
    overrides.update({"data.download": False, "device": "auto"})
    if data_root:
        overrides["data.root"] = data_root
    try:
        cfg = build_config(overrides=overrides)
    except ConfigError as e:
        return None, f"reference row skipped: the runs' config does not load here ({e})"
    key = (cfg.data.dataset, cfg.data.root, cfg.eval.model_dump_json())
    if key not in cache:
        from bench import experiment
        from bench.evaluator import evaluator_path, real_scores

        if not evaluator_path(cfg.data.dataset, cfg.eval).exists():
            progress(f"training the {cfg.data.dataset} evaluator for the reference row (once; it is cached)")
        try:
            ctx = experiment.prepare(cfg, progress=False)
        except DataError as e:
            cache[key] = (None, f"reference row skipped: data not found ({e}); pass --data-root")
        else:
            kept = _kept(cfg, evaluator_path(cfg.data.dataset, cfg.eval), ctx.device)
            scores = json.loads(kept.read_text()) if kept.is_file() else None
            if scores is None:
                scores = real_scores(ctx.evaluator, ctx.train_full, ctx.test, cfg.eval)
                _keep(kept, scores)
            cache[key] = (scores, f"reference row: {cfg.data.dataset} real data through the evaluator "
                                  f"{ctx.evaluator.meta.get('version', '')} (TARR column: the evaluator's test accuracy; "
                                  f"IS of {min(cfg.eval.n_real, len(ctx.test))} real test images; FID real train "
                                  "vs real test; per-class accuracy on the test split)")
    return cache[key]


def _kept(cfg, evaluator_file: Path, device) -> Path:
    """Where the reference scores of this evaluator (its file's identity), dataset, evaluation settings and
    device kind are kept: they take seconds to compute and never change (the data files are checksummed)."""
    from bench.evaluator import cache_dir

    stat = evaluator_file.stat()
    key = json.dumps([cfg.data.dataset, str(evaluator_file.resolve()), stat.st_size, stat.st_mtime_ns,
                      cfg.eval.model_dump(mode="json"), str(getattr(device, "type", device))], sort_keys=True)
    return cache_dir() / "references" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def _keep(path: Path, scores: dict) -> None:
    with contextlib.suppress(OSError):  # a read-only cache only costs the next report the same seconds
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(scores))
        os.replace(tmp, path)
