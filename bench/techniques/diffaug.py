"""Differentiable augmentation of every image D sees (Zhao et al. 2020)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from bench.techniques import Technique, register


@register
class DiffAugment(Technique):
    """DiffAugment (Zhao et al. 2020): the same kind of random augmentation on real and fake images,
    in D's step and in G's, written with differentiable tensor ops so G's gradient flows through
    it. D never sees un-augmented images, so the augmentation does not leak into G's samples.

    Policies as in the paper's code, for single-channel digits: "translation" (shift by up to 1/8
    of the image, background filled in), "cutout" (one square of half the image side blanked),
    "translation,cutout" (both). The paper's colour policy has no meaning for grey digits.
    """

    name = "diffaug"
    paper = "Zhao et al. 2020"
    study = "diffaug"
    varies_per_member = False  # the policy is control flow
    fields = {"diffaug": (Literal["off", "translation", "cutout", "translation,cutout"],
                          Field("off", description="DiffAugment policy on every image D sees"))}

    @classmethod
    def label(cls, cfg):
        return None if cfg.techniques.diffaug == "off" else cfg.techniques.diffaug.replace(",", "+")

    def d_input(self, x, real):
        return augment(x, self.values.diffaug)


BACKGROUND = -1.0  # images are in [-1, 1]; MNIST's background is black


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by its own random (dx, dy) of at most ratio * size pixels."""
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy, gx = (gy.unsqueeze(0) + dy).clamp(-1, h), (gx.unsqueeze(0) + dx).clamp(-1, w)
    padded = F.pad(x, [1, 1, 1, 1], value=BACKGROUND)  # index -1 / h lands on the padding
    idx = ((gy + 1) * (w + 2) + gx + 1).flatten(1)  # (n, h*w) into the padded image
    flat = padded.flatten(2)  # (n, c, (h+2)*(w+2))
    return flat.gather(2, idx.unsqueeze(1).expand(-1, x.shape[1], -1)).view_as(x)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Blank one random square of side ratio * size per image (it may reach past the border)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    oy, ox = gy - cy + ch // 2, gx - cx + cw // 2  # position inside the square, when in [0, side)
    inside = (oy >= 0) & (oy < ch) & (ox >= 0) & (ox < cw)
    return torch.where(inside.unsqueeze(1), torch.full_like(x, BACKGROUND), x)


AUGMENT = {"translation": translation, "cutout": cutout}


def augment(x: torch.Tensor, policy: str) -> torch.Tensor:
    """x through each augmentation of a comma-separated policy, in order."""
    for name in policy.split(","):
        x = AUGMENT[name](x)
    return x
