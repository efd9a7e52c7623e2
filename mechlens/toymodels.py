"""Small, fast models for tests and examples: a generic two-layer CNN (conv, conv, dense, softplus).

Not a scientific model: it exists so that attributors, reducers and the pipeline can be tested
without any model plugin installed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from mechlens.interfaces import Grid, Model, Stimulus
from mechlens.parameters import param
from mechlens.schema import grid_coords, time_coord


class ToyCNN(Model):
    """A tiny conv -> BN -> ReLU -> conv -> BN -> ReLU -> linear -> BN -> softplus network with random weights."""

    name = "toy-cnn"

    @dataclass(frozen=True)
    class Parameters:
        history: int = param(5, "frames of history", min=1)
        size: int = param(12, "pixels per side", min=4)
        channels: int = param(3, "first-layer channels", min=1)
        kernel: int = param(5, "first-layer kernel size", min=1)
        channels2: int = param(2, "second-layer channels", min=1)
        kernel2: int = param(3, "second-layer kernel size", min=1)
        n_cells: int = param(3, "output cells", min=1)
        seed: int = param(0, "weight seed")

    def __init__(self, **params: Any) -> None:
        import torch
        from torch import nn

        super().__init__(**params)
        p = self.params
        self.history = p.history
        self.input_shape = (p.size, p.size)
        self.frame_period_s = 0.01
        s1 = p.size - p.kernel + 1
        s2 = s1 - p.kernel2 + 1
        if s2 < 1:
            raise ValueError("toy-cnn: kernels larger than the image")
        self._shape1 = (p.channels, s1, s1)
        g = torch.Generator().manual_seed(p.seed)
        self.below = nn.Sequential(nn.Conv2d(p.history, p.channels, p.kernel))
        self.above = nn.Sequential(
            nn.BatchNorm2d(p.channels),
            nn.ReLU(),
            nn.Conv2d(p.channels, p.channels2, p.kernel2),
            nn.BatchNorm2d(p.channels2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(p.channels2 * s2 * s2, p.n_cells),
            nn.Softplus(),
        )
        with torch.no_grad():
            for m in [*self.below, *self.above]:
                for name, t in m.named_parameters():
                    t.copy_(torch.randn(t.shape, generator=g) * (0.5 if name == "weight" else 0.1))
                    if isinstance(m, nn.BatchNorm2d) and name == "weight":
                        t.abs_().add_(0.5)
                if isinstance(m, nn.BatchNorm2d):
                    # None only with track_running_stats=False; the layers above keep the default (True)
                    assert m.running_mean is not None and m.running_var is not None
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        self.module = nn.Sequential(self.below, self.above).eval()
        self._cells = [f"gc{i:02d}" for i in range(p.n_cells)]

    @property
    def cells(self) -> list[str]:
        return self._cells

    def layers(self) -> dict[str, tuple[int, ...]]:
        return {"conv1": self._shape1}

    def torch_module(self) -> Any:
        return self.module

    def split(self, layer: str) -> tuple[Any, Any]:
        self.check_layer(layer)
        return self.below, self.above


class ToyNoise(Stimulus):
    """Gaussian white noise on a small grid (for tests)."""

    name = "toy-noise"

    @dataclass(frozen=True)
    class Parameters:
        frames: int = param(30, "frames after the history", min=1)
        pre_frames: int | None = param(None, "frames of history before time 0 (default: the model's, else 5)", min=0)
        size: int | None = param(None, "pixels per side (default: the model's grid, else 12)", min=1)
        width: int | None = param(None, "pixels along x, for a grid that is not square (default: size)", min=1)
        contrast: float | list[float] = param(1.0, "standard deviation", min=0, sweepable=True)
        frame_period_s: float | None = param(
            None, "seconds per frame (default: the model's, else 0.01 s)", units="s", gt=0
        )
        pixel_um: float | None = param(None, "pixel size (default: the model's, else 55 um)", units="um", gt=0)

    def on_grid(self, params: Any, grid: Grid | None) -> Any:
        """Values left unset follow the model's grid; explicit ones are kept (the model refuses a mismatch)."""
        if params.size is not None:
            shape = (params.size, params.width or params.size)
        else:
            shape = grid.shape if grid is not None else (12, params.width or 12)
        return dataclasses.replace(
            params,
            size=shape[0],
            width=shape[1],
            pre_frames=params.pre_frames if params.pre_frames is not None else (grid.history - 1 if grid else 5),
            frame_period_s=params.frame_period_s or (grid.frame_period_s if grid else 0.01),
            pixel_um=params.pixel_um or (grid.pixel_um if grid is not None and grid.pixel_um else 55.0),
        )

    def render(self, params: Any, seed: int) -> xr.Dataset:
        rng = np.random.default_rng(seed)
        n = params.frames + params.pre_frames
        movie = rng.standard_normal((n, params.size, params.width)).astype(np.float32) * params.contrast
        coords = {"time": time_coord(n, params.frame_period_s, -params.pre_frames * params.frame_period_s)}
        coords.update(grid_coords(params.size, params.width, params.pixel_um))
        da = xr.DataArray(movie, dims=("time", "y", "x"), coords=coords, attrs={"units": "1", "long_name": "contrast"})
        return xr.Dataset(
            {"stimulus": da},
            attrs={"frame_period_s": params.frame_period_s, "pre_s": params.pre_frames * params.frame_period_s},
        )
