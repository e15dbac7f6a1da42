"""Annealed instance noise on every image D sees (Sonderby et al. 2016)."""

from __future__ import annotations

import torch
from pydantic import Field

from bench.techniques import Technique, register


@register
class InstanceNoise(Technique):
    """Instance noise (Sonderby et al. 2016): Gaussian noise on D's inputs, real and fake alike,
    with a standard deviation annealed linearly from `instance_noise_std` to 0 over training. The
    noise makes the real and fake distributions overlap, so D cannot separate them perfectly and
    G keeps getting gradients early on; by the end D sees clean images.
    """

    name = "instance_noise"
    label_key = "noise"
    paper = "Sonderby et al. 2016"
    study = "instance-noise"
    anneals = True  # the noise falls to 0 at the end of the run's planned length
    fields = {"instance_noise_std": (float, Field(0.0, ge=0.0, le=2.0, description=(
        "instance noise: initial std on D's inputs (images in [-1, 1]), annealed to 0 (0: off)")))}

    def d_input(self, x, real):
        return instance_noise(x, self.values.instance_noise_std, self.info.progress)


def instance_noise(x: torch.Tensor, initial_std: float, progress: torch.Tensor) -> torch.Tensor:
    """x plus Gaussian noise whose std falls linearly from `initial_std` at progress 0 to 0 at progress 1."""
    return x + initial_std * (1.0 - progress) * torch.randn_like(x)
