"""G's loss for the BCE game: non-saturating -log D(G(z)) (the default) or saturating log(1 - D(G(z)))."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from bench.techniques import Technique, register

SHORT = {"saturating": "sat"}


@register
class GLoss(Technique):
    """The original minimax G loss versus the non-saturating one (Goodfellow et al. 2014, section 3).

    The saturating loss has vanishing gradients while D confidently rejects fakes.
    """

    name = "g_loss"
    paper = "Goodfellow et al. 2014"
    study = "g-loss"
    varies_per_member = False  # a choice of function
    fields = {"g_loss": (Literal["non-saturating", "saturating"],
                         Field("non-saturating", description="G's loss in the BCE game"))}

    @classmethod
    def label(cls, cfg):
        v = cfg.techniques.g_loss
        return None if v == "non-saturating" else SHORT.get(v, v)

    def g_loss(self, b):
        return saturating(b.fake_logits)


def saturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """log(1 - D(G(z))), minimised by G."""
    return -F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
