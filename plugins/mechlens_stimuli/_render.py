"""Shared pieces of the stimulus library.

- :func:`stimulus_parameters`: the decorator that turns a class body into a frozen Parameters
  dataclass and appends the parameters every stimulus has (history, grid, frame period), with the
  checks they share (every duration a whole number of frames).
- Whole-frame timing (:func:`n_frames`), sweep-aware cross-field checks (:func:`each`).
- Area-weighted renderers: a bar (:func:`interval_coverage`), a square-wave grating
  (:func:`square_wave`), a disk (:func:`disk_coverage`). A pixel takes the mean of the pattern over
  its square, so a bar moving by a fraction of a pixel moves its centre of mass by exactly that
  fraction (no staircase motion, no aliasing).
- Movie builders (:func:`fullfield`, :func:`from_profile`) and the Dataset assembly
  (:func:`assemble`) with the coords, units and attrs of docs/contract.md, 'Datasets'.
- Seeds derived from ``(seed, chunk index)`` (:func:`chunk_rng`) so long movies can be made piecewise.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any, TypedDict

import numpy as np
import xarray as xr

from mechlens.errors import ParameterError
from mechlens.parameters import param
from mechlens.schema import grid_coords, time_coord

#: relative tolerance when checking that a duration is a whole number of frames
_FRAME_TOL = 1e-6

#: the parameters every stimulus has, appended after its own (name -> (type, field factory))
_COMMON: dict[str, tuple[str, Callable[[], Any]]] = {
    "pre_s": (
        "float",
        lambda: param(0.4, "history before time 0 (grey, or the stimulus's own background)", units="s", min=0),
    ),
    "size_px": ("int", lambda: param(50, "pixels per side of the square grid", min=1, max=2048)),
    "pixel_um": ("float", lambda: param(55.0, "pixel size on the retina", units="um", gt=0)),
    "frame_period_s": ("float", lambda: param(0.01, "seconds per frame", units="s", gt=0)),
}

#: names of the common parameters (the docs list them once, not per stimulus)
COMMON_PARAMETERS: tuple[str, ...] = tuple(_COMMON)


class Bounds(TypedDict, total=False):
    """A documented range shared by several parameters, passed on as ``param(..., **bounds)``."""

    min: float
    max: float


def each(value: Any) -> list[Any]:
    """The values of a possibly swept parameter: a list as is, a scalar as a one-element list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _check_whole_frames(params: Any) -> None:
    """Every parameter in seconds (but the frame period) must be a whole number of frames."""
    dt = params.frame_period_s
    for f in dataclasses.fields(params):
        meta = f.metadata.get("mechlens", {})
        if meta.get("units") != "s" or f.name == "frame_period_s":
            continue
        for v in each(getattr(params, f.name)):
            frames = v / dt
            if abs(frames - round(frames)) > _FRAME_TOL * max(1.0, abs(frames)):
                lo, hi = math.floor(frames) * dt, math.ceil(frames) * dt
                raise ParameterError(
                    f.name,
                    f"got {v:g} s, which is not a whole number of frames of {dt:g} s; "
                    f"use a multiple of frame_period_s (e.g. {lo:g} or {hi:g} s)",
                )


def stimulus_parameters(cls: type) -> type:
    """Class decorator: a frozen Parameters dataclass with the common parameters appended.

    The class body declares the stimulus's own fields with :func:`mechlens.parameters.param`; this
    adds ``pre_s``, ``size_px``, ``pixel_um`` and ``frame_period_s`` after them, and runs the shared
    checks (durations in whole frames) before the class's own ``__post_init__``.

    Parameters
    ----------
    cls : type
        The undecorated Parameters class.

    Returns
    -------
    type
        ``dataclass(frozen=True)(cls)``.
    """
    annotations = dict(inspect.get_annotations(cls))
    for name, (tp, make) in _COMMON.items():
        annotations[name] = tp
        setattr(cls, name, make())
    cls.__annotations__ = annotations
    own = cls.__dict__.get("__post_init__")

    def __post_init__(self: Any) -> None:
        _check_whole_frames(self)
        if own is not None:
            own(self)

    cls.__post_init__ = __post_init__  # type: ignore[attr-defined]
    return dataclasses.dataclass(frozen=True)(cls)


