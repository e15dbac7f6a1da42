"""`gan-bench perf bench | parity | gpu-check` on the command line."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from bench.config import load_file
from bench.run_config import build_config, RunConfig
from bench.cli.args import int_at_least, overrides_from_args, positive_int
from bench.perf.benchmark import BenchmarkOptions, format_benchmark, run_benchmark
from bench.perf.common import PARITY_MODEL
from bench.perf.parity import format_parity, run_parity

BENCH_MODEL = "dcgan-report000"


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
        "perf", help="how fast trials run here: the benchmark, fast vs plain path parity, the GPU check",
        description="`gan-bench perf`: how fast trials run on this machine. Each action prints a table and "
                    "writes JSON (--out).")
    sub = p.add_subparsers(dest="perf_command", required=True, metavar="ACTION")

    b = sub.add_parser("bench", help="harness vs textbook loop, evaluation, tracking overhead, concurrency, groups",
                       description="The harness against the textbook loop (throughput, FLOPs), evaluation time, "
                                   "MLflow overhead, concurrent trials, grouped vs sequential runs, peak memory.")
    _add_common(b, default_out="perf.json")
    _add_model_options(b, default_model=BENCH_MODEL)
    d = BenchmarkOptions()
    b.add_argument("--steps", type=positive_int, default=d.steps,
                   help="timed steps per training loop (default: %(default)s)")
    b.add_argument("--warmup", type=int_at_least(0), default=d.warmup,
                   help="untimed steps before each loop (default: %(default)s)")
    b.add_argument("--rounds", type=positive_int, default=d.rounds,
                   help="throughput rounds (all loops in rotation); each loop's best round is reported "
                        "(default: %(default)s)")
    b.add_argument("--textbook-workers", type=int_at_least(0), default=d.textbook_workers,
                   help="DataLoader workers of the textbook loop (pytorch/examples' dcgan default) "
                        "(default: %(default)s)")
    b.add_argument("--eval-n", type=positive_int, default=d.eval_n,
                   help="generated and real images to evaluate (default: %(default)s)")
    b.add_argument("--eval-model", default=d.eval_model,
                   help="conditional model for the evaluation timing (default: %(default)s)")
    b.add_argument("--track-subset", type=positive_int, default=d.track_subset,
                   help="training images of the tracking trial (default: %(default)s)")
    b.add_argument("--track-epochs", type=positive_int, default=d.track_epochs,
                   help="epochs of the tracking trial (default: %(default)s)")
    b.add_argument("--track-eval-n", type=positive_int, default=d.track_eval_n,
                   help="evaluation size of the tracking trial (default: %(default)s)")
    b.add_argument("--track-repeats", type=positive_int, default=d.track_repeats,
                   help="tracked/untracked trial pairs (default: %(default)s)")
    b.add_argument("--concurrency", type=_levels, help="concurrent trials to measure, e.g. 1,2,4,8 "
                   "(default: 1,2,4,8 on GPU; powers of 2 up to the core count on CPU)")
    b.add_argument("--groups", type=_levels, help="group sizes K to time against K sequential runs, e.g. 1,3,9 "
                   "(default: 1,3,9,27 on GPU; 1,3,9 on CPU)")
    b.add_argument("--group-steps", type=positive_int, default=d.group_steps,
                   help="iterations per member in the group section (default: %(default)s)")
    b.add_argument("--ablate", action="store_true",
                   help="also time the harness with each fast-path switch flipped (fast, joint_d, channels_last, amp; "
                        "cuda_graph on CUDA)")
    b.set_defaults(func=cmd_bench)

    q = sub.add_parser("parity", help="do the fast and plain paths learn the same? (TARR / IS / FID over seeds)",
                       description="Train the same short runs with the plain path and the fast path and tell whether "
                                   "TARR / IS / FID differ by more than the seed-to-seed spread.")
    _add_common(q, default_out="parity.json")
    _add_model_options(q, default_model=PARITY_MODEL)
    q.add_argument("--seeds", type=positive_int, default=3, help="seeds per path (default: %(default)s)")
    q.add_argument("--epochs", type=positive_int, default=1, help="epochs per run (default: %(default)s)")
    q.add_argument("--train-subset", type=positive_int, help="training images per run (default: all)")
    q.set_defaults(func=cmd_parity)

    g = sub.add_parser("gpu-check", help="the GPU figures in at most 8 minutes (single model, groups, Table 1)",
                       description="The figures to take on a GPU in at most 8 minutes: a single report-000 DCGAN "
                                   "eager / compiled / graphed, groups at K = 9 and 27, report 002 Table 1 at its "
                                   "full budget with its report. --out is a folder.")
    _add_common(g, default_out="gpu-check")
    g.add_argument("--tiny", action="store_true", help="every part at a tiny scale (a dry run, e.g. on a CPU)")
    g.add_argument("--studies", metavar="DIR", help="folder of study files (default: ./studies)")
    g.set_defaults(func=cmd_gpu_check, model=BENCH_MODEL)


def _add_common(p: argparse.ArgumentParser, default_out: str) -> None:
    """The options every perf action reads: the base config, the device and data, threads, output."""
    p.add_argument("--config", help="TOML or JSON config file (base for every run)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set train.amp=true (repeatable)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--data-root", help="data root in torchvision layout (default: $GANBENCH_DATA_ROOT or ./data)")
    p.add_argument("--threads", type=positive_int, help="torch threads (default: torch's, the core count); "
                   "concurrent trials split them")
    p.add_argument("--out", default=default_out, help="JSON output (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _add_model_options(p: argparse.ArgumentParser, default_model: str) -> None:
    p.add_argument("--model", default=default_model, help="model (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, help="batch size (default: the config's, 32)")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"])
    p.add_argument("--seed", type=int)


def config_from_perf_args(args: argparse.Namespace) -> RunConfig:
    base = load_file(args.config) if args.config else {}
    overrides = overrides_from_args(args)
    if getattr(args, "batch_size", None) is not None:
        overrides["optim.batch_size"] = args.batch_size
    return build_config(base, overrides)


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """--threads for this command only: callers in the same process (tests) keep their setting."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cmd_bench(args: argparse.Namespace) -> int:
    cfg = config_from_perf_args(args)
    options = BenchmarkOptions(
        steps=args.steps, warmup=args.warmup, rounds=args.rounds, textbook_workers=args.textbook_workers,
        eval_n=args.eval_n, eval_model=args.eval_model, track_subset=args.track_subset,
        track_epochs=args.track_epochs, track_eval_n=args.track_eval_n, track_repeats=args.track_repeats,
        concurrency=args.concurrency, groups=args.groups, group_steps=args.group_steps, ablate=args.ablate)
    with _torch_threads(args.threads):
        result = run_benchmark(cfg, options, progress=not args.quiet)
    return _finish(format_benchmark(result), Path(args.out), result)


