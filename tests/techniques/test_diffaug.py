import torch

from bench.techniques.diffaug import BACKGROUND, cutout, translation
from tests.techniques.conftest import images


def dot_images(n: int) -> torch.Tensor:
    x = torch.full((n, 1, 28, 28), BACKGROUND)
    x[:, :, 14, 14] = 1.0
    return x


def test_translation_shifts_each_image_by_at_most_an_eighth():
    torch.manual_seed(0)
    out = translation(dot_images(256))
    where = (out[:, 0] == 1.0).nonzero()
    assert len(where) == 256  # one bright pixel each: moved, never duplicated or lost (4 px from the border)
    shifts = where[:, 1:] - 14
    assert shifts.abs().max().item() <= 4 and len({tuple(s.tolist()) for s in shifts}) > 30
    assert ((out == 1.0) | (out == BACKGROUND)).all()  # the vacated border is background


def test_cutout_blanks_one_square_of_half_the_side():
    torch.manual_seed(0)
    x = torch.ones(64, 1, 28, 28)
    blanked = (cutout(x) == BACKGROUND).flatten(1).sum(1)
    assert blanked.max().item() == 14 * 14 and blanked.min().item() > 0


def test_diffaug_is_differentiable_and_applied_to_real_and_fake(linear_stack):
    s = linear_stack(torch.zeros(1), diffaug="translation,cutout")
    torch.manual_seed(0)
    fake = images(8)[0].requires_grad_(True)
    out = s.d_input(fake, False)
    assert out.shape == fake.shape and not torch.equal(out, fake)
    out.sum().backward()  # G's gradient passes through the augmentation
    assert fake.grad.abs().sum() > 0 and (fake.grad == 0).any()  # pixels cut or shifted out get none
    real = images(8, 1)[0]
    assert not torch.equal(s.d_input(real, True), real)
