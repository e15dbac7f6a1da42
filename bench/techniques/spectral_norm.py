"""Spectral normalization of D's layers (Miyato et al. 2018)."""

from __future__ import annotations

from pydantic import Field
from torch import nn
from torch.nn.utils import parametrizations

from bench.techniques import Technique, register


@register
class SpectralNorm(Technique):
    """Spectral normalization in D (Miyato et al. 2018): every conv and linear weight of D is divided
    by its largest singular value (one power iteration per forward pass), so each layer, and D
    as a whole, is at most 1-Lipschitz.

    Uses PyTorch's `torch.nn.utils.parametrizations.spectral_norm`; it wraps the layers after weight
    init, whenever a GAN is built from the config, so checkpoints load into the same structure.
    """

    name = "spectral_norm"
    groupable = False  # a parametrization of the weights, which stacking the members would drop
    label_key = "sn"
    section = "model"
    paper = "Miyato et al. 2018"
    study = "spectral-norm"
    varies_per_member = False  # it reparametrizes D's layers, the same for every member of a group
    fields = {"d_spectral_norm": (bool, Field(False, description="spectral normalization of D's conv and "
                                                                 "linear layers"))}

    @classmethod
    def wrap_models(cls, gan, cfg):
        if not cfg.model.d_spectral_norm:
            return
        for m in list(gan.discriminator.modules()):
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                parametrizations.spectral_norm(m)
