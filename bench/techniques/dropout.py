"""Dropout in D (the layers are built by the model families from `model.d_dropout`)."""

from __future__ import annotations

from pydantic import Field

from bench.techniques import Technique, register


@register
class Dropout(Technique):
    """Dropout after each of D's hidden layers (Srivastava et al. 2014; report 001's rates, report 000's 0.25).

    Labelled when the rate differs from the default 0.25 (report 000's D).
    """

    name = "dropout"
    label_key = "drop"
    section = "model"
    paper = "Srivastava et al. 2014"
    study = "dropout"
    varies_per_member = False  # the rate is an attribute of D's dropout layers
    fields = {"d_dropout": (float, Field(0.25, ge=0.0, lt=1.0, description="dropout after each of D's hidden "
                                                                           "layers"))}
