"""GAN evaluation metrics: pure tensor functions plus small accumulators, one file per family.

Accumulators follow the torchmetrics shape (``update`` per batch, ``compute`` at the end, ``reset``)
without depending on torchmetrics. State lives on the device of the first ``update`` and is only
synchronised with the host in ``compute``. All sums are float64 so long evaluations do not drift.
`registry` lists every logged metric (name, direction, format, meaning, needs).

- `isc`: Inception Score; `fid`: Frechet distance (and its per-class form);
- `classes`: TARR, per-class accuracy, class coverage; `discriminator`: D's accuracy;
- `manifold`: precision, recall, density, coverage on k-NN manifolds.
"""

from bench.metrics.classes import (ClassAccuracy, class_accuracy, class_histogram, classes_covered, geometric_mean,
                                   kl_to_uniform, tarr)
from bench.metrics.discriminator import BinaryAccuracy
from bench.metrics.fid import (FeatureMoments, FrechetDistance, class_moments, fid_from_features, frechet_distance,
                               per_class_fid)
from bench.metrics.isc import InceptionScore, inception_score
from bench.metrics.manifold import Manifold, knn_radii, prdc
from bench.metrics.registry import METRICS, Direction, Metric, Needs

__all__ = [
    "BinaryAccuracy", "ClassAccuracy", "class_moments", "Direction", "FeatureMoments", "FrechetDistance", "InceptionScore", "METRICS",
    "Manifold", "Metric", "Needs", "class_accuracy", "class_histogram", "classes_covered", "fid_from_features",
    "frechet_distance", "geometric_mean", "inception_score", "kl_to_uniform", "knn_radii", "per_class_fid", "prdc",
    "tarr",
]
