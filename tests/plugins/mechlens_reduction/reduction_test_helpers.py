"""Attribution Datasets with known answers, built without any attributor plugin.

- :func:`synthetic_attribution`: a (time, cell, unit_channel) attribution made of given type time
  courses, with response = baseline + their sum (exact completeness).
- :class:`LinearToy`: a Model whose output is linear in its first layer, so attribution =
  weight x activation difference, exactly.
- :func:`exact_attribution`: layer attributions of a model whose first layer is linear in the
  stimulus (ToyCNN, LinearToy), by integrating the gradient along the straight path the scaled
  stimulus traces in that layer (what the authors' integrated gradients does), midpoint rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from mechlens.interfaces import Attributor, Model
from mechlens.parameters import param
from mechlens.schema import time_coord
from mechlens.testing import merged, noise_stimulus


def synthetic_attribution(
    courses: np.ndarray, baseline: float | np.ndarray = 2.0, frame_period_s: float = 0.01, start_s: float = 0.0
) -> xr.Dataset:
    """An attribution Dataset from per-type time courses.

    Parameters
    ----------
    courses : numpy.ndarray
        (time, cell, unit_channel) or (condition, time, cell, unit_channel) attributions in Hz.
    baseline : float or array
        Baseline response per cell (Hz).
    """
    has_cond = courses.ndim == 4
    n_t, n_cell, n_ch = courses.shape[-3:]
    coords: dict[str, Any] = {
        "time": time_coord(n_t, frame_period_s, start_s),
        "cell": [f"gc{i:02d}" for i in range(n_cell)],
        "unit_channel": np.arange(n_ch),
    }
    dims = ("time", "cell", "unit_channel")
    if has_cond:
        coords["condition"] = xr.DataArray(np.arange(courses.shape[0]) * 0.1 + 0.1, dims="condition")
        coords["condition"].attrs["swept"] = "period"
        dims = ("condition", *dims)
    attr = xr.DataArray(courses.astype(np.float32), dims=dims, coords=coords, attrs={"layer": "conv1", "units": "Hz"})
    base = xr.DataArray(np.broadcast_to(np.asarray(baseline, dtype=np.float32), (n_cell,)).copy(), dims="cell")
    response = (base + attr.sum("unit_channel")).astype(np.float32)
    return xr.Dataset(
        {
            "attribution": attr,
            "response": response,
            "baseline_response": base,
            "completeness_error": xr.zeros_like(response),
        },
        attrs={"frame_period_s": frame_period_s},
    )


class LinearToy(Model):
    """Conv first layer, then a linear read-out: output exactly linear in the first layer."""

    name = "linear-toy"

    @dataclass(frozen=True)
    class Parameters:
        history: int = param(4, "frames of history", min=1)
        size: int = param(8, "pixels per side", min=2)
        channels: int = param(3, "first-layer channels", min=1)
        kernel: int = param(3, "kernel size", min=1)
        n_cells: int = param(2, "cells", min=1)
        seed: int = param(0, "weight seed")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        self.history = p.history
        self.input_shape = (p.size, p.size)
        self.frame_period_s = 0.01
        s1 = p.size - p.kernel + 1
        self._shape = (p.channels, s1, s1)
        g = torch.Generator().manual_seed(p.seed)
        self.below = nn.Sequential(nn.Conv2d(p.history, p.channels, p.kernel))
        self.above = nn.Sequential(nn.Flatten(), nn.Linear(p.channels * s1 * s1, p.n_cells))
        with torch.no_grad():
            for m in [*self.below, *self.above]:
                for t in m.parameters():
                    t.copy_(torch.randn(t.shape, generator=g) * 0.3)
        self.module = nn.Sequential(self.below, self.above).eval()

    @property
    def cells(self) -> list[str]:
        return [f"gc{i:02d}" for i in range(self.params.n_cells)]

    def layers(self) -> dict[str, tuple[int, ...]]:
        return {"conv1": self._shape}

    def torch_module(self) -> nn.Module:
        return self.module

    def split(self, layer: str) -> tuple[nn.Module, nn.Module]:
        self.check_layer(layer)
        return self.below, self.above


def exact_attribution(
    model: Model,
    stimulus: xr.Dataset | None = None,
    steps: int = 64,
    keep_space: bool = False,
    n_times: int = 24,
    merge: bool = True,
) -> xr.Dataset:
    """Attribution of every cell to the model's first layer, merged with the stimulus (as a reducer gets it).

    The first layer is linear in the stimulus, so scaling the stimulus by alpha moves the layer along
    ``z0 + alpha (z - z0)``; the attribution is ``(z - z0) * mean_k grad(above)(z0 + alpha_k (z - z0))``
    with midpoint alphas (exact for a linear read-out).
    """
    stim = stimulus if stimulus is not None else noise_stimulus(model, n_times=n_times)
    layer = model.default_layer()
    below, above = model.split(layer)
    movie = stim["stimulus"]
    has_cond = "condition" in movie.dims
    conds = range(movie.sizes["condition"]) if has_cond else [None]
    attrs, resps = [], []
    h, (ny, nx) = model.history, model.input_shape
    with torch.no_grad():
        z0 = below(torch.zeros((1, h, ny, nx)))
        r0 = above(z0)[0].numpy()
    for c in conds:
        m = movie.isel(condition=c) if c is not None else movie
        x = model.windows(m).contiguous()
        with torch.no_grad():
            z = below(x)
        dz = z - z0
        total = torch.zeros((len(model.cells), *z.shape))
        for k in range(steps):
            alpha = (k + 0.5) / steps
            zk = (z0 + alpha * dz).requires_grad_(True)
            out = above(zk)
            for j in range(out.shape[1]):
                (g,) = torch.autograd.grad(out[:, j].sum(), zk, retain_graph=True)
                total[j] += g
        a = (total / steps * dz[None]).permute(1, 0, 2, 3, 4).numpy()  # (time, cell, C, Y, X)
        with torch.no_grad():
            resps.append(above(z).numpy())
        attrs.append(a if keep_space else a.sum(axis=(3, 4)))
    t = model.time_of_outputs(movie)
    coords: dict[str, Any] = {"time": t, "cell": list(model.cells), "unit_channel": np.arange(z.shape[1])}
    dims: tuple[str, ...] = ("time", "cell", "unit_channel")
    if keep_space:
        coords.update(unit_y=np.arange(z.shape[2]), unit_x=np.arange(z.shape[3]))
        dims = (*dims, "unit_y", "unit_x")
    if has_cond:
        coords["condition"] = movie["condition"]
        dims = ("condition", *dims)
        a_all, r_all = np.stack(attrs), np.stack(resps)
    else:
        a_all, r_all = attrs[0], resps[0]
    attribution = xr.DataArray(a_all.astype(np.float32), dims=dims, coords=coords, attrs={"layer": layer})
    lead = dims[: 3 if has_cond else 2]
    response = xr.DataArray(r_all.astype(np.float32), dims=lead, coords={k: coords[k] for k in lead})
    base = xr.DataArray(r0.astype(np.float32), dims="cell", coords={"cell": coords["cell"]})
    summed = attribution.sum([d for d in dims if d.startswith("unit_")])
    ds = xr.Dataset(
        {
            "attribution": attribution,
            "response": response,
            "baseline_response": base,
            "completeness_error": summed - (response - base),
        },
        attrs={"frame_period_s": model.frame_period_s},
    )
    return merged(stim, ds) if merge else ds


class LinearPathAttributor(Attributor):
    """The exact attribution of :func:`exact_attribution` as an Attributor (for pipeline tests)."""

    name = "linear-path"

    @dataclass(frozen=True)
    class Parameters:
        steps: int = param(16, "midpoint steps", min=1)

    def attribute(self, model: Model, stimulus: xr.Dataset, layer: str | None = None, cells: Any = None) -> xr.Dataset:
        ds = exact_attribution(model, stimulus, steps=self.params.steps, merge=False)
        return ds.sel(cell=list(cells)) if cells is not None else ds
