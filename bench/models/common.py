"""Small building blocks shared by the model families.

Conventions every family follows: images are (B, 1, 28, 28) in [-1, 1]; generators end in
tanh; discriminators return logits of shape (B,); every net's forward is `(x, y=None)`.
Conv generators start from a 7x7 seed that two stride-2 layers grow to 28x28, and conv
discriminators mirror that (28 -> 14 -> 7); further layers are stride-1 at the widest width.
G's noise comes from `sample_latent` (bench.models.latent), the one place that draws z.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.models.layers import VirtualBatchNorm

IMAGE_SHAPE = (1, 28, 28)
IMAGE_PIXELS = 28 * 28
SEED = 7  # side of the conv generators' first feature map


class UnconditionalNet(nn.Sequential):
    """An nn.Sequential with the `(x, y=None)` signature shared by every G and D; y is ignored."""

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


def require_labels(y: torch.Tensor | None) -> torch.Tensor:
    if y is None:
        raise ValueError("this conditional network needs labels y (int64, shape (B,))")
    return y


def norm_layers(kind: str, num_features: int, *, spatial: bool) -> list[nn.Module]:
    """"batch", "virtual" or "none" (no layer) for a (B, C, H, W) (spatial) or (B, C) activation."""
    if kind == "batch":
        return [nn.BatchNorm2d(num_features) if spatial else nn.BatchNorm1d(num_features)]
    if kind == "virtual":
        return [VirtualBatchNorm(num_features)]
    if kind == "none":
        return []
    raise ValueError(f"unknown norm {kind!r}; choose batch, virtual or none")


# ---------------------------------------------------------------------------
# Conv stacks. 3x3 kernels throughout (as in report 000); stride 2 halves/doubles the side.


def deconv_stack(channels: list[int], strides: list[int], norm: str) -> list[nn.Module]:
    """Transposed convs channels[i] -> channels[i+1]; Norm + ReLU between, tanh at the end."""
    layers: list[nn.Module] = []
    last = len(strides) - 1
    for i, stride in enumerate(strides):
        # output_padding = stride - 1 makes a stride-2 layer exactly double the side.
        layers.append(nn.ConvTranspose2d(channels[i], channels[i + 1], 3, stride, padding=1,
                                         output_padding=stride - 1))
        if i < last:
            layers += [*norm_layers(norm, channels[i + 1], spatial=True), nn.ReLU()]
    layers.append(nn.Tanh())
    return layers


def conv_stack(channels: list[int], strides: list[int], norm: str, dropout: float,
               first_bias: bool = True) -> list[nn.Module]:
    """Convs channels[i] -> channels[i+1], each followed by [Norm] LeakyReLU(0.2) [Dropout2d].

    No norm after the first conv (DCGAN: normalising D's input layer hurts).
    """
    layers: list[nn.Module] = []
    for i, stride in enumerate(strides):
        layers.append(nn.Conv2d(channels[i], channels[i + 1], 3, stride, padding=1,
                                bias=first_bias or i > 0))
        if i > 0:
            layers += norm_layers(norm, channels[i + 1], spatial=True)
        layers.append(nn.LeakyReLU(0.2))
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))  # drops whole feature maps
    return layers


# Depth adds capacity. Every conv G/D resizes 7 <-> 28 with exactly two stride-2 layers at
# `width` / 2 and `width` channels; each layer beyond those two is a stride-1 3x3 conv at the
# widest width on the 7x7 map. So at a fixed width every extra layer adds 9 * width**2 + width
# weights (plus its norm): parameters strictly grow with depth, and the 28x28 / 14x14 layers,
# where compute is dearest, stay as they are. (Earlier versions halved the widths as depth
# grew, which left D at 21,953 / 26,433 / 27,521 parameters for depth 2 / 3 / 4: "deeper" was
# barely stronger.) Report 002 counts depth as the number of (transposed) convolutions, with a
# linear projection before G's and a linear layer after D's; so do we.


def check_conv_depth(depth: int) -> None:
    if depth < 2:
        raise ValueError(f"conv depth must be >= 2 (two stride-2 layers resize 7 <-> 28), got {depth}")


def seed_projection(in_features: int, channels: int, norm: str) -> nn.Sequential:
    """Linear -> (channels, 7, 7) -> Norm -> ReLU: the DCGAN generator's first stage."""
    return nn.Sequential(nn.Linear(in_features, channels * SEED * SEED),
                         nn.Unflatten(1, (channels, SEED, SEED)),
                         *norm_layers(norm, channels, spatial=True), nn.ReLU())


def upsampling_convs(in_channels: int, width: int, depth: int, norm: str) -> nn.Sequential:
    """(in_channels, 7, 7) -> (1, 28, 28) in [-1, 1] with `depth` transposed convs.

    depth - 2 stride-1 layers at `width` on the 7x7 map, then 7 -> 14 (to width / 2 channels)
    and 14 -> 28 (to 1 channel). E.g. width 128, depth 3: 128 -> 128 -> 64 -> 1, report 001's
    "Conv128-Conv64" generator.
    """
    check_conv_depth(depth)
    half = max(1, width // 2)
    channels = [in_channels, *[width] * (depth - 2), half, 1]
    return nn.Sequential(*deconv_stack(channels, [1] * (depth - 2) + [2, 2], norm))


def downsampling_convs(in_channels: int, width: int, depth: int, norm: str, dropout: float) -> nn.Sequential:
    """(in_channels, 28, 28) -> (width, 7, 7) with `depth` convs.

    28 -> 14 (to width / 2 channels), 14 -> 7 (to width), then depth - 2 stride-1 layers at `width`.
    """
    check_conv_depth(depth)
    half = max(1, width // 2)
    channels = [in_channels, half, width, *[width] * (depth - 2)]
    return nn.Sequential(*conv_stack(channels, [2, 2] + [1] * (depth - 2), norm, dropout))


# ---------------------------------------------------------------------------
# Dense stacks (MLP models) and heads


def dense_blocks(in_features: int, hidden: int, blocks: int, norm: str, dropout: float = 0.0) -> nn.Sequential:
    """`blocks` x [Linear(hidden) LeakyReLU(0.2) [Norm] [Dropout]]."""
    layers: list[nn.Module] = []
    for i in range(blocks):
        layers += [nn.Linear(in_features if i == 0 else hidden, hidden), nn.LeakyReLU(0.2),
                   *norm_layers(norm, hidden, spatial=False)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def image_head(in_features: int) -> nn.Sequential:
    """Linear -> tanh -> (B, 1, 28, 28): the MLP generators' output layer."""
    return nn.Sequential(nn.Linear(in_features, IMAGE_PIXELS), nn.Tanh(), nn.Unflatten(1, IMAGE_SHAPE))


def logit_head(in_features: int) -> nn.Sequential:
    """Flatten -> Linear(1) -> (B,): every discriminator's output layer (logits, no sigmoid)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, 1), nn.Flatten(0))


# ---------------------------------------------------------------------------
# Initialisation


@torch.no_grad()
def dcgan_init(module: nn.Module) -> None:
    """DCGAN init (Radford et al.): conv/linear weights N(0, 0.02), norm gammas N(1, 0.02), biases 0.

    Use as `net.apply(dcgan_init)`. Embeddings keep PyTorch's N(0, 1).
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, VirtualBatchNorm)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
