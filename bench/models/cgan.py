"""Conditional GANs (Mirza & Osindero 2014): both nets see the class label through an embedding.

* `cgan-mlp`: dense G and D; the label embedding is concatenated to the noise (G) or to the
  flattened image (D).
* `cgan-conv`: a conditional DCGAN. G concatenates a 7x7 label map to the projected noise
  before the transposed convs; D appends a 28x28 label map to the image as a second channel.
  Depth and width (g_depth / d_depth, g_width / d_width) as in `dcgan`. Report 002's CGAN
  projects noise and one-hot label into 4*4*256; here the noise goes to (g_width, 7, 7) and
  the label to one more 7x7 channel, because G2 must reach 28x28 with two stride-2 layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from bench.models import register_model
from bench.models.common import (IMAGE_PIXELS, IMAGE_SHAPE, SEED, dense_blocks, downsampling_convs,
                                 image_head, logit_head, require_labels, seed_projection, upsampling_convs)

if TYPE_CHECKING:  # a ModelConfig is passed in; the class is needed for type hints only
    from bench.config import ModelConfig


class MLPGenerator(nn.Module):
    def __init__(self, cfg: ModelConfig, num_classes: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, cfg.embed_dim)
        self.body = dense_blocks(cfg.latent_dim + cfg.embed_dim, cfg.hidden, cfg.mlp_blocks, cfg.g_norm)
        self.head = image_head(cfg.hidden)

    @property
    def label_embedding(self) -> nn.Embedding:
        """The label-embedding table (num_classes, embed_dim) G conditions on."""
        return self.embed

    def forward_embedding(self, z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """G fed an embedding vector e (B, embed_dim) instead of a label: forward(z, y) is
        forward_embedding(z, label_embedding(y)). Lets analyses probe embeddings no label has."""
        return self.head(self.body(torch.cat([z, e.to(z.dtype)], dim=1)))

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_embedding(z, self.embed(require_labels(y)))


class MLPDiscriminator(nn.Module):
    def __init__(self, cfg: ModelConfig, num_classes: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, cfg.embed_dim)
        self.body = dense_blocks(IMAGE_PIXELS + cfg.embed_dim, cfg.hidden, cfg.mlp_blocks, cfg.d_norm,
                                 cfg.d_dropout)
        self.head = logit_head(cfg.hidden)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.cat([x.flatten(1), self.embed(require_labels(y)).to(x.dtype)], dim=1)
        return self.head(self.body(h))


class ConvGenerator(nn.Module):
    def __init__(self, cfg: ModelConfig, num_classes: int):
        super().__init__()
        width = cfg.generator_width
        self.project = seed_projection(cfg.latent_dim, width, cfg.g_norm)
        # The label becomes one extra 7x7 channel next to the noise's `width` channels.
        self.label_map = nn.Sequential(nn.Embedding(num_classes, cfg.embed_dim),
                                       nn.Linear(cfg.embed_dim, SEED * SEED), nn.Unflatten(1, (1, SEED, SEED)))
        self.upsample = upsampling_convs(width + 1, width, cfg.g_depth, cfg.g_norm)

    @property
    def label_embedding(self) -> nn.Embedding:
        """The label-embedding table (num_classes, embed_dim) G conditions on."""
        return self.label_map[0]

    def forward_embedding(self, z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """G fed an embedding vector e (B, embed_dim) instead of a label (see MLPGenerator)."""
        seed = self.project(z)
        label_map = self.label_map[1:](e)  # Linear + Unflatten: the 7x7 label channel
        return self.upsample(torch.cat([seed, label_map.to(seed.dtype)], dim=1))

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_embedding(z, self.label_embedding(require_labels(y)))


class ConvDiscriminator(nn.Module):
    def __init__(self, cfg: ModelConfig, num_classes: int):
        super().__init__()
        # The label becomes a 28x28 map stacked on the image as a second input channel.
        self.label_map = nn.Sequential(nn.Embedding(num_classes, cfg.embed_dim),
                                       nn.Linear(cfg.embed_dim, IMAGE_PIXELS), nn.Unflatten(1, IMAGE_SHAPE))
        width = cfg.discriminator_width
        self.downsample = downsampling_convs(2, width, cfg.d_depth, cfg.d_norm, cfg.d_dropout)
        self.head = logit_head(width * SEED * SEED)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.cat([x, self.label_map(require_labels(y)).to(x.dtype)], dim=1)
        return self.head(self.downsample(h))


@register_model("cgan-mlp", conditional=True,
                description="conditional MLP GAN: label embedding concatenated to noise / flattened image")
def build_cgan_mlp(cfg: ModelConfig, num_classes: int = 10) -> tuple[nn.Module, nn.Module]:
    return MLPGenerator(cfg, num_classes), MLPDiscriminator(cfg, num_classes)


@register_model("cgan-conv", conditional=True,
                description="conditional DCGAN: label maps concatenated as channels; depth and widths as dcgan")
def build_cgan_conv(cfg: ModelConfig, num_classes: int = 10) -> tuple[nn.Module, nn.Module]:
    return ConvGenerator(cfg, num_classes), ConvDiscriminator(cfg, num_classes)
