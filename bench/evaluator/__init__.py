"""The evaluator: a fixed LeNet classifier per dataset, and the GAN evaluation built on it.

The classifier plays the role Inception-v3 plays for ImageNet FID: its class probabilities give
IS, TARR and per-class accuracy, its penultimate features give FID. Like Inception's weights,
the MNIST evaluator is fixed: trained once with `REFERENCE_RECIPE`, shipped inside the package
(`bench/weights/`) with its SHA-256 and a version name, and checked on every load, so numbers
from two machines (or CPU and GPU) come from the same network. Other datasets (Fashion-MNIST),
and users who ask for their own (`eval.evaluator = "train"`), get a classifier trained here and
cached on disk (`$GANBENCH_CACHE`, default ~/.cache/gan-bench); runs tag which one they used.

- `classifier`: the `Evaluator` (probabilities and features in batches), the training recipe, and
  `no_tf32` (all scoring runs in full fp32, TF32 off on CUDA);
- `shipped`: which evaluator a config uses, the shipped weights (manifest, SHA-256) and the cache;
- `scoring`: `evaluate_gan` (the per-epoch `eval/*` metrics; `evaluate_gans` for a group's members at
  once) and `real_scores` (real data's row).

This module is the package's door: import from `bench.evaluator`, not from its modules. The constants
re-exported here are copies: a test that patches one patches it where it is read
(`bench.evaluator.shipped.WEIGHTS_DIR`, `bench.evaluator.shipped.MANIFEST`).
"""

from bench.evaluator.classifier import (EVAL_BATCH, REFERENCE_RECIPE, Evaluator, accuracy, no_tf32,
                                        reference_epochs, train_classifier, train_reference)
from bench.evaluator.scoring import (Evaluation, evaluate_gan, evaluate_gans, fid_to_real, generate,
                                     intra_fid_scores, manifold_scores, real_class_moments, real_manifold,
                                     real_scores)
from bench.evaluator.shipped import (ARCH_VERSION, MANIFEST, WEIGHTS_DIR, cache_dir, evaluator_key, evaluator_path,
                                     load_or_train, load_shipped, sha256_file, shipped_entry, uses_shipped)

__all__ = [
    "ARCH_VERSION", "EVAL_BATCH", "MANIFEST", "REFERENCE_RECIPE", "WEIGHTS_DIR", "Evaluation", "Evaluator",
    "accuracy", "cache_dir", "evaluate_gan", "evaluate_gans", "evaluator_key", "evaluator_path",
    "fid_to_real", "generate", "intra_fid_scores", "load_or_train", "load_shipped", "manifold_scores", "no_tf32",
    "real_class_moments", "real_manifold", "real_scores", "reference_epochs", "sha256_file", "shipped_entry",
    "train_classifier", "train_reference", "uses_shipped",
]
