"""`gan-bench analyze latent|discriminator|retrain|features`: analyses of a finished run, logged back to it.

Each analysis loads a run's checkpoints from MLflow (`--run RUN_ID`, or `--study NAME` for the
best trial of a study), computes its numbers, figures and tables (`bench.analysis.<name>.analyze`,
no I/O), and `common.publish` logs them to that run under `analysis/<name>/`: figures as PNG,
tables as JSON and CSV, `summary.json` (options, metrics, notes), and metrics named
`analysis/<name>/<metric>`. Same `--seed`, same numbers.

`ANALYSES` names them; the command line (`bench.cli.analyze`) builds one subcommand per name and
imports the analysis module only when that command runs, so `gan-bench --help` stays fast.
"""

from __future__ import annotations

ANALYSES = {
    "latent": "latent space and label embeddings: class means, labeled latent vectors, interpolation, "
              "Gaussian and uniform noise, out-of-distribution embeddings, z as style (reports 000, 003, 004)",
    "discriminator": "discriminator accuracy per class on real and generated images, and D's verdict drawn "
                     "on each of a grid of images (reports 000, 003)",
    "retrain": "train the evaluator's architecture on real/generated mixes, fine-tunings, few real images, "
               "test accuracy per epoch; CAS (reports 001, 002)",
    "features": "PCA and t-SNE of the evaluator's features, real vs generated digits (report 001)",
}
