"""Feature matching: G matches the mean of D's features on real data (Salimans et al. 2016)."""

from __future__ import annotations

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
    fields = {"feature_matching": (bool, Field(False, description="G's loss matches the mean of D's "
                                                                  "penultimate features on real data"))}

    def g_loss(self, b):
        real = self.info.d_features(b.real, b.real_y).detach().float().mean(0)
        fake = self.info.d_features(b.fake, b.fake_y).float().mean(0)
        return (real - fake).pow(2).sum()
