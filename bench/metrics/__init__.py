"""GAN evaluation metrics: pure tensor functions plus two accumulators, one file per family.

Each metric is computed one way. Most take the whole set of samples at once (`bench.evaluator` has
every generated image's probabilities and features in memory anyway: the k-NN manifold metrics and
the per-class FID need all of them). The two accumulators follow the torchmetrics shape (``update``
per batch, ``compute`` at the end, ``reset``) without depending on torchmetrics: `FeatureMoments`
(the float64 mean and covariance behind every FID; the evaluator caches the real images' ones) and
`BinaryAccuracy` (D's accuracy, fed batch by batch). State lives on the device of the first
``update`` and is only synchronised with the host in ``compute``. All sums are float64.
`registry` lists every logged metric (name, direction, format, meaning, needs).

- `isc`: Inception Score; `fid`: Frechet distance (and its per-class form);
- `classes`: TARR, per-class accuracy, class coverage; `discriminator`: D's accuracy;
- `manifold`: precision, recall, density, coverage on k-NN manifolds.
"""

from bench.metrics.classes import class_accuracy, class_histogram, classes_covered, geometric_mean, kl_to_uniform, tarr
from bench.metrics.discriminator import BinaryAccuracy
from bench.metrics.fid import (FeatureMoments, class_moments, feature_moments, fid_from_features, frechet_distance,
                               per_class_fid)
from bench.metrics.isc import inception_score
from bench.metrics.manifold import Manifold, knn_radii, prdc
from bench.metrics.registry import METRICS, Direction, Metric, Needs

__all__ = [
    "BinaryAccuracy", "Direction", "FeatureMoments", "METRICS", "Manifold", "Metric", "Needs", "class_accuracy",
    "class_histogram", "class_moments", "classes_covered", "feature_moments", "fid_from_features", "frechet_distance",
    "geometric_mean", "inception_score", "kl_to_uniform", "knn_radii", "per_class_fid", "prdc", "tarr",
]