def n_frames(seconds: float, frame_period_s: float) -> int:
    """Number of frames in ``seconds`` (the parameters are checked to be whole frames)."""
    return round(seconds / frame_period_s)


def screen_um(params: Any) -> float:
    """Width of the grid on the retina, um."""
    return params.size_px * params.pixel_um


def check_width(name: str, width_um: float, params: Any) -> None:
    """Reject a bar (or grating bar) wider than the screen."""
    for w in each(width_um):
        if w > screen_um(params):
            raise ParameterError(
                name,
                f"got {w:g} um, wider than the screen ({params.size_px} px x {params.pixel_um:g} um = "
                f"{screen_um(params):g} um); allowed range (0, {screen_um(params):g}] um",
            )


def pixel_centres(params: Any) -> np.ndarray:
    """Pixel centres along one axis, um, centred on the grid (as :func:`mechlens.schema.grid_coords`)."""
    return (np.arange(params.size_px) - (params.size_px - 1) / 2) * params.pixel_um


def interval_coverage(lo: np.ndarray, hi: np.ndarray, centres: np.ndarray, pixel_um: float) -> np.ndarray:
    """Fraction of each pixel covered by the interval ``[lo, hi]``, for every frame.

    Parameters
    ----------
    lo, hi : numpy.ndarray
        (n_frames,) interval ends, um.
    centres : numpy.ndarray
        (n_px,) pixel centres, um.
    pixel_um : float
        Pixel width, um.

    Returns
    -------
    numpy.ndarray
        (n_frames, n_px) in [0, 1]; its centre of mass is the interval's centre whenever the
        interval lies on the grid.
    """
    left = centres - pixel_um / 2
    right = centres + pixel_um / 2
    overlap = np.minimum(np.asarray(hi)[:, None], right) - np.maximum(np.asarray(lo)[:, None], left)
    return np.clip(overlap, 0.0, None) / pixel_um


def _triangle(u: np.ndarray, bar_um: float) -> np.ndarray:
    """Antiderivative of the +-1 square wave with bars of ``bar_um`` (+1 on [0, bar), -1 on [bar, 2 bar))."""
    r = np.mod(u, 2 * bar_um)
    return bar_um - np.abs(r - bar_um)


def square_wave(centres: np.ndarray, pixel_um: float, bar_um: float, shift_um: np.ndarray) -> np.ndarray:
    """Pixel-averaged square-wave grating (values in [-1, 1]) displaced by ``shift_um`` per frame.

    The grating is +1 on ``[shift, shift + bar)``, -1 on the next bar, and so on. Each pixel takes
    the exact mean over its width (the difference of the triangle-wave antiderivative), so a
    displacement by a fraction of a pixel is rendered faithfully.

    Parameters
    ----------
    centres : numpy.ndarray
        (n_px,) pixel centres, um.
    pixel_um : float
        Pixel width, um.
    bar_um : float
        Width of one bar (half the spatial period), um.
    shift_um : numpy.ndarray
        (n_frames,) displacement of the grating, um (positive: rightward).

    Returns
    -------
    numpy.ndarray
        (n_frames, n_px).
    """
    u = centres[None, :] - np.asarray(shift_um, dtype=float)[:, None]
    return (_triangle(u + pixel_um / 2, bar_um) - _triangle(u - pixel_um / 2, bar_um)) / pixel_um


def disk_coverage(params: Any, centre_um: tuple[float, float], radius_um: float, oversample: int = 8) -> np.ndarray:
    """Fraction of each pixel inside a disk (supersampled ``oversample`` x ``oversample`` per pixel).

    Returns
    -------
    numpy.ndarray
        (size_px, size_px) in [0, 1], rows = y, columns = x.
    """
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    fine = (pixel_centres(params)[:, None] + sub[None, :] * params.pixel_um).ravel()
    inside = ((fine[:, None] - centre_um[0]) ** 2 + (fine[None, :] - centre_um[1]) ** 2) <= radius_um**2
    n = params.size_px
    return inside.reshape(n, oversample, n, oversample).mean(axis=(1, 3))


def fullfield(envelope: np.ndarray, size_px: int) -> np.ndarray:
    """A spatially uniform movie, (n_frames, size, size) float32, from its time course."""
    env = np.asarray(envelope, dtype=np.float32)
    return np.repeat(env[:, None, None], size_px, axis=1).repeat(size_px, axis=2)


