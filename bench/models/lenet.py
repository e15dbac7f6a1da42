"""The evaluator's classifier: a LeNet-5-style CNN, wide enough for >= 99% MNIST test accuracy.

Its softmax gives the Inception Score, class histograms and TARR; its penultimate
activations (`features`) play the role of Inception's pool features for FID.
"""

from __future__ import annotations

import torch
from torch import nn


class LeNet(nn.Module):
    """Two conv + ReLU + max-pool stages, then three fully connected layers. Input in [-1, 1]."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # 28 -> 14
            nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),  # 14 -> 10 -> 5
            nn.Flatten(),
        )
        self.fc = nn.Sequential(
            nn.Linear(64 * 5 * 5, 256), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(256, 128), nn.ReLU(),
        )
        # Dropout sits in the head so that `features` is the same in train and eval mode.
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(128, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (B, 128), used for FID."""
        return self.fc(self.convs(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_classes)."""
        return self.head(self.features(x))
