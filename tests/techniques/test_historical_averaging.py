import pytest
import torch

from tests.techniques.conftest import images


def test_historical_averaging_penalises_distance_to_the_running_mean_of_weights(gan_step):
    step = gan_step(**{"techniques.hist_avg_lambda": 0.5})
    ha = step.hooks.items[0]
    assert ha.d_penalty(None).item() == 0.0 and ha.g_penalty(None).item() == 0.0  # theta == its own average
    history = [[p.detach().clone() for p in step.D.parameters()]]
    real, labels = images(16)
    for _ in range(3):
        step.d_step(real, labels)
        history.append([p.detach().clone() for p in step.D.parameters()])
    mean = [torch.stack(ps).mean(0) for ps in zip(*history)]
    expected = 0.5 * sum((p - m).pow(2).sum() for p, m in zip(step.D.parameters(), mean))
    assert expected.item() > 0
    assert ha.d_penalty(None).item() == pytest.approx(expected.item(), rel=1e-4)


def test_historical_average_survives_a_checkpoint(gan_step):
    step = gan_step(**{"techniques.hist_avg_lambda": 0.5})
    step.d_step(*images(16))
    state = step.state_dict()
    fresh = gan_step(**{"techniques.hist_avg_lambda": 0.5})
    fresh.load_state_dict(0, state)
    assert {k: int(c) for k, c in fresh.hooks.items[0].state_dict()["count"].items()} == {"d": 2, "g": 1}
    assert fresh.hooks.items[0].d_penalty(None).item() == pytest.approx(step.hooks.items[0].d_penalty(None).item())
