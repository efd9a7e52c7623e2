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


class TrainingOnly(torch.nn.Module):
    """Base of modules that act only in training and are the identity in eval mode (e.g. a noise
    regulariser).

    Attributors that analyse a module's structure (the exact integrated gradients) treat a subclass as
    the identity in eval mode, like ``torch.nn.Dropout``; a subclass's ``forward`` must return its
    input unchanged when ``self.training`` is False. Subclass it rather than ``torch.nn.Module`` for
    such a layer, and a model keeps exact attribution without the attributor knowing the layer.
    """
