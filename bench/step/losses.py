"""The plain GAN's losses, which the step uses where no technique replaces them."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_t: torch.Tensor,
               fake_t: torch.Tensor) -> torch.Tensor:
    """D's loss: BCE of real and fake logits against their targets (1 and 0 unless a technique moves them)."""
    return (F.binary_cross_entropy_with_logits(real_logits, real_t)
            + F.binary_cross_entropy_with_logits(fake_logits, fake_t))


def non_saturating_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """G's loss: -log D(G(z)) (Goodfellow et al. 2014, section 3)."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
