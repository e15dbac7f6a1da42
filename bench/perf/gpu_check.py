"""`gan-bench perf gpu-check`: the figures to take on a GPU, in one command of at most 8 minutes.

1. A single report-000 DCGAN at batch 32: images/s eager, and on CUDA also compiled (`train.compile`) and
   graphed (each iteration replayed from a CUDA graph, `bench.step.graphed`; with why, if capture fell back);
   before any of them trains, each fast path proves itself against the plain step (`bench.step.proof`): the
   figures end with every proof's outcome (passed, failed, or read from the cache) and its gaps;
2. the group section at K = 9 and 27 (`bench.perf.groups`), vmapped and member by member (which form
   `train.group_forward`'s "auto" should pick on CUDA);
3. report 002 Table 1 (`studies/batch-lr-grid.toml`) at its full budget, 10 epochs and 3 seeds, through
   `gan-bench study run` (grouped on a GPU by default), then `gan-bench report`: the measured wall time
   of both, with the report written (the command line runs this part: `bench.cli.perf`).

`--tiny` shrinks every part (a few steps, K = 2 of width-16 models, Table 1 on 128 images at width 8 for one epoch), so
the script itself can be checked on a CPU: `gan-bench perf gpu-check --device cpu --tiny`.

Device time is scarce, so the figures are saved after each part (a command cut off still leaves what it
measured), and Table 1's study stops starting trials at `DEADLINE_S` from the start (`study run --timeout`):
the figures then say how many of its runs finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from bench.perf.benchmark import load_splits
from bench.perf.common import say
from bench.perf.groups import GROUP_FORMS, MODELS, form_label, group_throughput
from bench.perf.loops import harness_loop
from bench.run_config import RunConfig, apply_overrides
from bench.step import proof

DEADLINE_S = 8 * 60  # the whole check; Table 1 starts no trial after it
# --tiny: what makes each part take seconds on a CPU
TINY_TABLE1 = {"data.train_subset": 128, "optim.epochs": 1, "model.width": 8, "eval.n_samples": 100,
               "eval.n_per_class": 10, "eval.n_real": 100, "eval.splits": 2}
# --tiny's group section: the same two kinds of model (an unconditional DCGAN, report 002's CGAN) at width 16
TINY_GROUP_MODELS = {"dcgan, width 16": {"model.name": "dcgan", "model.width": 16, "model.d_dropout": 0.0},
                     "cgan-conv (report 002), width 16": {**MODELS["cgan-conv (report 002)"], "model.width": 16}}


def run_gpu_check(cfg: RunConfig, table1: Callable[[RunConfig, bool, float], dict], tiny: bool = False,
                  progress: bool = True, save: Callable[[dict], None] = lambda out: None) -> dict:
    """Every figure of the GPU check as a JSON-able dict (cfg: device, data root, the report-000 DCGAN).

    `table1(cfg, tiny, timeout_s)` trains and reports Table 1's study, starting no trial after timeout_s,
    and returns its timings; the command line passes one that runs `gan-bench study run` and `gan-bench
    report` (`bench.cli.perf`). `save(out)` is called after each part with the figures so far.
    """
    steps, warmup = (4, 1) if tiny else (200, 20)
    out: dict[str, Any] = {"device": cfg.device, "tiny": tiny,
                           "device_name": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
    t0 = time.perf_counter()

    train_full, _ = load_splits(cfg, torch.device(device_type(cfg)))
    say(progress, f"gpu-check [1/3] one report-000 DCGAN, batch 32, {steps} steps: eager, compiled, graphed")
    eager = {"train.compile": "off", "train.cuda_graph": False}
    single = {"eager": harness_loop(apply_overrides(cfg, eager), train_full, steps, warmup)}
    if device_type(cfg) == "cuda":
        single["compiled"] = harness_loop(apply_overrides(cfg, {**eager, "train.compile": "default"}), train_full,
                                          steps, warmup)
        single["graphed"] = harness_loop(apply_overrides(cfg, {**eager, "train.cuda_graph": True}), train_full,
                                         steps, warmup)
    out["single"] = single
    out["fast_paths"] = fast_path_rows()
    save(out)
    sizes = [2] if tiny else [9, 27]
    say(progress, f"gpu-check [2/3] groups: K = {sizes}, {' and '.join(map(form_label, GROUP_FORMS))}")
    out["groups"] = group_throughput(cfg, train_full, sizes, steps=steps, progress=progress, forms=GROUP_FORMS,
                                     models=TINY_GROUP_MODELS if tiny else None)
    out["fast_paths"] = fast_path_rows()
    save(out)
    say(progress, f"gpu-check [3/3] report 002 Table 1 at {'a tiny scale' if tiny else 'its full budget'}")
    out["table1"] = table1(cfg, tiny, max(60.0, DEADLINE_S - (time.perf_counter() - t0)))
    out["total_s"] = time.perf_counter() - t0
    out["fast_paths"] = fast_path_rows()
    save(out)
    return out


def device_type(cfg: RunConfig) -> str:
    from bench.step import resolve_device

    return resolve_device(cfg.device).type


def format_gpu_check(r: dict) -> str:
    s, t = r["single"], r["table1"]
    lines = [f"gan-bench perf gpu-check on {r['device']} ({r['device_name']}){', tiny' if r['tiny'] else ''}",
             f"  single report-000 DCGAN, batch 32: eager {s['eager']['images_per_s']:.0f} images/s; "
             + (f"compiled {s['compiled']['images_per_s']:.0f} images/s; " if "compiled" in s else "compiled: CUDA only; ")
             + (_graphed(s["graphed"]) if "graphed" in s else "graphed: CUDA only")]
    for name, rows in r["groups"]["models"].items():
        for row in rows:
            measured = (f"{row['grouped_images_per_s']:.0f} images/s ({row['speedup']:.2f}x {row['members']} "
                        f"sequential runs; CUDA graph {row['cuda_graph']})")
            lines.append(f"  group {name}, K={row['members']}, {form_label(row['form'])}: "
                         + (measured if row["grouped_s"] else "out of memory"))
    runs = (f"all {t['runs_finished']} runs finished" if t["runs_finished"] == t["runs_planned"] else
            f"stopped at the deadline: {t['runs_finished']} of {t['runs_planned']} runs finished")
    lines.append(f"  report 002 Table 1{' (tiny)' if r['tiny'] else ', 10 epochs x 3 seeds'}: {t['total_s']:.0f} s "
                 f"end to end ({t['study_s']:.0f} s training and evaluation, {t['report_s']:.0f} s report; {runs}); "
                 f"report: {t['report']}")
    lines.append(format_fast_paths(r.get("fast_paths", [])))
    lines.append(f"  total {r['total_s']:.0f} s")
    return "\n".join(lines)


def fast_path_rows() -> list[dict]:
    """Every fast path's proof this process used (checked now or read from the cache), as JSON-able rows."""
    rows = []
    for p in proof.OUTCOMES.values():
        rows.append({"path": p.path, "model": p.key.get("model", {}).get("name"), "members": p.key.get("members") or 1,
                     "outcome": p.outcome, "why": p.why, "loss_gap": p.loss_gap, "grad_gap": p.grad_gap,
                     "weight_gap": p.weight_gap, "tolerances": list(p.tolerances), "device": p.key.get("device")})
    return rows


def format_fast_paths(rows: list[dict]) -> str:
    """One line per proof: the fast path, the run's model and group size, and its outcome with its gaps."""
    if not rows:
        return "  fast paths: none asked for a check in this run"
    lines = ["  fast paths, each checked against the plain step (gap / tolerance):"]
    for r in rows:
        what = f"    {r['path']:<8} {r['model']} x{r['members']}"
        if r["why"] is not None:
            lines.append(f"{what}: {r['outcome']}: {r['why']}")
            continue
        gaps = ", ".join(f"{name} {gap:.2g} / {tol:.2g}" for name, gap, tol in
                         zip(("statistics", "gradients", "weights"), (r["loss_gap"], r["grad_gap"], r["weight_gap"]),
                             r["tolerances"]))
        lines.append(f"{what}: {r['outcome']}: {gaps}")
    return "\n".join(lines)


def _graphed(r: dict) -> str:
    if r["cuda_graph"] == "on":
        return f"graphed {r['images_per_s']:.0f} images/s"
    return f"graphed: fell back to eager, {r['images_per_s']:.0f} images/s ({r['cuda_graph']})"
