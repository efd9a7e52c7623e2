"""A full-field sinusoidal grating drifting at constant speed."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from mechlens.errors import ParameterError
from mechlens.interfaces import Grid, Stimulus
from mechlens.parameters import param
from mechlens.schema import grid_coords, time_coord


class DriftingGrating(Stimulus):
    """A sinusoidal grating drifting horizontally (direction selectivity, speed tuning)."""

    name = "drifting-grating"

    @dataclass(frozen=True)
    class Parameters:
        wavelength_um: float = param(440.0, "spatial period of the grating", units="um", gt=0)
        speed_um_s: float | list[float] = param(440.0, "drift speed (negative: leftward)", units="um/s", sweepable=True)
        contrast: float = param(1.0, "amplitude in z-scored contrast units", min=0)
        duration_s: float = param(1.0, "analysed duration after the history", units="s", gt=0)
        # the grid: None (the default) follows the model's grid (see on_grid), else these defaults
        pre_s: float | None = param(None, "grey history before time 0 (default: the model's window, else 0.4 s)",
                                    units="s", min=0)  # fmt: skip
        height_px: int | None = param(None, "grid height (default: the model's, else 50)", min=2)
        width_px: int | None = param(None, "grid width (default: the model's, else 50)", min=2)
        pixel_um: float | None = param(None, "pixel size on the retina (default: the model's, else 55 um)",
                                       units="um", gt=0)  # fmt: skip
        frame_period_s: float | None = param(None, "seconds per frame (default: the model's, else 0.01 s)",
                                             units="s", gt=0)  # fmt: skip

        def __post_init__(self) -> None:
            if self.pixel_um is not None and self.wavelength_um < 2 * self.pixel_um:
                raise ParameterError(
                    "wavelength_um", f"must be >= 2 pixels ({2 * self.pixel_um:g} um) to be resolved on the grid"
                )

    def on_grid(self, params: Any, grid: Grid | None) -> Any:
        """Render on the model's grid: unset values take the grid's, an explicit one must agree with it."""
        model = {}
        if grid is not None:
            model = {
                "height_px": grid.shape[0],
                "width_px": grid.shape[1],
                "pixel_um": grid.pixel_um,
                "frame_period_s": grid.frame_period_s,
                "pre_s": grid.history_s,
            }
        own = {"height_px": 50, "width_px": 50, "pixel_um": 55.0, "frame_period_s": 0.01, "pre_s": 0.4}
        values = {}
        for name, default in own.items():
            given, theirs = getattr(params, name), model.get(name)
            if given is not None and theirs is not None and name != "pre_s" and not math.isclose(given, theirs):
                raise ParameterError(name, f"got {given:g}, but the model's is {theirs:g}; leave it unset")
            values[name] = given if given is not None else (theirs if theirs is not None else default)
        return dataclasses.replace(params, **values)  # runs the checks again

    def render(self, params: Any, seed: int) -> xr.Dataset:
        n_pre = round(params.pre_s / params.frame_period_s)
        n = n_pre + round(params.duration_s / params.frame_period_s)
        time = time_coord(n, params.frame_period_s, -n_pre * params.frame_period_s)
        coords = grid_coords(params.height_px, params.width_px, params.pixel_um)
        t = np.clip(time.values, 0, None)[:, None, None]  # grey until time 0, then drifting
        x = coords["x"].values[None, None, :]
        phase = 2 * np.pi * (x - params.speed_um_s * t) / params.wavelength_um
        movie = params.contrast * np.sin(phase) * (time.values >= 0)[:, None, None]
        movie = np.broadcast_to(movie, (n, params.height_px, params.width_px)).astype(np.float32)
        stim = xr.DataArray(
            movie,
            dims=("time", "y", "x"),
            coords={"time": time, **coords},
            attrs={"units": "1", "long_name": "contrast"},
        )
        return xr.Dataset(
            {"stimulus": stim}, attrs={"frame_period_s": params.frame_period_s, "pre_s": n_pre * params.frame_period_s}
        )
