"""The `gan-bench` command line.

The package is the top layer: nothing else in `bench` imports it. This file holds `main`, the
run commands (train, evaluator, models, data) and the wiring; `args` the helpers every command
shares; one module per command group (study, report, analyze, perf, ui, reproduce, dashboard),
each with its argparse code, its `cmd_*` functions and `register_cli(subparsers)`. Library code
raises `bench.errors` exceptions; `main` alone turns a `BenchError` into a one-line message and
exit code 2, and so too an error of the user's environment (a damaged, read-only or full store, a file
where a folder belongs: `fault_message`); Ctrl-C ends with "interrupted" and exit code 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bench import threads

threads.prepare_environment()  # before the imports below load torch: OpenMP reads OMP_WAIT_POLICY only then

from bench.cli.args import (DATASETS, add_run_options, config_file_overrides, config_from_args,  # noqa: F401
                            dataset_name, int_at_least, layered_overrides, overrides_from_args, parse_overrides,
                            positive_int, print_table, tracking_uri_from_args)
from bench.errors import BenchError, InputError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
# Modules that add their own subcommands (each has `register_cli(subparsers)`), in `--help` order.
COMMAND_MODULES = ("bench.cli.study", "bench.cli.report", "bench.cli.analyze", "bench.cli.perf", "bench.cli.ui",
                   "bench.cli.reproduce", "bench.cli.dashboard")


# ---------------------------------------------------------------------------
# Commands


def cmd_train(args: argparse.Namespace) -> int:
    from bench import experiment
    from bench.tracking import MAX_EXPERIMENT_NAME, MAX_RUN_NAME, mask_uri

    for flag, value, limit in (("--experiment", args.experiment, MAX_EXPERIMENT_NAME),
                               ("--run-name", args.run_name, MAX_RUN_NAME)):
        if value is not None and len(value) > limit:
            raise InputError(f"{flag}={value[:30]!r}...: {len(value)} characters; MLflow allows at most {limit}")
        if value is not None and not value.strip():
            raise InputError(f"{flag}={value!r}: must not be empty")
    cfg = config_from_args(args)
    uri = tracking_uri_from_args(args)
    try:
        result = experiment.run(cfg, tracking_uri=uri, experiment=args.experiment, name=args.run_name,
                                progress=not args.quiet, announce=True)
    except KeyboardInterrupt:
        print("gan-bench: interrupted: a run already started is marked KILLED in MLflow, with what it logged",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"run_id: {result.run_id}  (tracking: {mask_uri(uri)}, experiment: {args.experiment})")
    print_table(result.metrics, "final metrics:")
    return 0


def cmd_evaluator(args: argparse.Namespace) -> int:
    from bench import experiment
    from bench.evaluator import real_scores

    cfg = config_from_args(args)
    if args.train_reference:
        return _train_reference(cfg, args.train_reference)
    ctx = experiment.prepare(cfg, progress=True)
    meta = ctx.evaluator.meta
    print(f"evaluator: {meta.get('version')} ({meta.get('source')}), sha256 {meta.get('sha256')}")
    scores = real_scores(ctx.evaluator, ctx.train_full, ctx.test, cfg.eval)
    print_table({f"real/{k}": v for k, v in scores.items()}, f"{cfg.data.dataset} reference row (real test split):")
    return 0


def _train_reference(cfg, out_dir: str) -> int:
    """Train a classifier with the shipped evaluator's recipe; write its weights and manifest entry to out_dir."""
    import json
    from pathlib import Path

    import torch

    from bench import metrics
    from bench.data import load_dataset, resolve_root
    from bench.evaluator import (ARCH_VERSION, REFERENCE_RECIPE, Evaluator, reference_epochs, sha256_file,
                                 train_reference)

    root = resolve_root(cfg.data.root)
    train = load_dataset(root, cfg.data.dataset, "train", "cpu", download=cfg.data.download)
    test = load_dataset(root, cfg.data.dataset, "test", "cpu", download=cfg.data.download)
    images, labels = test.head(len(test))

    def scores(net) -> tuple[float, float]:
        probs, _ = Evaluator(net)(images)
        return (probs.argmax(1) == labels).double().mean().item(), metrics.inception_score(probs, 10)[0]

    def report(epoch: int, net) -> None:
        acc, is_ = scores(net)
        print(f"epoch {epoch}: test accuracy {acc:.4f}, real-test IS {is_:.3f}", flush=True)

    learn, polish = reference_epochs(cfg.eval.evaluator_epochs)
    recipe = {**REFERENCE_RECIPE, "epochs": learn, "polish_epochs": polish, "subset": cfg.eval.evaluator_subset}
    net = train_reference(train, cfg.eval.evaluator_epochs, cfg.eval.evaluator_subset, on_epoch=report)
    acc, is_ = scores(net)
    version = f"{cfg.data.dataset}-{ARCH_VERSION}-e{learn}+{polish}"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{version}.pt"
    torch.save({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    entry = {"version": version, "file": path.name, "sha256": sha256_file(path), "test_accuracy": round(acc, 4),
             "real_test_is": round(is_, 3), "recipe": recipe}
    (out / "evaluators.json").write_text(json.dumps({cfg.data.dataset: entry}, indent=2) + "\n")
    print(json.dumps(entry, indent=2))
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from bench.data import fetch, resolve_root

    for name in args.datasets or ["mnist"]:
        path = fetch(resolve_root(args.data_root), name)
        print(f"{name}: ready in {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gan-bench",
        description="Train GANs under any combination of techniques, evaluate them with an MNIST classifier, "
                    "run Optuna studies over techniques, and compare everything in MLflow.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train one GAN configuration and log it to MLflow",
                       description="Train one GAN configuration, evaluate it each epoch, log one MLflow run.")
    p.add_argument("--model", help="model family (see `gan-bench models`)")
    add_run_options(p)
    p.add_argument("--experiment", default="gan-bench", help="MLflow experiment name")
    p.add_argument("--run-name", help="MLflow run name (default: model and techniques, e.g. dcgan,ls=0.9,seed=0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluator", help="the evaluator classifier: version, SHA-256 and the real-data reference row",
                       description="Print which evaluator scores runs (version, SHA-256, shipped or self-trained) "
                                   "and what real data scores through it (test accuracy, IS, FID, per-class).")
    add_run_options(p, training=False)
    p.add_argument("--train-reference", metavar="DIR",
                   help="train a classifier with the shipped evaluator's recipe and write its weights and "
                        "manifest entry to DIR (how bench/weights/ was made)")
    p.set_defaults(func=cmd_evaluator)

    p = sub.add_parser("models", help="list the model families")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("data", help="dataset management")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    f = data_sub.add_parser("fetch", help="download and verify MNIST / Fashion-MNIST into the data root")
    # No `choices` with nargs="*": argparse would check the default list itself against them and refuse it.
    f.add_argument("datasets", nargs="*", type=dataset_name, metavar="DATASET",
                   help=f"one or more of {', '.join(DATASETS)} (default: mnist)")
    f.add_argument("--data-root")
    f.set_defaults(func=cmd_data_fetch)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register_cli(sub)  # a module that fails to import stops here, loudly
    return parser


def command_parsers(parser: argparse.ArgumentParser, path: list[str]):
    """(command path, its parser) for `parser` and every subcommand under it, depth first (docs/commands.md).

    argparse has no public walk over subcommands; its subparsers action holds them in `choices`."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from command_parsers(sub, [*path, name])


def cmd_models(args: argparse.Namespace) -> int:
    from bench.models import MODELS

    for name, spec in MODELS.items():
        print(f"{name:<18} {'conditional  ' if spec.conditional else 'unconditional'}  {spec.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_store_errors()
    try:
        with threads.for_command():  # threads from the cores and the load (bench.threads)
            return args.func(args)
    except BenchError as e:
        print(f"gan-bench: error: {e}{flag_hint(e, args)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("gan-bench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a damaged, read-only or full store, a file where a folder belongs: no traceback
        message = fault_message(e, args)
        if message is None:
            raise
        print(f"gan-bench: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


def quiet_store_errors() -> None:
    """MLflow logs a traceback for every database error it passes on; `main` says what went wrong instead."""
    import logging

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


# What a user does about an OSError on a file, by errno (its message names the file).
OS_FAULTS = {"ENOSPC": "free disk space and run the command again",
             "EROFS": "this command writes there; use a writable folder",
             "EEXIST": "a file is where a folder belongs: move it aside",
             "ENOTDIR": "a file is where a folder belongs: move it aside",
             "ELOOP": "a symbolic link points back at itself: fix or remove it",
             "EACCES": "check the file's permissions", "EPERM": "check the file's permissions and attributes"}


def fault_message(error: Exception, args: argparse.Namespace) -> str | None:
    """One line for an error the user's environment caused (the store, a file), None for any other."""
    import errno

    from bench.tracking import default_tracking_uri, store_fault

    uri = getattr(args, "tracking_uri", None) or default_tracking_uri()
    fault = store_fault(error, uri)
    if fault is not None:
        if fault.field == "force_new" and hasattr(args, "force_new"):
            return (f"{fault}: the study's Optuna storage holds trials whose runs are not in this store; pass the "
                    "--tracking-uri the study ran with, or rerun with --force-new to start the study over")
        return str(fault)
    name = errno.errorcode.get(getattr(error, "errno", None) or -1)
    if isinstance(error, OSError) and error.filename is not None and name in OS_FAULTS:
        return f"{error.filename}: {error.strerror}; {OS_FAULTS[name]}"
    return None


# Library arguments whose flag is spelled differently from the argument (else: --name-with-dashes).
FLAG_DESTS = {"run_id": "run"}


def flag_hint(error: BenchError, args: argparse.Namespace) -> str:
    """' (--flag)' for the argument a library error blames, when this command has a flag for it."""
    field = getattr(error, "field", None)
    dest = FLAG_DESTS.get(field, field)
    if not dest or not hasattr(args, dest):
        return ""
    flag = "--" + dest.replace("_", "-")
    return "" if flag in str(error) else f" ({flag})"
