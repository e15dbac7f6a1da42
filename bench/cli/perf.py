"""`gan-bench perf` and `gan-bench perf --parity` on the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bench.config import load_file
from bench.run_config import build_config, RunConfig
from bench.cli.args import int_at_least, parse_overrides, positive_int
from bench.errors import InputError
from bench.perf.benchmark import format_benchmark, run_benchmark
from bench.perf.common import (DEFAULT_EVAL_N, DEFAULT_ROUNDS, DEFAULT_STEPS, DEFAULT_TRACK_SUBSET, DEFAULT_WARMUP,
                               PARITY_MODEL)
from bench.perf.groups import DEFAULT_GROUP_STEPS
from bench.perf.parity import format_parity, run_parity


def _levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return levels


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "perf", help="benchmark: harness vs textbook loop, evaluation, tracking overhead, concurrency; --parity",
        description="`gan-bench perf`: how fast trials run on this machine, measured against the textbook loop. "
                    "Prints a table and writes JSON (--out).")
    p.add_argument("--config", help="TOML or JSON config file (base for every run)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set train.amp=true (repeatable)")
    p.add_argument("--model", help=f"model (default: dcgan-report000; with --parity: {PARITY_MODEL})")
    p.add_argument("--batch-size", type=positive_int, help="batch size (default: the config's, 32)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--data-root", help="data root in torchvision layout (default: $GANBENCH_DATA_ROOT or ./data)")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"])
    p.add_argument("--seed", type=int)
    p.add_argument("--steps", type=positive_int, default=DEFAULT_STEPS, help="timed steps per training loop (default: %(default)s)")
    p.add_argument("--warmup", type=int_at_least(0), default=DEFAULT_WARMUP, help="untimed steps before each loop (default: %(default)s)")
    p.add_argument("--rounds", type=positive_int, default=DEFAULT_ROUNDS,
                   help="throughput rounds (all loops in rotation); each loop's best round is reported (default: %(default)s)")
    p.add_argument("--textbook-workers", type=int_at_least(0), default=2, help="DataLoader workers of the textbook loop "
                   "(pytorch/examples' dcgan default) (default: %(default)s)")
    p.add_argument("--eval-n", type=positive_int, default=DEFAULT_EVAL_N, help="generated and real images to evaluate (default: %(default)s)")
    p.add_argument("--eval-model", default=PARITY_MODEL, help="conditional model for the evaluation timing (default: %(default)s)")
    p.add_argument("--track-subset", type=positive_int, default=DEFAULT_TRACK_SUBSET, help="training images of the tracking trial (default: %(default)s)")
    p.add_argument("--track-epochs", type=positive_int, default=2, help="epochs of the tracking trial (default: %(default)s)")
    p.add_argument("--track-eval-n", type=positive_int, default=1000, help="evaluation size of the tracking trial (default: %(default)s)")
    p.add_argument("--track-repeats", type=positive_int, default=2, help="tracked/untracked trial pairs (default: %(default)s)")
    p.add_argument("--concurrency", type=_levels, help="concurrent trials to measure, e.g. 1,2,4,8 "
                   "(default: 1,2,4,8 on GPU; powers of 2 up to the core count on CPU)")
    p.add_argument("--groups", type=_levels, help="group sizes K to time against K sequential runs, e.g. 1,3,9 "
                   "(default: 1,3,9,27 on GPU; 1,3,9 on CPU)")
    p.add_argument("--group-steps", type=positive_int, default=DEFAULT_GROUP_STEPS,
                   help="iterations per member in the group section (default: %(default)s)")
    p.add_argument("--ablate", action="store_true",
                   help="also time the harness with each fast-path switch flipped (fast, joint_d, channels_last, amp; "
                        "cuda_graph on CUDA)")
    p.add_argument("--threads", type=positive_int, help="torch threads (default: torch's, the core count); "
                   "concurrent trials split them")
    p.add_argument("--parity", action="store_true", help="instead: the fast vs plain path parity comparison")
    p.add_argument("--gpu-check", action="store_true",
                   help="instead: the figures to take on a GPU in at most 8 minutes (single DCGAN eager / compiled / graphed, "
                        "groups at K = 9 and 27, report 002 Table 1 at its full budget with its report)")
    p.add_argument("--tiny", action="store_true", help="--gpu-check: every part at a tiny scale (a dry run, e.g. on a CPU)")
    p.add_argument("--studies", metavar="DIR", help="--gpu-check: folder of study files (default: ./studies)")
    p.add_argument("--seeds", type=positive_int, default=3, help="--parity: seeds per path (default: %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=1, help="--parity: epochs per run (default: %(default)s)")
    p.add_argument("--train-subset", type=int_at_least(0), default=0, help="--parity: training images per run (0: all) (default: %(default)s)")
    p.add_argument("--out", default=None, help="JSON output file (default: perf.json, or parity.json with --parity; "
                                               "with --gpu-check a folder, default gpu-check/)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_perf)
    _DEFAULTS.update({a.dest: a.default for a in p._actions})


# Flags that only one mode reads: given to the other, they are refused rather than ignored.
_DEFAULTS: dict = {}
PARITY_ONLY = ("seeds", "epochs", "train_subset")
GPU_CHECK_ONLY = ("tiny", "studies")
BENCHMARK_ONLY = ("steps", "warmup", "rounds", "textbook_workers", "eval_n", "eval_model", "track_subset",
                  "track_epochs", "track_eval_n", "track_repeats", "concurrency", "ablate", "groups", "group_steps")


def _refuse_unused(args: argparse.Namespace) -> None:
    if args.gpu_check and args.parity:
        raise InputError("--gpu-check and --parity: choose one")
    if not args.gpu_check:
        for name in GPU_CHECK_ONLY:
            if getattr(args, name) != _DEFAULTS.get(name):
                raise InputError(f"--{name}={getattr(args, name)}: only read with --gpu-check")
    unused = BENCHMARK_ONLY if args.parity else PARITY_ONLY
    for name in unused:
        if name in _DEFAULTS and getattr(args, name) != _DEFAULTS[name]:
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag}={getattr(args, name)}: only read {'without' if args.parity else 'with'} --parity")


def config_from_perf_args(args: argparse.Namespace) -> RunConfig:
    base = load_file(args.config) if args.config else {}
    overrides = parse_overrides(args.overrides)
    model = args.model or (PARITY_MODEL if args.parity else "dcgan-report000")
    shortcuts = {"model.name": model, "optim.batch_size": args.batch_size, "device": args.device,
                 "data.root": args.data_root, "data.dataset": args.dataset, "seed": args.seed}
    if args.parity:
        shortcuts.update({"optim.epochs": args.epochs, "data.train_subset": args.train_subset or None})
    overrides.update({k: v for k, v in shortcuts.items() if v is not None})
    return build_config(base, overrides)


def cmd_perf(args: argparse.Namespace) -> int:
    _refuse_unused(args)
    cfg = config_from_perf_args(args)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _perf(args, cfg)
    finally:
        torch.set_num_threads(threads)  # callers in the same process (tests) keep their setting


def _perf(args: argparse.Namespace, cfg: RunConfig) -> int:
    progress = not args.quiet
    if args.gpu_check:
        from bench.perf.gpu_check import format_gpu_check, run_gpu_check
        from bench.reproduce import default_studies_dir

        out_dir = Path(args.out or "gpu-check")
        study_file = (Path(args.studies) if args.studies else default_studies_dir()) / "batch-lr-grid.toml"
        out = out_dir / "gpu-check.json"
        result = run_gpu_check(cfg, lambda c, tiny, timeout_s: _table1(c, study_file, out_dir, tiny, timeout_s),
                               tiny=args.tiny, progress=progress, save=lambda partial: _write_json(out, partial))
        text = format_gpu_check(result)
    elif args.parity:
        result = run_parity(cfg, [cfg.seed + i for i in range(args.seeds)], progress=progress)
        text = format_parity(result)
        out = Path(args.out or "parity.json")
    else:
        result = run_benchmark(cfg, steps=args.steps, warmup=args.warmup, eval_n=args.eval_n,
                               eval_model=args.eval_model, textbook_workers=args.textbook_workers,
                               track_subset=args.track_subset, track_epochs=args.track_epochs,
                               track_eval_n=args.track_eval_n, track_repeats=args.track_repeats,
                               levels=args.concurrency, ablate=args.ablate, rounds=args.rounds,
                               groups=args.groups, group_steps=args.group_steps, progress=progress)
        text = format_benchmark(result)
        out = Path(args.out or "perf.json")
    print(text)
    _write_json(out, result)
    print(f"written: {out}")
    return 0


def _write_json(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.part")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)  # a command cut off mid-write leaves the previous figures, whole


def _table1(cfg: RunConfig, study_file: Path, out_dir: Path, tiny: bool, timeout_s: float) -> dict:
    """--gpu-check's third part: `study run` (starting no trial after timeout_s) then `report` on Table 1's
    study in a fresh store under out_dir, as a user runs them; their wall times and how many runs finished."""
    import contextlib
    import io
    import time

    from bench.cli import main
    from bench.perf.gpu_check import TINY_TABLE1, device_type

    uri = f"sqlite:///{(out_dir / 'mlruns').resolve() / 'mlflow.db'}"
    sets = {"data.root": cfg.data.root, "data.download": cfg.data.download, **(TINY_TABLE1 if tiny else {})}
    args = ["study", "run", str(study_file), "--tracking-uri", uri, "--device", device_type(cfg), "--quiet",
            "--timeout", str(int(timeout_s))]
    for k, v in sets.items():
        if v is not None:
            args += ["--set", f"{k}={v}"]
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        code = main(args)
    study_s = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"Table 1's study failed (exit {code}):\n{printed.getvalue()[-2000:]}")
    report_dir = out_dir / "report"
    t1 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["report", study_file.stem, "--tracking-uri", uri, "--out", str(report_dir), "--no-log",
                     *(["--data-root", cfg.data.root] if cfg.data.root else [])])
    report_s = time.perf_counter() - t1
    if code != 0:
        raise RuntimeError(f"Table 1's report failed (exit {code})")
    from mlflow import MlflowClient

    from bench.studies.spec import load_study_file

    spec, _ = load_study_file(study_file)
    client = MlflowClient(uri)
    finished = client.search_runs([client.get_experiment_by_name(spec.name).experiment_id],
                                  "tags.role = 'trial' and attributes.status = 'FINISHED'")
    return {"study_s": study_s, "report_s": report_s, "total_s": study_s + report_s,
            "report": str(report_dir / "report.html"), "store": uri,
            "runs_finished": len(finished), "runs_planned": spec.grid_size() * spec.repeats}
