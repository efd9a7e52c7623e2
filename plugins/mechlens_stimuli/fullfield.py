"""Full-field stimuli: a step or flash, a flash train with an omitted flash, a pair of flashes.

Every movie is spatially uniform (each frame one value on the whole grid), grey (0) during the
``pre_s`` history, and the events start at time 0. Durations are whole frames (checked).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from mechlens.errors import ParameterError
from mechlens.parameters import param
from mechlens_stimuli._render import (
    Bounds,
    LibraryStimulus,
    assemble,
    each,
    event,
    fullfield,
    grid_shape,
    n_frames,
    pulse_train,
    stimulus_parameters,
)

#: declared range of intensities, z-scored contrast (a model trained on z-scored movies saw |x| < ~5)
_INTENSITY: Bounds = {"min": -10.0, "max": 10.0}


class Flash(LibraryStimulus):
    """Full-field step or flash to a contrast (latency coding: sweep the intensity)."""

    name = "flash"

    @stimulus_parameters
    class Parameters:
        intensity: float | list[float] = param(
            -1.5, "contrast during the flash (negative: dark)", sweepable=True, **_INTENSITY
        )
        duration: float = param(0.4, "flash (step) duration, from time 0", units="s", gt=0)
        post_s: float = param(0.0, "grey after the flash ends", units="s", min=0)

    def render(self, params: Any, seed: int) -> xr.Dataset:
        dt = params.frame_period_s
        n_pre, n_on, n_post = (n_frames(s, dt) for s in (params.pre_s, params.duration, params.post_s))
        env = pulse_train(n_pre + n_on + n_post, np.array([n_pre]), n_on, params.intensity)
        return assemble(
            params,
            fullfield(env, grid_shape(params)),
            n_pre,
            events={
                "flash_onset": event(0.0, "s", "flash onset"),
                "flash_offset": event(n_on * dt, "s", "flash offset (end of the step)"),
            },
            description=f"full-field flash of contrast {params.intensity:g} for {params.duration:g} s",
            reference="Gollisch & Meister 2008, Science 319:1108 (latency coding); Tanaka et al. 2019",
            intensity=float(params.intensity),
        )


class OmittedStimulus(LibraryStimulus):
    """Periodic train of brief dark full-field flashes, then one omitted (the omitted stimulus response)."""

    name = "osr"

    @stimulus_parameters
    class Parameters:
        period: float | list[float] = param(0.1, "onset-to-onset flash period", units="s", gt=0, sweepable=True)
        duration: float = param(0.02, "duration of each flash", units="s", gt=0)
        intensity: float = param(-2.0, "flash contrast (negative: dark)", **_INTENSITY)
        n_flashes: int = param(9, "flashes before the omitted one", min=1, max=10000)
        post_s: float = param(0.4, "grey recorded after the omitted flash's expected onset", units="s", min=0)

        def __post_init__(self) -> None:
            for p in each(self.period):
                if p <= self.duration:
                    raise ParameterError(
                        "period",
                        f"got {p:g} s, not longer than the flash duration ({self.duration:g} s); "
                        f"allowed range > {self.duration:g} s (or shorten duration)",
                    )

    def render(self, params: Any, seed: int) -> xr.Dataset:
        dt = params.frame_period_s
        n_pre, n_on, n_post = (n_frames(s, dt) for s in (params.pre_s, params.duration, params.post_s))
        step = n_frames(params.period, dt)
        onsets = np.arange(params.n_flashes) * step
        omitted = params.n_flashes * step
        # keep the omitted flash's frame even with post_s = 0, so omitted_time lies inside the movie
        n_total = n_pre + omitted + max(n_post, 1)
        env = pulse_train(n_total, n_pre + onsets, n_on, params.intensity)
        return assemble(
            params,
            fullfield(env, grid_shape(params)),
            n_pre,
            events={
                "flash_onset": event(onsets * dt, "s", "flash onsets", dims=("flash",)),
                "omitted_time": event(omitted * dt, "s", "expected onset of the omitted flash"),
                "period": event(step * dt, "s", "flash period"),
            },
            coords={"flash": ("flash", np.arange(params.n_flashes), {"long_name": "flash index"})},
            description=(
                f"{params.n_flashes} full-field flashes of {params.intensity:g} for {params.duration:g} s "
                f"every {params.period:g} s, then the next one omitted"
            ),
            reference="Schwartz, Taylor, Fisher, Harris & Berry 2007, Nat. Neurosci. 10:552; Tanaka et al. 2019",
            flash_duration_s=float(n_on * dt),
            intensity=float(params.intensity),
        )


class PairedFlash(LibraryStimulus):
    """Two brief full-field flashes separated by a grey gap (paired-flash depression / recovery)."""

    name = "paired-flash"

    @stimulus_parameters
    class Parameters:
        interval: float | list[float] = param(
            0.05, "grey gap between the first flash's end and the second's onset", units="s", gt=0, sweepable=True
        )
        duration: float = param(0.01, "duration of each flash", units="s", gt=0)
        intensity: float = param(-2.0, "flash contrast (negative: dark)", **_INTENSITY)
        post_s: float = param(0.5, "grey after the second flash ends", units="s", min=0)

    def render(self, params: Any, seed: int) -> xr.Dataset:
        dt = params.frame_period_s
        n_pre, n_on, n_gap, n_post = (
            n_frames(s, dt) for s in (params.pre_s, params.duration, params.interval, params.post_s)
        )
        onsets = np.array([0, n_on + n_gap])
        env = pulse_train(n_pre + 2 * n_on + n_gap + n_post, n_pre + onsets, n_on, params.intensity)
        return assemble(
            params,
            fullfield(env, grid_shape(params)),
            n_pre,
            events={"flash_onset": event(onsets * dt, "s", "flash onsets", dims=("flash",))},
            coords={"flash": ("flash", np.arange(2), {"long_name": "flash index"})},
            description=(
                f"two full-field flashes of {params.intensity:g} for {params.duration:g} s, "
                f"{params.interval:g} s apart (gap)"
            ),
            reference="torchdeepretina retinal_phenomena.paired_flash (ifi 2-20 frames, 1 frame, -2)",
            flash_duration_s=float(n_on * dt),
            intensity=float(params.intensity),
        )
