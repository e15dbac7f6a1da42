"""Two time-scale update rule: D learns faster than G (Heusel et al. 2017)."""

from __future__ import annotations

from pydantic import Field

from bench.techniques import Technique, register


@register
class Ttur(Technique):
    """Two time-scale update rule (Heusel et al. 2017): separate learning rates for D and G, D's
    larger (the paper's runs use e.g. 4e-4 for D and 1e-4 for G), which the paper proves converges
    to a local Nash equilibrium.

    `ttur_ratio` r keeps the geometric mean of the two rates and sets lr_D / lr_G = r: G's rate is
    divided by sqrt(r), D's multiplied by sqrt(r) (r = 4 turns 2e-4 / 2e-4 into 1e-4 / 4e-4), so a
    study changes the ratio and nothing else.
    """

    name = "ttur"
    paper = "Heusel et al. 2017"
    study = "ttur"
    fields = {"ttur_ratio": (float, Field(1.0, ge=0.01, le=100.0,
                                          description="TTUR: D's learning rate over G's, same geometric mean (1: off)"))}

    def learning_rates(self, lr_g, lr_d):
        return ttur_rates(lr_g, lr_d, self.values.ttur_ratio)


def ttur_rates(lr_g, lr_d, ratio):
    """G's and D's rates at lr_D / lr_G = ratio with their geometric mean kept."""
    root = ratio ** 0.5
    return lr_g / root, lr_d * root
