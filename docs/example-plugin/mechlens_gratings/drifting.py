"""A full-field sinusoidal grating drifting at constant speed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from mechlens.errors import ParameterError
from mechlens.interfaces import Stimulus
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
        pre_s: float = param(0.4, "grey history before time 0", units="s", min=0)
        size_px: int = param(50, "pixels per side", min=2)
        pixel_um: float = param(55.0, "pixel size on the retina", units="um", gt=0)
        frame_period_s: float = param(0.01, "seconds per frame", units="s", gt=0)

        def __post_init__(self) -> None:
            if self.wavelength_um < 2 * self.pixel_um:
                raise ParameterError(
                    "wavelength_um", f"must be >= 2 pixels ({2 * self.pixel_um:g} um) to be resolved on the grid"
                )

    def render(self, params: Any, seed: int) -> xr.Dataset:
        n_pre = round(params.pre_s / params.frame_period_s)
        n = n_pre + round(params.duration_s / params.frame_period_s)
        time = time_coord(n, params.frame_period_s, -n_pre * params.frame_period_s)
        coords = grid_coords(params.size_px, params.size_px, params.pixel_um)
        t = np.clip(time.values, 0, None)[:, None, None]  # grey until time 0, then drifting
        x = coords["x"].values[None, None, :]
        phase = 2 * np.pi * (x - params.speed_um_s * t) / params.wavelength_um
        movie = params.contrast * np.sin(phase) * (time.values >= 0)[:, None, None]
        movie = np.broadcast_to(movie, (n, params.size_px, params.size_px)).astype(np.float32)
        stim = xr.DataArray(
            movie,
            dims=("time", "y", "x"),
            coords={"time": time, **coords},
            attrs={"units": "1", "long_name": "contrast"},
        )
        return xr.Dataset(
            {"stimulus": stim}, attrs={"frame_period_s": params.frame_period_s, "pre_s": n_pre * params.frame_period_s}
        )
