"""The `gan-bench` command line.

Each feature module that has commands exposes `register_cli(subparsers)`; this file only
wires them up and turns input errors into exit code 2 with a message that names the field.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from bench.config import ConfigError, build_config, load_file, parse_value

EXIT_BAD_INPUT = 2
DATASETS = ("mnist", "fashion-mnist")
# Modules that add their own subcommands (each has `register_cli(subparsers)`).
COMMAND_MODULES = ("bench.studies", "bench.report", "bench.analysis", "bench.perf", "bench.ui", "bench.reproduce",
                   "bench.dashboard")


class InputError(Exception):
    """Any user-input problem: printed without a traceback, exit 2."""


def input_errors() -> tuple[type[BaseException], ...]:
    from bench.data import DataError
    from bench.evaluator import EvaluatorError
    from bench.tracking import TrackingError

    return (ConfigError, DataError, EvaluatorError, TrackingError, InputError)


# ---------------------------------------------------------------------------
# Shared options


def add_run_options(p: argparse.ArgumentParser, model_required: bool = False, training: bool = True) -> None:
    """Options every training-like command shares (train, study run, perf).

    `training=False` (the evaluator) leaves out what only a GAN training reads (epochs, subset, seed,
    the tracking store), so no flag is accepted and then ignored.
    """
    p.add_argument("--config", help="TOML or JSON file with config sections (data, model, techniques, optim, ...)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set techniques.real_target=0.9 (repeatable)")
    if training:
        p.add_argument("--epochs", type=int, help="shortcut for --set optim.epochs=N")
        p.add_argument("--train-subset", type=int, help="class-balanced subset of N training images")
        p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--data-root", help="data root in torchvision layout (default: $GANBENCH_DATA_ROOT or ./data)")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"])
    if training:
        p.add_argument("--tracking-uri",
                       help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)")


def int_at_least(minimum: int):
    """An argparse `type` for integers >= minimum (argparse then exits 2 with the value named)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: must be >= {minimum}")
        return value
    parse.__name__ = "int"  # argparse shows it as "invalid int value"
    return parse


positive_int = int_at_least(1)


def dataset_name(text: str) -> str:
    if text not in DATASETS:
        raise argparse.ArgumentTypeError(f"{text!r}: unknown dataset; choose one of {', '.join(DATASETS)}")
    return text


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = parse_value(value)
    return out


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted overrides an argparse namespace asks for (shortcuts after --set, so they win)."""
    overrides = parse_overrides(args.overrides)
    shortcuts = {"model.name": "model", "optim.epochs": "epochs", "data.train_subset": "train_subset",
                 "seed": "seed", "device": "device", "data.root": "data_root", "data.dataset": "dataset"}
    values = {key: getattr(args, attr, None) for key, attr in shortcuts.items()}
    overrides.update({k: v for k, v in values.items() if v is not None})
    return overrides


def layered_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """--config FILE, then --set and the shortcuts, as dotted overrides of another base (a study's)."""
    from_file = config_file_overrides(args.config) if getattr(args, "config", None) else {}
    return {**from_file, **overrides_from_args(args)}


def config_file_overrides(path: str) -> dict[str, Any]:
    """A --config file as dotted overrides (for commands whose base is something else, e.g. a study)."""
    tree = load_file(path)
    out: dict[str, Any] = {}

    def walk(node: dict, prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[prefix + k] = v
    walk(tree, "")
    try:
        build_config({}, out)  # bad keys or values: blame the file, not the study
    except ConfigError as e:
        raise ConfigError(f"config file {path!r}: {e}") from None
    return out


def config_from_args(args: argparse.Namespace):
    from bench.data import check_fit

    base = load_file(args.config) if args.config else {}
    try:
        cfg = build_config(base, overrides_from_args(args))
    except ConfigError as e:
        if not base:
            raise
        try:
            build_config(base)
        except ConfigError:  # the file alone is already wrong: name it
            raise ConfigError(f"config file {args.config!r}: {e}") from None
        raise
    check_fit(cfg.data.dataset, cfg.data.train_subset, cfg.optim.batch_size, cfg.techniques.d_steps)
    return cfg


def tracking_uri_from_args(args: argparse.Namespace) -> str:
    from bench.tracking import default_tracking_uri

    return args.tracking_uri or default_tracking_uri()


def print_table(rows: dict[str, Any], title: str | None = None) -> None:
    if title:
        print(title)
    width = max((len(k) for k in rows), default=0)
    for k, v in rows.items():
        text = f"{v:.4f}" if isinstance(v, float) else str(v)
        print(f"  {k:<{width}}  {text}")


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
    result = experiment.run(cfg, tracking_uri=uri, experiment=args.experiment, name=args.run_name,
                            progress=not args.quiet, announce=True)
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
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        mod.register_cli(sub)
    return parser


def cmd_models(args: argparse.Namespace) -> int:
    from bench.models import MODELS

    for name, spec in MODELS.items():
        print(f"{name:<18} {'conditional  ' if spec.conditional else 'unconditional'}  {spec.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except input_errors() as e:
        print(f"gan-bench: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    # `python -m bench.cli` runs this file as __main__, a second copy of the module: its InputError would not
    # be the one the command modules raise (they import bench.cli), and their errors would end in tracebacks.
    from bench.cli import main as package_main

    sys.exit(package_main())
