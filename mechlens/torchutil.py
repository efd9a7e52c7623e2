"""Small torch helpers shared by the core and plugins (imported lazily: torch is heavy)."""

from __future__ import annotations

import numpy as np
import torch


def run_batched(module: torch.nn.Module, inputs: torch.Tensor, batch_size: int) -> np.ndarray:
    """Run ``module`` in eval mode over ``inputs`` in batches along dim 0, without gradients.

    Parameters
    ----------
    module : torch.nn.Module
        Any module taking (batch, ...) tensors.
    inputs : torch.Tensor
        (n, ...) input; may be a strided view, each batch is made contiguous on the module's device.
    batch_size : int
        Rows per forward pass.

    Returns
    -------
    numpy.ndarray
        (n, ...) outputs, float32, on the CPU.
    """
    try:
        device = next(module.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = module.training
    module.eval()
    outs = []
    try:
        with torch.no_grad():
            for start in range(0, inputs.shape[0], batch_size):
                chunk = inputs[start : start + batch_size].to(device=device, dtype=torch.float32).contiguous()
                outs.append(module(chunk).detach().cpu())
    finally:
        module.train(was_training)
    return torch.cat(outs).numpy().astype(np.float32, copy=False)


class GaussianNoise(torch.nn.Module):
    """Additive Gaussian noise during training, the identity in eval mode (a regulariser).

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
