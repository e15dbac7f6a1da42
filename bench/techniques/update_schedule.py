"""D:G update schedule: `d_steps` D updates and `g_steps` G updates per iteration."""

from __future__ import annotations

from pydantic import Field

from bench.techniques import Technique, register


@register
class UpdateSchedule(Technique):
    """k D steps per G step (Goodfellow et al. 2014, Algorithm 1; WGAN's 5:1; report 002 section 1.3).

    The step runs the two counts (`bench.step.factory`); there is no hook. Its tag and label key stay
    "sched" (what MLflow runs already carry).
    """

    name = "update_schedule"
    label_key = "sched"
    paper = "Goodfellow et al. 2014"
    study = "schedules"
    varies_per_member = False  # the number of steps is control flow
    fields = {
        "d_steps": (int, Field(1, ge=1, le=20, description="D updates per iteration")),
        "g_steps": (int, Field(1, ge=1, le=20, description="G updates per iteration")),
    }

    @classmethod
    def label(cls, cfg):
        t = cfg.techniques
        return None if (t.d_steps, t.g_steps) == (1, 1) else f"{t.d_steps}:{t.g_steps}"
