"""Parity: the fast path learns what the plain path learns (TARR / IS / FID over seeds)."""

from __future__ import annotations

import math
import statistics
import time


from bench.run_config import apply_overrides, RunConfig
from bench.step import resolve_device
from bench.perf.common import PARITY_METRICS, PLAIN, fast_path_summary, say


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def run_parity(cfg: RunConfig, seeds: list[int], progress: bool = True) -> dict:
    """Train cfg with the plain path and with the fast path (cfg's train settings) for each seed."""
    from bench import experiment

    device = resolve_device(cfg.device)
    ctx = experiment.prepare(cfg, progress=progress)
    paths = {"plain": apply_overrides(cfg, PLAIN), "fast": cfg}
    runs: dict[str, list[dict]] = {name: [] for name in paths}
    for name, pcfg in paths.items():
        for seed in seeds:
            scfg = apply_overrides(pcfg, {"seed": seed})
            t0 = time.perf_counter()
            res = experiment.run(scfg, tracking_uri=None, context=ctx, progress=False, log_checkpoints=False)
            metrics = {m: res.metrics[f"eval/{m}"] for m, _, _ in PARITY_METRICS}
            metrics["train_s"] = res.metrics["time/train_s"]
            metrics["stopped_early"] = res.result.stop_reason  # diverged / collapsed: metrics of the last good state
            runs[name].append(metrics)
            say(progress, f"  parity: {name} seed {seed}: "
                           + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
                           + (f", stopped early: {metrics['stopped_early']}" if metrics["stopped_early"] else "")
                           + f" ({time.perf_counter() - t0:.0f} s)")
    summary = {}
    for name in paths:
        summary[name] = {m: dict(zip(("mean", "std"), _mean_std([r[m] for r in runs[name]])))
                         for m in [*(m for m, _, _ in PARITY_METRICS), "train_s"]}
        summary[name]["fast_path"] = fast_path_summary(paths[name], device)
    verdicts = {}
    for m, _, _ in PARITY_METRICS:
        a, b = [r[m] for r in runs["plain"]], [r[m] for r in runs["fast"]]
        diff = statistics.fmean(b) - statistics.fmean(a)
        spread = math.sqrt((_mean_std(a)[1] ** 2 + _mean_std(b)[1] ** 2) / 2)  # pooled seed-to-seed sd
        p_value = None
        if len(a) > 1 and spread > 0:
            from scipy import stats

            p_value = float(stats.ttest_ind(b, a, equal_var=False).pvalue)
        verdicts[m] = {"diff": diff, "seed_sd": spread, "within_spread": abs(diff) <= 2 * spread,
                       "welch_p": p_value}
    return {"model": cfg.model.name, "device": str(device), "seeds": seeds, "epochs": cfg.optim.epochs,
            "train_subset": cfg.data.train_subset, "runs": runs, "summary": summary, "comparison": verdicts,
            "speedup": summary["plain"]["train_s"]["mean"] / summary["fast"]["train_s"]["mean"]}


def format_parity(r: dict) -> str:
    lines = [f"parity: {r['model']}, {r['epochs']} epoch(s) on "
             f"{r['train_subset'] or 'all'} training images, seeds {r['seeds']}, {r['device']}"]
    header = ["path", *(label for _, label, _ in PARITY_METRICS), "train s"]
    table = [header]
    for name in ("plain", "fast"):
        s = r["summary"][name]
        table.append([name, *(f"{s[m]['mean']:.4f} ± {s[m]['std']:.4f}" for m, _, _ in PARITY_METRICS),
                      f"{s['train_s']['mean']:.1f} ± {s['train_s']['std']:.1f}"])
    c = r["comparison"]
    table.append(["fast - plain", *(f"{c[m]['diff']:+.4f}" for m, _, _ in PARITY_METRICS),
                  f"{r['speedup']:.2f}x faster"])
    table.append(["within spread?", *(("yes" if c[m]["within_spread"] else "NO")
                                      + (f" (p={c[m]['welch_p']:.2f})" if c[m]["welch_p"] is not None else "")
                                      for m, _, _ in PARITY_METRICS), ""])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    lines.append("  within spread: |fast - plain| <= 2 x pooled seed-to-seed sd; p: Welch's t-test")
    stopped = [f"{name} seed {seed}" for name in ("plain", "fast")
               for seed, run in zip(r["seeds"], r["runs"][name]) if run.get("stopped_early")]
    if stopped:
        lines.append(f"  stopped early (diverged or collapsed): {', '.join(stopped)}")
    for name in ("plain", "fast"):
        lines.append(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in r["summary"][name]["fast_path"].items()))
    return "\n".join(lines)
