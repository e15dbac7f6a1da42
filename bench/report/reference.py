"""The reference row: real data through the evaluator the runs used."""

from __future__ import annotations

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
            scores = real_scores(ctx.evaluator, ctx.train_full, ctx.test, cfg.eval)
            cache[key] = (scores, f"reference row: {cfg.data.dataset} real data through the evaluator "
                                  f"{ctx.evaluator.meta.get('version', '')} (TARR column: the evaluator's test accuracy; "
                                  f"IS of {min(cfg.eval.n_real, len(ctx.test))} real test images; FID real train "
                                  "vs real test; per-class accuracy on the test split)")
    return cache[key]
