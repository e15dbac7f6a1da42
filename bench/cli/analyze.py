"""`gan-bench analyze latent|discriminator|retrain|features`: argument parsing and the command.

The analyses themselves are `bench.analysis.<name>.analyze` (no argparse, no I/O); this module turns
flags into their `Options`, and `bench.analysis.common.publish` logs the result to the run.
"""

from __future__ import annotations

import argparse
import importlib

from bench import analysis
from bench.analysis import ANALYSES
from bench.cli.args import int_at_least, positive_int, print_table
from bench.errors import InputError


non_negative_int, int_at_least_two = int_at_least(0), int_at_least(2)


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be in [0, 1]")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be > 0")
    return value


def _percent(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a percentage in [0, 100]")
    return value


def _amplitudes(text: str) -> tuple[float, ...]:
    """'0.1,0.3,0.5' -> (0.1, 0.3, 0.5); '' or 'none' -> () (the part is skipped)."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        values = tuple(float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers, e.g. 0.1,0.3,0.5") from None
    if not all(v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every amplitude must be > 0")
    return values


def _groups(text: str) -> tuple[str, ...]:
    """'mix,few' -> ('mix', 'few'); 'all' -> every group (argparse converts the string default too)."""
    from bench.analysis.retrain import GROUPS

    if text.strip() == "all":
        return GROUPS
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [n for n in names if n not in GROUPS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: choose among {','.join(GROUPS)}")
    return names


def _common_options(p: argparse.ArgumentParser) -> None:
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--run", metavar="RUN_ID", help="the MLflow run to analyse (it must have checkpoints)")
    target.add_argument("--study", metavar="NAME", help="analyse the best trial of this study")
    p.add_argument("--objective", metavar="METRIC:DIRECTION",
                   help="with --study: rank trials by this, e.g. eval/fid:minimize "
                        "(default: the study's parent run's `objective` tag)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)")
    p.add_argument("--data-root", help="data root (default: the run's, else $GANBENCH_DATA_ROOT or ./data)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where to analyse, whatever the run trained on (default: auto)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed for every random draw (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _latent_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-pool", type=positive_int, default=20_000, help="latent vectors sampled and labelled (default: 20000)")
    p.add_argument("--threshold", type=_probability, default=0.9,
                   help="evaluator confidence that makes a latent vector labeled (default: 0.9)")
    p.add_argument("--n-random", type=positive_int, default=8, help="random samples per class in the means figure (default: 8)")
    p.add_argument("--interp-steps", type=int_at_least_two, default=10,
                   help="points per interpolation path, endpoints included (default: 10)")
    p.add_argument("--noise-samples", type=positive_int, default=100, help="images per class and sigma (default: 100)")
    p.add_argument("--n-ood", type=positive_int, default=1_000, help="random embedding vectors (default: 1000)")
    p.add_argument("--uniform-amplitudes", type=_amplitudes, default=(0.1, 0.3, 0.5, 0.7, 0.9), metavar="A,A,...",
                   help="U(-a, a) noise added to the mean latent vectors, per amplitude a (report 000; "
                        "default: 0.1,0.3,0.5,0.7,0.9; 'none' skips)")
    p.add_argument("--style-columns", type=positive_int, default=10,
                   help="columns (one noise vector each) of the z-as-style grid, conditional models (default: 10)")


def _discriminator_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=positive_int, default=500, help="generated and real images per class (default: 500)")
    p.add_argument("--n-verdict", type=positive_int, default=16,
                   help="real and generated images (each) in the verdict grid (default: 16)")


def _features_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int_at_least_two, default=2_000,
                   help="real test images (class-balanced) and generated images, each (default: 2000)")
    p.add_argument("--perplexity", type=_positive_float, default=30.0, help="t-SNE perplexity (default: 30)")
    p.add_argument("--tsne-iter", type=int_at_least(250), default=1_000, help="t-SNE iterations (default: 1000)")


def _retrain_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--real-size", type=positive_int, help="real training images, class-balanced (default: the whole split)")
    p.add_argument("--epochs", type=positive_int, default=5, help="epochs per training from scratch (default: 5)")
    p.add_argument("--finetune-epochs", type=positive_int, default=2, help="epochs per fine-tuning (default: 2)")
    p.add_argument("--min-steps", type=non_negative_int, default=500,
                   help="every training runs at least this many steps (small sets get more epochs; default: 500)")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--lr", type=_positive_float, default=1e-3)
    p.add_argument("--finetune-lr", type=_positive_float, default=1e-4)
    p.add_argument("--few-per-class", type=positive_int, default=55, help="real images per class in the few-shot rows (default: 55)")
    p.add_argument("--few-generated", type=positive_int, help="generated images added to the few real ones (default: the real set's size)")
    p.add_argument("--max-draws", type=positive_int, default=20,
                   help="rounds of generated images drawn to fill the confidence-filtered sets (default: 20)")
    p.add_argument("--n-test", type=positive_int, help="real test images scored (default: the whole test split)")
    p.add_argument("--curve-epochs", type=positive_int, default=50,
                   help="epochs of the test-accuracy-per-epoch curves (report 002 Fig 15; default: 50)")
    p.add_argument("--curve-mix", type=_percent, default=50, help="%% generated in the curves' mixed set (default: 50)")
    p.add_argument("--groups", type=_groups, default="all", metavar="G,G,...",
                   help="parts to run: mix,add,gen_then_real,real_then_gen,filtered,few,curves (default: all)")


OPTIONS = {"latent": _latent_options, "discriminator": _discriminator_options, "retrain": _retrain_options,
           "features": _features_options}


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("analyze", help="analyses of a finished run: latent, discriminator, retrain, features",
                              description=analysis.__doc__.split("\n\n")[0] if analysis.__doc__ else None)
    actions = p.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    for name, help_text in ANALYSES.items():
        a = actions.add_parser(name, help=help_text, description=help_text)
        _common_options(a)
        OPTIONS[name](a)
        a.set_defaults(func=cmd_analyze)


def cmd_analyze(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from bench.analysis import common
    from bench.tracking import default_tracking_uri, mask_uri

    module = importlib.import_module(f"bench.analysis.{args.analysis}")
    uri = args.tracking_uri or default_tracking_uri()
    if args.objective and not args.study:
        raise InputError("--objective: only with --study")
    run_id = args.run
    if args.study is not None:
        run_id, why = common.best_trial_run(uri, args.study, args.objective)
        print(why)
    run = common.load_run(run_id, uri, data_root=args.data_root, device=args.device, progress=not args.quiet)
    opts = module.Options(**{f.name: getattr(args, f.name) for f in fields(module.Options)})
    result = module.analyze(run, opts, progress=not args.quiet)
    paths = common.publish(common.open_store(uri), run_id, result)
    for note in result.notes:
        print(f"note: {note}")
    print_table({f"analysis/{result.name}/{k}": v for k, v in result.metrics.items()},
                f"{args.analysis} analysis of run {run_id} ({run.cfg.model.name}):")
    print(f"logged {len(paths)} artifacts under analysis/{result.name}/ of run {run_id} (tracking: {mask_uri(uri)})")
    return 0
