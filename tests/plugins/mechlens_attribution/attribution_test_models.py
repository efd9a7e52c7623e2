"""Small hand-made models for the attribution tests (imported by the test modules of this folder)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from mechlens.interfaces import Model, stack_conditions
from mechlens.testing import noise_stimulus


class SeqModel(Model):
    """A model made of two given Sequentials: ``below`` gives layer ``"hidden"``, ``above`` the rates."""

    name = "seq-model"

    def __init__(
        self,
        below: nn.Module,
        above: nn.Module,
        history: int = 2,
        size: int = 4,
        n_cells: int | None = None,
        **params: Any,
    ) -> None:
        super().__init__(**params)
        self.history = history
        self.input_shape = (size, size)
        self.frame_period_s = 0.01
        self.below, self.above = below, above
        self.module = nn.Sequential(below, above).eval()
        with torch.no_grad():
            probe = torch.zeros(1, history, size, size)
            z = below(probe)
            n = above(z).shape[1]
        self._shape = tuple(z.shape[1:])
        self._cells = [f"gc{i:02d}" for i in range(n_cells or n)]

    @property
    def cells(self) -> list[str]:
        return self._cells

    def layers(self) -> dict[str, tuple[int, ...]]:
        return {"hidden": self._shape}

    def torch_module(self) -> nn.Module:
        return self.module

    def split(self, layer: str) -> tuple[nn.Module, nn.Module]:
        self.check_layer(layer)
        return self.below, self.above


def seeded(module: nn.Module, seed: int, scale: float = 0.5) -> nn.Module:
    """Fill every parameter of ``module`` with seeded normal values (BN scales kept positive)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            for name, t in m.named_parameters(recurse=False):
                t.copy_(torch.randn(t.shape, generator=g) * scale)
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and name == "weight":
                    t.abs_().add_(0.5)
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return module.eval()


def linear_model(seed: int = 0, final: nn.Module | None = None) -> SeqModel:
    """conv -> BN -> conv -> flatten -> linear (affine throughout), optionally a final nonlinearity."""
    below = nn.Sequential(nn.Conv2d(2, 3, 2))  # 4x4 -> 3x3
    parts: list[nn.Module] = [nn.BatchNorm2d(3), nn.Conv2d(3, 2, 2), nn.Flatten(), nn.Linear(8, 3)]
    if final is not None:
        parts.append(final)
    return SeqModel(seeded(below, seed), seeded(nn.Sequential(*parts), seed + 1))


def single_relu_model(seed: int = 0, softplus: bool = False) -> SeqModel:
    """One ReLU unit fed by a linear map of the layer: r = relu(w.z + c) [-> v * . + d -> softplus]."""
    below = nn.Sequential(nn.Conv2d(2, 2, 2))  # (2, 3, 3) layer
    parts: list[nn.Module] = [nn.Flatten(), nn.Linear(18, 1), nn.ReLU()]
    if softplus:
        parts += [nn.Linear(1, 1), nn.Softplus()]
    return SeqModel(seeded(below, seed), seeded(nn.Sequential(*parts), seed + 1))


def stimulus_for(model: Model, n_times: int = 8, seed: int = 0, contrast: float = 1.0) -> xr.Dataset:
    """White noise on the model's grid (see :func:`mechlens.testing.noise_stimulus`)."""
    return noise_stimulus(model, n_times=n_times, seed=seed, contrast=contrast)


def swept_stimulus(model: Model, contrasts: list[float], n_times: int = 6) -> xr.Dataset:
    """The same noise at several contrasts, stacked along ``condition`` (swept ``contrast``)."""
    parts = [noise_stimulus(model, n_times=n_times, seed=3, contrast=c) for c in contrasts]
    return stack_conditions(parts, "contrast", contrasts)


def full_field_stimulus(model: Model, n_times: int = 10, seed: int = 0) -> xr.Dataset:
    """A spatially uniform flicker: every pixel of a frame has the same contrast."""
    ds = noise_stimulus(model, n_times=n_times, seed=seed)
    values = np.random.default_rng(seed).standard_normal(ds.sizes["time"]).astype(np.float32)
    ds["stimulus"].values[:] = values[:, None, None]
    return ds


def windows_and_layer(model: Model, stim: xr.Dataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(windows, their layer activations, the zero baseline's activations) for closed-form checks (float64)."""
    x = model.windows(stim["stimulus"]).contiguous().double()
    below = model.split(model.default_layer())[0].double()
    with torch.no_grad():
        z = below(x)
        z0 = below(torch.zeros_like(x[:1]))
    below.float()
    return x, z, z0
