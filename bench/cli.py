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


def add_run_options(p: argparse.ArgumentParser, model_required: bool = False) -> None:
    """Options every training-like command shares (train, study run, perf)."""
    p.add_argument("--config", help="TOML or JSON file with config sections (data, model, techniques, optim, ...)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set techniques.real_target=0.9 (repeatable)")
    p.add_argument("--epochs", type=int, help="shortcut for --set optim.epochs=N")
    p.add_argument("--train-subset", type=int, help="class-balanced subset of N training images")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--data-root", help="data root in torchvision layout (default: $GANBENCH_DATA_ROOT or ./data)")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"])
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)")


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
    shortcuts = {"model.name": getattr(args, "model", None), "optim.epochs": args.epochs,
                 "data.train_subset": args.train_subset, "seed": args.seed, "device": args.device,
                 "data.root": args.data_root, "data.dataset": args.dataset}
    overrides.update({k: v for k, v in shortcuts.items() if v is not None})
    return overrides


def config_from_args(args: argparse.Namespace):
    base = load_file(args.config) if args.config else {}
    return build_config(base, overrides_from_args(args))


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
    from bench.tracking import mask_uri

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

    for name in args.datasets:
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
    add_run_options(p)
    p.add_argument("--train-reference", metavar="DIR",
                   help="train a classifier with the shipped evaluator's recipe and write its weights and "
                        "manifest entry to DIR (how bench/weights/ was made)")
    p.set_defaults(func=cmd_evaluator)

    p = sub.add_parser("models", help="list the model families")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("data", help="dataset management")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    f = data_sub.add_parser("fetch", help="download and verify MNIST / Fashion-MNIST into the data root")
    f.add_argument("datasets", nargs="*", default=["mnist"], choices=["mnist", "fashion-mnist"])
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
    sys.exit(main())
