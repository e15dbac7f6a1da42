"""Unconditional DCGANs (Radford et al. 2016): transposed-conv G, strided-conv D.

* `dcgan-report000`: the fixed architecture of report 000 (377,121 / 246,497 parameters at
  the defaults); only the norms, D's dropout and the latent size are configurable.
* `dcgan`: a linear projection to (g_width, 7, 7) then `g_depth` transposed convs in G;
  `d_depth` convs then one linear layer in D (report 002's DCGAN is g_depth = d_depth = 4).
  Depth adds stride-1 layers at the widest width, so a deeper net is a stronger one (report
  002's "DxGy" pairs); `g_width` / `d_width` size each net alone (report 001 widened G only:
  Conv128-Conv64 / Conv256-Conv128 / Conv512-Conv256 is g_depth 3, g_width 128 / 256 / 512).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from torch import nn

from bench.models import register_model
from bench.models.common import (SEED, UnconditionalNet, conv_stack, deconv_stack, downsampling_convs,
                                 logit_head, seed_projection, upsampling_convs)

if TYPE_CHECKING:  # a ModelConfig is passed in; the class is needed for type hints only
    from bench.config import ModelConfig


@register_model("dcgan-report000", conditional=False,
                description="report 000's DCGAN: G 377,121 / D 246,497 parameters at the defaults")
def build_report000(cfg: ModelConfig, num_classes: int = 10) -> tuple[nn.Module, nn.Module]:
    # Exactly report 000's G: no norm after the projection, 3x3 kernels, 64-64-32-16-1 channels.
    generator = UnconditionalNet(OrderedDict(
        project=nn.Sequential(nn.Linear(cfg.latent_dim, 64 * SEED * SEED), nn.Unflatten(1, (64, SEED, SEED))),
        upsample=nn.Sequential(*deconv_stack([64, 64, 32, 16, 1], [2, 1, 1, 2], cfg.g_norm)),
    ))
    # Its D has no bias in the first conv (a quirk of the original, kept for the exact count).
    discriminator = UnconditionalNet(OrderedDict(
        downsample=nn.Sequential(*conv_stack([1, 32, 64, 128, 128], [2, 1, 1, 2], cfg.d_norm, cfg.d_dropout,
                                             first_bias=False)),
        head=logit_head(128 * SEED * SEED),
    ))
    return generator, discriminator


@register_model("dcgan", conditional=False,
                description="DCGAN: projection + g_depth transposed convs in G, d_depth convs + linear in D; "
                            "g_width / d_width per net")
def build_dcgan(cfg: ModelConfig, num_classes: int = 10) -> tuple[nn.Module, nn.Module]:
    g_width, d_width = cfg.generator_width, cfg.discriminator_width
    generator = UnconditionalNet(OrderedDict(
        project=seed_projection(cfg.latent_dim, g_width, cfg.g_norm),
        upsample=upsampling_convs(g_width, g_width, cfg.g_depth, cfg.g_norm),
    ))
    discriminator = UnconditionalNet(OrderedDict(
        downsample=downsampling_convs(1, d_width, cfg.d_depth, cfg.d_norm, cfg.d_dropout),
        head=logit_head(d_width * SEED * SEED),
    ))
    return generator, discriminator