def from_profile(profile: np.ndarray, size_px: int) -> np.ndarray:
    """A movie of vertical bars, (n_frames, size, size) float32, from its (n_frames, x) profile."""
    prof = np.asarray(profile, dtype=np.float32)
    return np.repeat(prof[:, None, :], size_px, axis=1)


def pulse_train(n_total: int, onsets: np.ndarray, n_on: int, intensity: float) -> np.ndarray:
    """A time course of ``n_total`` frames: ``intensity`` during ``n_on`` frames from each onset index, else 0."""
    env = np.zeros(n_total, dtype=np.float32)
    idx = (np.asarray(onsets, dtype=int)[:, None] + np.arange(n_on)[None, :]).ravel()
    env[idx[(idx >= 0) & (idx < n_total)]] = intensity
    return env


def zigzag(k: int) -> int:
    """Map any integer to a distinct non-negative one (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...), for seeding."""
    return 2 * k if k >= 0 else -2 * k - 1


def chunk_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """A generator seeded by ``(seed, stream, index)``: each chunk (or image) of a long movie gets its own.

    Parameters
    ----------
    seed : int
        The user's seed.
    stream : int
        Which random quantity (so two stimuli sharing a seed can differ where they should).
    index : int
        Chunk or image index; negative for the history before time 0.
    """
    return np.random.default_rng(np.random.SeedSequence([zigzag(int(seed)), int(stream), zigzag(int(index))]))


Event = tuple[tuple[str, ...], Any, dict[str, Any]]


def event(value: Any, units: str, long_name: str, dims: tuple[str, ...] = ()) -> Event:
    """An event variable for :func:`assemble`: ``(dims, values, attrs)``."""
    return (dims, np.asarray(value), {"units": units, "long_name": long_name})


def assemble(
    params: Any,
    movie: np.ndarray,
    n_pre: int,
    *,
    events: Mapping[str, Event] | None = None,
    coords: Mapping[str, Any] | None = None,
    description: str,
    reference: str = "",
    first_frame: int | None = None,
    **attrs: Any,
) -> xr.Dataset:
    """The stimulus Dataset: ``stimulus`` (time, y, x) float32 plus event variables and attrs.

    Parameters
    ----------
    params
        The (scalar) Parameters instance; ``pre_s``, ``size_px``, ``pixel_um``, ``frame_period_s``
        are read from it.
    movie : numpy.ndarray
        (n_frames, size_px, size_px) z-scored contrast.
    n_pre : int
        Frames of history (the movie's first frame is at ``-n_pre * frame_period_s``).
    events : mapping, optional
        Event variables, name -> ``(dims, values, attrs)`` (see :func:`event`).
    coords : mapping, optional
        Extra coords (e.g. for an event dim).
    description, reference : str
        What the stimulus is, and where it comes from in the literature.
    first_frame : int, optional
        Index (from time 0) of the movie's first frame when it is a chunk of a longer movie
        (default ``-n_pre``).
    **attrs
        More netCDF-safe attrs describing the stimulus.
    """
    dt = params.frame_period_s
    start = -n_pre if first_frame is None else first_frame
    c: dict[str, Any] = {"time": time_coord(movie.shape[0], dt, start * dt)}
    c.update(grid_coords(params.size_px, params.size_px, params.pixel_um))
    c.update(coords or {})
    stim = xr.DataArray(
        np.ascontiguousarray(movie, dtype=np.float32),
        dims=("time", "y", "x"),
        coords={k: c[k] for k in ("time", "y", "x")},
        attrs={"units": "1", "long_name": "contrast (z-scored; 0 = mean grey, negative = dark)"},
    )
    data_vars: dict[str, Any] = {"stimulus": stim}
    data_vars.update(events or {})
    ds = xr.Dataset(data_vars, coords={k: v for k, v in c.items() if k not in ("time", "y", "x")})
    ds.attrs.update(
        {
            "frame_period_s": float(dt),
            "pre_s": float(round(n_pre * dt, 9)),
            "pixel_um": float(params.pixel_um),
            "description": description,
            "reference": reference,
        }
    )
    ds.attrs.update(attrs)
    return ds
