"""The vanilla GAN (Goodfellow et al. 2014): dense G and D, no conditioning.

The baseline that mode-collapses: G maps noise through `g_depth` dense LeakyReLU layers to
784 tanh pixels; D maps the flattened image through `d_depth` dense LeakyReLU + dropout
layers to one logit. Norms (g_norm / d_norm) go after each hidden activation.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from torch import nn

from bench.models import register_model
from bench.models.common import IMAGE_PIXELS, UnconditionalNet, dense_blocks, image_head, logit_head

if TYPE_CHECKING:  # a ModelConfig is passed in; the class is needed for type hints only
    from bench.config import ModelConfig


@register_model("vanilla", conditional=False,
                description="unconditional MLP GAN (g_depth / d_depth dense layers of `hidden` units)")
def build_vanilla(cfg: ModelConfig, num_classes: int = 10) -> tuple[nn.Module, nn.Module]:
    generator = UnconditionalNet(OrderedDict(
        body=dense_blocks(cfg.latent_dim, cfg.hidden, cfg.g_depth, cfg.g_norm),
        head=image_head(cfg.hidden),
    ))
    discriminator = UnconditionalNet(OrderedDict(
        flatten=nn.Flatten(),
        body=dense_blocks(IMAGE_PIXELS, cfg.hidden, cfg.d_depth, cfg.d_norm, cfg.d_dropout),
        head=logit_head(cfg.hidden),
    ))
    return generator, discriminator
