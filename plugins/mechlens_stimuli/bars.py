"""Bars: a bar drifting at constant speed, the same bar flashed at fixed positions, a bar that reverses.

Bars are vertical and span the full grid height; positions are the bar centre's x on the retina, um
(0 = the grid centre). Rendering is area-weighted (:func:`mechlens_stimuli._render.interval_coverage`):
each pixel shows ``intensity`` times the fraction of it the bar covers, so the movie's centre of
mass follows the bar with sub-pixel accuracy. Speeds are in um/s; at 55 um pixels and 10 ms frames
1 px/frame is 5500 um/s (:func:`speed_um_s` converts).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import xarray as xr

from mechlens.errors import ParameterError
from mechlens.interfaces import Grid
from mechlens.parameters import param
from mechlens_stimuli._render import (
    Bounds,
    LibraryStimulus,
    assemble,
    check_width,
    each,
    event,
    from_profile,
    grid_shape,
    interval_coverage,
    known_screen,
    n_frames,
    pixel_centres,
    pulse_train,
    screen_um,
    stimulus_parameters,
)

_INTENSITY: Bounds = {"min": -10.0, "max": 10.0}


def speed_um_s(px_per_frame: float, pixel_um: float = 55.0, frame_period_s: float = 0.01) -> float:
    """Convert a speed in pixels per frame (the authors' unit) to um/s.

    >>> speed_um_s(0.08)  # Berry et al. 1999, as in the authors' code
    440.0
    """
    return round(px_per_frame * pixel_um / frame_period_s, 9)


def bar_movie(params: Any, centre_um: np.ndarray, width_um: float, intensity: float) -> np.ndarray:
    """A full-height bar at ``centre_um`` (one per frame), area-weighted: (n_frames, height, width) float32."""
    centre = np.asarray(centre_um, dtype=float)
    cover = interval_coverage(centre - width_um / 2, centre + width_um / 2, pixel_centres(params), params.pixel_um)
    return from_profile(intensity * cover, grid_shape(params))


class MovingBar(LibraryStimulus):
    """A dark or bright bar drifting across the grid at constant speed (motion anticipation)."""

    name = "moving-bar"

    @stimulus_parameters
    class Parameters:
        speed: float | list[float] = param(
            440.0, "bar speed (440 um/s = 0.08 px/frame, Berry et al. 1999)", units="um/s", gt=0, sweepable=True
        )
        width_um: float = param(110.0, "bar width", units="um", gt=0)
        intensity: float = param(-1.0, "bar contrast (negative: dark)", **_INTENSITY)
        start_um: float = param(-1650.0, "left end of the path (bar centre)", units="um")
        stop_um: float = param(1650.0, "right end of the path (bar centre)", units="um")
        direction: str | list[str] = param(
            "right",
            "'right': start_um -> stop_um; 'left': the mirror image (-start_um -> -stop_um)",
            choices=("right", "left"),
            sweepable=True,
        )
        post_s: float = param(0.0, "time the bar rests at the end of its path", units="s", min=0)

        def __post_init__(self) -> None:
            check_width("width_um", self.width_um, self)
            if self.stop_um <= self.start_um:
                raise ParameterError(
                    "stop_um",
                    f"got {self.stop_um:g} um, not right of start_um ({self.start_um:g} um); the path runs "
                    f"left to right (use direction='left' for leftward motion); allowed range > {self.start_um:g} um",
                )

    def render(self, params: Any, seed: int) -> xr.Dataset:
        dt = params.frame_period_s
        n_pre, n_post = n_frames(params.pre_s, dt), n_frames(params.post_s, dt)
        travel_s = (params.stop_um - params.start_um) / params.speed
        n_move = int(np.floor(travel_s / dt + 1e-9)) + 1  # frames from t = 0 up to the arrival
        t = (np.arange(n_pre + n_move + n_post) - n_pre) * dt
        # at rest at the start during the history, at the end after the arrival
        centre = params.start_um + params.speed * np.clip(t, 0.0, travel_s)
        sign = 1.0 if params.direction == "right" else -1.0
        centre = sign * centre
        return assemble(
            params,
            bar_movie(params, centre, params.width_um, params.intensity),
            n_pre,
            events={
                "bar_center": event(centre, "um", "bar centre (x)", dims=("time",)),
                "velocity": event(sign * params.speed, "um/s", "bar velocity (positive: rightward)"),
            },
            description=(
                f"bar {params.width_um:g} um wide, contrast {params.intensity:g}, moving {params.direction} "
                f"at {params.speed:g} um/s"
            ),
            reference="Berry, Brivanlou, Jordan & Meister 1999, Nature 398:334; Tanaka et al. 2019",
            width_um=float(params.width_um),
            intensity=float(params.intensity),
            arrival_s=float(travel_s),
        )


def default_positions(params: Any) -> list[float]:
    """Bar centres one bar width apart from the grid centre, each on the grid (|x| <= half its width), um.

    On the default 50 px grid of 55 um with a 110 um bar: the 25 positions -1320 .. 1320 um.
    """
    half = screen_um(params) / 2
    k = int(np.floor(half / params.width_um + 1e-9))
    return [float(x) for x in np.arange(-k, k + 1) * params.width_um]


class FlashedBar(LibraryStimulus):
    """The moving bar's control: the same bar flashed briefly at one position per condition."""

    name = "flashed-bar"

    @stimulus_parameters
    class Parameters:
        position: float | list[float] | None = param(
            None,
            "bar centre (x); a list flashes it at each position (one condition each); default: every "
            "position one bar width apart, from the grid centre, whose bar centre lies on the grid",
            units="um",
            sweepable=True,
        )
        width_um: float = param(110.0, "bar width", units="um", gt=0)
        intensity: float = param(-1.0, "bar contrast (negative: dark)", **_INTENSITY)
        duration: float = param(0.02, "flash duration (Berry et al.: 15 ms)", units="s", gt=0)
        post_s: float = param(0.3, "grey after the flash ends", units="s", min=0)

        def __post_init__(self) -> None:
            check_width("width_um", self.width_um, self)
            if self.position is None or known_screen(self) is None:
                return
            reach = screen_um(self) / 2 + self.width_um / 2
            for p in each(self.position):
                if abs(p) >= reach:
                    raise ParameterError(
                        "position",
                        f"got {p:g} um: the bar would be entirely off the grid; allowed range "
                        f"(-{reach:g}, {reach:g}) um",
                    )

    def on_grid(self, params: Any, grid: Grid | None) -> Any:
        params = super().on_grid(params, grid)
        if params.position is None:
            params = dataclasses.replace(params, position=default_positions(params))
        return params

    def render(self, params: Any, seed: int) -> xr.Dataset:
        dt = params.frame_period_s
        n_pre, n_on, n_post = (n_frames(s, dt) for s in (params.pre_s, params.duration, params.post_s))
        n = n_pre + n_on + n_post
        on = pulse_train(n, np.array([n_pre]), n_on, 1.0)
        bar = bar_movie(params, np.full(1, params.position), params.width_um, params.intensity)
        return assemble(
            params,
            on[:, None, None] * bar,
            n_pre,
            events={
                "bar_center": event(params.position, "um", "bar centre (x)"),
                "flash_onset": event(0.0, "s", "flash onset"),
            },
            description=(
                f"bar {params.width_um:g} um wide, contrast {params.intensity:g}, flashed for "
                f"{params.duration:g} s at x = {params.position:g} um"
            ),
            reference="Berry, Brivanlou, Jordan & Meister 1999, Nature 398:334 (flashed-bar control)",
            width_um=float(params.width_um),
            intensity=float(params.intensity),
        )


class MotionReversal(LibraryStimulus):
    """A bar that drifts rightward, reverses at a set position and drifts back (motion reversal)."""

    name = "motion-reversal"

    @stimulus_parameters
    class Parameters:
        reversal_um: float | list[float] = param(0.0, "where the bar centre reverses", units="um", sweepable=True)
        speed: float = param(1045.0, "bar speed (1045 um/s = 0.19 px/frame)", units="um/s", gt=0)
        width_um: float = param(110.0, "bar width", units="um", gt=0)
        intensity: float = param(-1.0, "bar contrast (negative: dark)", **_INTENSITY)
        start_um: float = param(-2200.0, "where the bar starts and returns to (-40 px, off the grid)", units="um")

        def __post_init__(self) -> None:
            check_width("width_um", self.width_um, self)
            for r in each(self.reversal_um):
                if r <= self.start_um:
                    raise ParameterError(
                        "reversal_um",
                        f"got {r:g} um, not right of start_um ({self.start_um:g} um); the bar moves right "
                        f"first; allowed range > {self.start_um:g} um",
                    )

    def render(self, params: Any, seed: int) -> xr.Dataset:
        dt = params.frame_period_s
        n_pre = n_frames(params.pre_s, dt)
        half_s = (params.reversal_um - params.start_um) / params.speed
        n_move = int(np.floor(2 * half_s / dt + 1e-9)) + 1
        t = (np.arange(n_pre + n_move) - n_pre) * dt
        centre = params.reversal_um - params.speed * np.abs(np.clip(t, 0.0, None) - half_s)
        return assemble(
            params,
            bar_movie(params, centre, params.width_um, params.intensity),
            n_pre,
            events={
                "bar_center": event(centre, "um", "bar centre (x)", dims=("time",)),
                "reversal_time": event(half_s, "s", "time of the reversal"),
                "reversal_position": event(params.reversal_um, "um", "bar centre at the reversal"),
            },
            description=(
                f"bar {params.width_um:g} um wide, contrast {params.intensity:g}, moving right at "
                f"{params.speed:g} um/s from {params.start_um:g} um, reversing at {params.reversal_um:g} um"
            ),
            reference="Schwartz, Taylor, Fisher, Harris & Berry 2007, Neuron 55:958; Tanaka et al. 2019",
            width_um=float(params.width_um),
            intensity=float(params.intensity),
            speed_um_s=float(params.speed),
        )
