"""Minibatch standard deviation: D sees how varied the batch is (Karras et al. 2018)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from bench.techniques import Technique, last_linear, register


@register
class MinibatchStd(Technique):
    """Minibatch standard deviation (Karras et al. 2018; the simplified form of Salimans et al.
    2016's minibatch discrimination): D's logit layer also gets the standard deviation of its
    penultimate features across the batch, averaged to one number, so a batch of near-identical
    fakes looks different from a real batch and mode collapse is penalised.

    Real and fake batches then go through D separately (a joint pass would mix their statistics).
    """

    name = "minibatch_std"
    label_key = "mbstd"
    section = "model"
    paper = "Karras et al. 2018"
    study = "minibatch-std"
    couples_batch = True
    varies_per_member = False  # D's logit layer gets one more input, the same for every member of a group
    fields = {"d_minibatch_std": (bool, Field(False, description="D's logit layer also sees the batch's "
                                                                 "feature standard deviation"))}

    @classmethod
    def wrap_models(cls, gan, cfg):
        if cfg.model.d_minibatch_std:
            parent, name, head = last_linear(gan.discriminator)
            setattr(parent, name, MinibatchStdLinear.extending(head))


class MinibatchStdLinear(nn.Linear):
    """A linear layer over [features, mean over features of their std across the batch]."""

    @classmethod
    def extending(cls, head: nn.Linear) -> "MinibatchStdLinear":
        """One more input than `head`, the old weights kept and the new one 0 (init is unchanged)."""
        new = cls(head.in_features + 1, head.out_features, bias=head.bias is not None,
                  device=head.weight.device, dtype=head.weight.dtype)
        with torch.no_grad():
            new.weight.zero_()
            new.weight[:, :-1] = head.weight
            if head.bias is not None:
                new.bias.copy_(head.bias)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std = x.float().std(dim=0, unbiased=False).mean() if x.shape[0] > 1 else x.new_zeros((), dtype=torch.float32)
        return super().forward(torch.cat([x, std.to(x.dtype).expand(x.shape[0], 1)], dim=1))