def cmd_parity(args: argparse.Namespace) -> int:
    cfg = config_from_perf_args(args)
    with _torch_threads(args.threads):
        result = run_parity(cfg, [cfg.seed + i for i in range(args.seeds)], progress=not args.quiet)
    return _finish(format_parity(result), Path(args.out), result)


def cmd_gpu_check(args: argparse.Namespace) -> int:
    from bench.perf.gpu_check import format_gpu_check, run_gpu_check
    from bench.reproduce import default_studies_dir

    cfg = config_from_perf_args(args)
    out_dir = Path(args.out)
    study_file = (Path(args.studies) if args.studies else default_studies_dir()) / "batch-lr-grid.toml"
    out = out_dir / "gpu-check.json"
    with _torch_threads(args.threads):
        result = run_gpu_check(cfg, lambda c, tiny, timeout_s: _table1(c, study_file, out_dir, tiny, timeout_s),
                               tiny=args.tiny, progress=not args.quiet, save=lambda partial: _write_json(out, partial))
    return _finish(format_gpu_check(result), out, result)


def _finish(text: str, out: Path, result: dict) -> int:
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
    """gpu-check's third part: `study run` (starting no trial after timeout_s) then `report` on Table 1's
    study in a fresh store under out_dir, as a user runs them; their wall times and how many runs finished."""
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
