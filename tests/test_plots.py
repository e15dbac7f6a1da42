"""The run's pictures: `image_grid` is torchvision's `make_grid` as the runs use it, pixel for pixel."""

import pytest
import torch
from torchvision.utils import make_grid

from bench.plots import image_grid


@pytest.mark.parametrize("n,channels,columns", [(1, 1, 8), (3, 1, 8), (16, 1, 8), (10, 1, 4), (7, 3, 3), (100, 1, 10)])
def test_image_grid_is_make_grid(n, channels, columns):
    images = torch.randn(n, channels, 28, 28, generator=torch.Generator().manual_seed(n)) * 1.5  # beyond [-1, 1]
    expected = make_grid(images, nrow=columns, normalize=True, value_range=(-1, 1), padding=2)
    assert torch.equal(image_grid(images, columns), expected)
