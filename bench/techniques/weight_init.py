"""DCGAN weight initialisation: conv/linear weights N(0, 0.02), norm gammas N(1, 0.02)."""

from __future__ import annotations

from pydantic import Field

from bench.techniques import Technique, register


@register
class WeightInit(Technique):
    """DCGAN init (Radford et al. 2016); off leaves PyTorch's default init (report 002's comparison)."""

    name = "weight_init"
    label_key = "init"
    section = "model"
    paper = "Radford et al. 2016"
    study = "weight-init"
    fields = {"weight_init": (bool, Field(True, description="DCGAN init N(0, 0.02)"))}

    @classmethod
    def wrap_models(cls, gan, cfg):
        from bench.models.common import dcgan_init  # the init knows every family's layer types

        if cfg.model.weight_init:
            gan.generator.apply(dcgan_init)
            gan.discriminator.apply(dcgan_init)
