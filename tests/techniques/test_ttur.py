import pytest


def test_ttur_sets_the_ratio_of_the_two_learning_rates_and_keeps_their_geometric_mean(gan_step):
    step = gan_step(**{"optim.lr": 2e-4, "techniques.ttur_ratio": 4.0})
    lr_g, lr_d = step.opt_g.param_groups[0]["lr"], step.opt_d.param_groups[0]["lr"]
    assert lr_g == pytest.approx(1e-4) and lr_d == pytest.approx(4e-4)  # Heusel et al.'s 1e-4 / 4e-4
    plain = gan_step(**{"optim.lr": 2e-4})
    assert plain.opt_g.param_groups[0]["lr"] == plain.opt_d.param_groups[0]["lr"] == pytest.approx(2e-4)
