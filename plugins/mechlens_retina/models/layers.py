"""Layers of the retina CNN that torch does not have."""

from __future__ import annotations

import torch

from mechlens.torchutil import TrainingOnly


class GaussianNoise(TrainingOnly):
    """Additive Gaussian noise during training, the identity in eval mode (the published model's
    regulariser, Keras ``GaussianNoise``).

    Parameters
    ----------
    std : float
        Standard deviation of the noise, in the units of the input.
    """

    def __init__(self, std: float = 0.05) -> None:
        super().__init__()
        self.std = float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.std > 0:
            return x + self.std * torch.randn_like(x)
        return x

    def extra_repr(self) -> str:
        return f"std={self.std}"
