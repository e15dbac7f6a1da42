"""Feature matching: G matches the mean of D's features on real data (Salimans et al. 2016)."""

from __future__ import annotations

import torch
from pydantic import Field

from bench.techniques import Technique, register


@register
class FeatureMatching(Technique):
    """Feature matching (Salimans et al. 2016, section 3.1): G's loss is ||E f(x) - E f(G(z))||^2,
    f being D's penultimate features, instead of fooling D's last layer; G then matches the
    statistics D finds informative rather than over-training on D's current verdict.
    """

    name = "feature_matching"
    label_key = "fm"
    paper = "Salimans et al. 2016"
    study = "feature-matching"
    varies_per_member = False  # a choice of function
    fields = {"feature_matching": (bool, Field(False, description="G's loss matches the mean of D's "
                                                                  "penultimate features on real data"))}

    def g_loss(self, b):
        return feature_matching_loss(self.info.d_features(b.real, b.real_y), self.info.d_features(b.fake, b.fake_y))


def feature_matching_loss(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """||E f(x) - E f(G(z))||^2 over a batch of D's features (no gradient through the real side)."""
    return (real_features.detach().float().mean(0) - fake_features.float().mean(0)).pow(2).sum()
