import torch

from tests.techniques.conftest import images


def test_instance_noise_is_annealed_linearly_to_zero_on_real_and_fake(linear_stack):
    s = linear_stack(torch.zeros(1), instance_noise_std=0.5)
    s.info.total_steps = 100
    x = torch.zeros(20000, 1, 2, 2)
    for step, std in ((0, 0.5), (50, 0.25), (90, 0.05)):
        s.info.iteration.fill_(step)
        for real in (True, False):
            assert abs(s.d_input(x, real).std().item() - std) < 0.01 * max(std, 0.1) + 0.003
    s.info.iteration.fill_(100)
    real, _ = images(4)
    assert torch.equal(s.d_input(real, True), real)  # clean images at the end


def test_instance_noise_reaches_d_in_both_steps(gan_step):
    step = gan_step(**{"techniques.instance_noise_std": 1.0})
    seen = []
    step.D.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    real, labels = images(8)
    step.d_step(real, labels)
    step.g_step(real, labels)
    noisy_real = seen[0][:8]  # D's first pass (joint or not) starts with the real batch
    assert (noisy_real - real).std().item() > 0.8  # std 1.0 at step 0
    assert seen[-1].abs().max().item() > 1.5  # G's step: D saw fakes (tanh, in [-1, 1]) plus noise
