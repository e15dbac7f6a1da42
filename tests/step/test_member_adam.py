"""One Adam over K stacked members, each with its own learning rate and betas, equals K separate Adams."""

import pytest
import torch

from bench.step.member_adam import MemberAdam

LR = [2e-5, 2e-4, 2e-3]
BETAS = [(0.5, 0.999), (0.0, 0.9), (0.9, 0.99)]


@pytest.mark.parametrize("fused", [False, True])
def test_per_member_rates_and_betas_equal_separate_adams(fused):
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 4, 5), (3, 7), (3,)]  # K = 3 members first
    stacked = [torch.randn(s, generator=g).requires_grad_() for s in shapes]
    separate = [[p[k].detach().clone().requires_grad_() for p in stacked] for k in range(3)]
    ours = MemberAdam(stacked, LR, BETAS, fused=fused)
    theirs = [torch.optim.Adam(ps, lr=LR[k], betas=BETAS[k], fused=fused)
              for k, ps in enumerate(separate)]
    for _ in range(6):
        grads = [torch.randn(s, generator=g) for s in shapes]
        for p, grad in zip(stacked, grads):
            p.grad = grad.clone()
        for k, ps in enumerate(separate):
            for p, grad in zip(ps, grads):
                p.grad = grad[k].clone()
        ours.step()
        for opt in theirs:
            opt.step()
    for k in range(3):
        for p, q in zip(stacked, separate[k]):
            torch.testing.assert_close(p[k], q, rtol=0, atol=0)  # torch's own kernel on the member's slices
    assert not torch.allclose(stacked[0][0], stacked[0][2])  # the members did move differently


def test_a_member_without_gradient_signal_does_not_move_the_others():
    p = torch.zeros(2, 3, requires_grad=True)
    opt = MemberAdam([p], [1e-2, 1e-2], [(0.5, 0.999)] * 2)
    p.grad = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    opt.step()
    assert torch.all(p[0] < 0) and torch.equal(p[1], torch.zeros(3))


def test_a_stopped_member_stays_where_it_was():
    p = torch.zeros(2, 3, requires_grad=True)
    opt = MemberAdam([p], [1e-2, 1e-2], [(0.5, 0.999)] * 2)
    opt.stop(1)
    p.grad = torch.ones(2, 3)
    opt.step()
    assert torch.all(p[0] < 0) and torch.equal(p[1], torch.zeros(3))
    assert opt.state[p]["step"].tolist() == [1.0, 0.0]


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="stacked along a first dimension of 3"):
        MemberAdam([torch.zeros(2, 4, requires_grad=True)], LR, BETAS)
    with pytest.raises(ValueError, match="one value per member, got 3 rates and 2 betas"):
        MemberAdam([torch.zeros(3, 4, requires_grad=True)], LR, BETAS[:2])
