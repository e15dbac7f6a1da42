"""R2: a penalty on the gradient of D at generated data (Mescheder et al. 2018)."""

from __future__ import annotations

from pydantic import Field

from bench.techniques import Technique, register
from bench.techniques.r1 import r1_penalty


@register
class R2(Technique):
    """R2 regularisation, gamma / 2 * E[||grad_x D(x)||^2] over generated images x, added to D's loss
    (Mescheder et al. 2018, the counterpart of R1 on the generator's distribution): D is pushed to be
    flat where the fakes are. Combines with R1 (both on is the "R1 + R2" of later GAN recipes).
    """

    name = "r2"
    paper = "Mescheder et al. 2018"
    study = "r2"
    fields = {"r2_gamma": (float, Field(0.0, ge=0.0, le=1000.0,
                                        description="R2 penalty weight gamma on generated data (0: off)"))}

    def d_penalty(self, b):
        return self.values.r2_gamma / 2 * r1_penalty(self.info.D, b.fake, b.fake_y)
