"""Normalisation in G and D, including virtual batch norm (the layers live in `bench.models.layers`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bench.techniques import Technique, register

Norm = Literal["batch", "virtual", "none"]


@register
class Normalization(Technique):
    """Virtual batch norm (Salimans et al. 2016; report 002): each example is normalised with the
    statistics of a fixed reference batch (plus itself), so examples in a batch stay independent.

    The model families build the norm layers from `model.g_norm` / `model.d_norm`; the reference
    batch is fixed once per run (`bench.step.set_references`). Only "virtual" is labelled:
    batch norm is part of a model's architecture.
    """

    name = "vbn"
    section = "model"
    paper = "Salimans et al. 2016"
    study = "vbn"
    varies_per_member = False  # the norm layers are part of the nets, the same for every member of a group
    fields = {
        "g_norm": (Norm, Field("batch", description="G's normalisation: batch, virtual, none")),
        "d_norm": (Norm, Field("none", description="D's normalisation: batch, virtual, none")),
        "vbn_ref_size": (int, Field(64, ge=2, le=1024, description="reference batch size for virtual batch norm")),
    }

    @classmethod
    def label(cls, cfg):
        return {(True, True): "GD", (True, False): "G", (False, True): "D"}.get(
            (cfg.model.g_norm == "virtual", cfg.model.d_norm == "virtual"))
