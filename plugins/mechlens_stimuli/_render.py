"""Shared pieces of the stimulus library.

- :func:`stimulus_parameters`: the decorator that turns a class body into a frozen Parameters
  dataclass and appends the parameters every stimulus has (history, grid, frame period), with the
  checks they share (every duration a whole number of frames).
- :class:`LibraryStimulus` / :func:`fit_grid`: the library's stimuli render on a model's grid
  (:class:`mechlens.interfaces.Grid`) by default, and refuse an explicit value that contradicts it.
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
from mechlens.interfaces import Grid, Stimulus
from mechlens.parameters import param
from mechlens.schema import grid_coords, time_coord

#: relative tolerance when checking that a duration is a whole number of frames
_FRAME_TOL = 1e-6

#: what a common parameter left unset (None) is when no model's grid is given
DEFAULTS: dict[str, Any] = {"pre_s": 0.4, "size_px": 50, "pixel_um": 55.0, "frame_period_s": 0.01}

#: the parameters every stimulus has, appended after its own (name -> (type, field factory)); None
#: (the default) takes the model's grid (:meth:`LibraryStimulus.on_grid`), else :data:`DEFAULTS`
_COMMON: dict[str, tuple[str, Callable[[], Any]]] = {
    "pre_s": (
        "float | None",
        lambda: param(
            None,
            "history before time 0 (grey, or the stimulus's own background); default: the model's history "
            "(history x frame period), else 0.4 s",
            units="s",
            min=0,
        ),
    ),
    "size_px": (
        "int | None",
        lambda: param(None, "pixels per side of a square grid; default: the model's grid, else 50", min=1, max=2048),
    ),
    "height_px": (
        "int | None",
        lambda: param(
            None, "grid height (y) in pixels, for a grid that is not square; default: size_px", min=1, max=2048
        ),
    ),
    "width_px": (
        "int | None",
        lambda: param(
            None, "grid width (x) in pixels, for a grid that is not square; default: size_px", min=1, max=2048
        ),
    ),
    "pixel_um": (
        "float | None",
        lambda: param(None, "pixel size on the retina; default: the model's, else 55 um", units="um", gt=0),
    ),
    "frame_period_s": (
        "float | None",
        lambda: param(None, "seconds per frame; default: the model's, else 0.01 s", units="s", gt=0),
    ),
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
    """Every parameter in seconds (but the frame period) must be a whole number of frames (once it is known)."""
    dt = params.frame_period_s
    if dt is None:  # left to the model's grid: checked when the stimulus is fitted to it
        return
    for f in dataclasses.fields(params):
        meta = f.metadata.get("mechlens", {})
        if meta.get("units") != "s" or f.name == "frame_period_s":
            continue
        for v in each(getattr(params, f.name)):
            if v is None or _at_default(f, v):  # a default is rounded to the frame period (fit_grid)
                continue
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
    adds ``pre_s``, ``size_px``, ``height_px``, ``width_px``, ``pixel_um`` and ``frame_period_s``
    after them (all None by default: the model's grid, see :meth:`LibraryStimulus.on_grid`), and runs
    the shared checks (durations in whole frames, a consistent grid) before the class's own
    ``__post_init__``. The class's own checks see None for a grid value not yet known and skip what
    needs it; they run again when the stimulus is fitted to a grid.

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
        _check_square(self)
        if own is not None:
            own(self)

    cls.__post_init__ = __post_init__  # type: ignore[attr-defined]
    return dataclasses.dataclass(frozen=True)(cls)


def _check_square(params: Any) -> None:
    """``size_px`` is the square shorthand: it must agree with ``height_px`` / ``width_px`` where both are given."""
    if params.size_px is None:
        return
    for name in ("height_px", "width_px"):
        v = getattr(params, name)
        if v is not None and v != params.size_px:
            raise ParameterError(
                name,
                f"got {v} px, but size_px = {params.size_px} px (a square grid); give size_px for a square grid, "
                "or height_px and width_px without size_px",
            )


def grid_shape(params: Any) -> tuple[int, int]:
    """(height, width) of the grid in pixels (``height_px`` / ``width_px``, else ``size_px``)."""
    h = getattr(params, "height_px", None) or params.size_px
    w = getattr(params, "width_px", None) or params.size_px
    return int(h), int(w)


def known_shape(params: Any) -> tuple[int, int] | None:
    """The grid shape when the parameters fix it, else None (left to the model's grid)."""
    h = getattr(params, "height_px", None) or params.size_px
    w = getattr(params, "width_px", None) or params.size_px
    return None if h is None or w is None else (int(h), int(w))


def fit_grid(params: Any, grid: Grid | None) -> Any:
    """The parameters of a built-in stimulus on a model's grid: unset grid values filled in, conflicts refused.

    A common parameter left None takes the grid's value (the shape, pixel size, frame period, and
    ``history * frame_period_s`` before time 0), else its :data:`DEFAULTS` value. An explicit value
    that contradicts the grid raises :class:`~mechlens.errors.ParameterError` naming the parameter and
    the model's value; so does a ``pre_s`` too short for the model to answer at time 0. A duration
    left at its declared default is rounded to whole frames of the frame period (at least one frame
    where it must be > 0); a duration the user gave must be whole frames.

    Parameters
    ----------
    params
        A Parameters instance made by :func:`stimulus_parameters`.
    grid : Grid or None
        The model's grid, or None.

    Returns
    -------
    The Parameters with every common parameter set (``size_px`` None when the grid is not square).
    """
    h_given = params.height_px or params.size_px
    w_given = params.width_px or params.size_px
    if grid is not None:
        model = f"the model's grid ({grid.describe()})"
        dt_model = grid.frame_period_s
        if params.frame_period_s is not None and not math.isclose(params.frame_period_s, dt_model, rel_tol=1e-6):
            raise ParameterError(
                "frame_period_s",
                f"got {params.frame_period_s:g} s, but the model's frames are {dt_model:g} s ({model}); leave "
                "frame_period_s unset to follow the model",
            )
        if (
            params.pixel_um is not None
            and grid.pixel_um is not None
            and not math.isclose(params.pixel_um, grid.pixel_um, rel_tol=1e-6)
        ):
            raise ParameterError(
                "pixel_um",
                f"got {params.pixel_um:g} um, but the model's pixels are {grid.pixel_um:g} um ({model}); leave "
                "pixel_um unset to follow the model",
            )
        for axis, given, name, n in (
            ("height (y)", h_given, "height_px" if params.height_px else "size_px", grid.shape[0]),
            ("width (x)", w_given, "width_px" if params.width_px else "size_px", grid.shape[1]),
        ):
            if given is not None and given != n:
                raise ParameterError(
                    name,
                    f"got {given} px, but the model's grid is {n} px in {axis} ({model}); leave size_px, height_px "
                    "and width_px unset to follow the model",
                )
        dt = dt_model
        if params.pre_s is not None and params.pre_s < (grid.history - 1) * dt * (1 - 1e-9) - 1e-12:
            raise ParameterError(
                "pre_s",
                f"got {params.pre_s:g} s, too short for the model's history of {grid.history} frames: it answers "
                f"only once {grid.history - 1} frames ({(grid.history - 1) * dt:g} s) precede a time, so events at "
                f"time 0 would be lost; give pre_s >= {(grid.history - 1) * dt:g} s or leave it unset "
                f"({grid.history_s:g} s)",
            )
        shape = grid.shape
        pixel = params.pixel_um or grid.pixel_um or DEFAULTS["pixel_um"]
        pre = params.pre_s if params.pre_s is not None else grid.history_s
    else:
        dt = params.frame_period_s or DEFAULTS["frame_period_s"]
        shape = (h_given or DEFAULTS["size_px"], w_given or DEFAULTS["size_px"])
        pixel = params.pixel_um or DEFAULTS["pixel_um"]
        pre = params.pre_s if params.pre_s is not None else DEFAULTS["pre_s"]
    changes: dict[str, Any] = {
        "frame_period_s": float(dt),
        "pixel_um": float(pixel),
        "height_px": int(shape[0]),
        "width_px": int(shape[1]),
        "size_px": int(shape[0]) if shape[0] == shape[1] else None,
        "pre_s": float(pre),
    }
    changes.update(_rounded_defaults(params, dt))
    return dataclasses.replace(params, **changes)


def _at_default(f: dataclasses.Field[Any], value: Any) -> bool:
    """Whether a duration is its field's declared default (a float, which :func:`fit_grid` rounds to whole frames)."""
    return isinstance(value, float) and f.default is not dataclasses.MISSING and value == f.default


def _rounded_defaults(params: Any, dt: float) -> dict[str, float]:
    """Durations (units s) still at their declared default, rounded to whole frames of ``dt``."""
    out: dict[str, float] = {}
    for f in dataclasses.fields(params):
        meta = f.metadata.get("mechlens", {})
        if meta.get("units") != "s" or f.name in ("frame_period_s", "pre_s"):
            continue
        value = getattr(params, f.name)
        if not _at_default(f, value):
            continue
        n = round(value / dt)
        if n == 0 and value > 0:
            n = 1
        out[f.name] = round(n * dt, 12)
    return out


class LibraryStimulus(Stimulus):
    """A stimulus of the built-in library: fits a model's grid (:func:`fit_grid`); base class, not registered."""

    def on_grid(self, params: Any, grid: Grid | None) -> Any:
        return fit_grid(params, grid)

    def memory_estimate(self, params: Any) -> Any:
        """The movie's bytes, for :func:`mechlens.memory.check_stimulus` (see :mod:`mechlens_stimuli._memory`)."""
        from mechlens_stimuli._memory import estimate

        return estimate(self, params, grid_shape(params) if params.frame_period_s is not None else (0, 0))


def n_frames(seconds: float, frame_period_s: float) -> int:
    """Number of frames in ``seconds`` (the parameters are checked to be whole frames)."""
    return round(seconds / frame_period_s)


def screen_um(params: Any) -> float:
    """Width (x) of the grid on the retina, um (the parameters must fix the grid: see :func:`known_screen`)."""
    return grid_shape(params)[1] * params.pixel_um


def known_screen(params: Any) -> tuple[int, int] | None:
    """The grid shape when the parameters fix it and the pixel size, else None (left to the model's grid)."""
    return None if getattr(params, "pixel_um", None) is None else known_shape(params)


def check_width(name: str, width_um: float, params: Any) -> None:
    """Reject a bar (or grating bar) wider than the screen (once the grid is known)."""
    shape = known_screen(params)
    if shape is None:
        return
    for w in each(width_um):
        if w > screen_um(params):
            raise ParameterError(
                name,
                f"got {w:g} um, wider than the screen ({shape[1]} px x {params.pixel_um:g} um = "
                f"{screen_um(params):g} um); allowed range (0, {screen_um(params):g}] um",
            )


def pixel_centres(params: Any, axis: str = "x") -> np.ndarray:
    """Pixel centres along ``axis`` (``"x"`` or ``"y"``), um, centred on the grid (as ``schema.grid_coords``)."""
    n = grid_shape(params)[0 if axis == "y" else 1]
    return (np.arange(n) - (n - 1) / 2) * params.pixel_um


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
        (height, width) in [0, 1], rows = y, columns = x.
    """
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    fine_y = (pixel_centres(params, "y")[:, None] + sub[None, :] * params.pixel_um).ravel()
    fine_x = (pixel_centres(params, "x")[:, None] + sub[None, :] * params.pixel_um).ravel()
    inside = ((fine_y[:, None] - centre_um[0]) ** 2 + (fine_x[None, :] - centre_um[1]) ** 2) <= radius_um**2
    ny, nx = grid_shape(params)
    return inside.reshape(ny, oversample, nx, oversample).mean(axis=(1, 3))


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))


def fullfield(envelope: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """A spatially uniform movie, (n_frames, height, width) float32, from its time course (``size``: side or (h, w))."""
    env = np.asarray(envelope, dtype=np.float32)
    ny, nx = _hw(size)
    return np.repeat(env[:, None, None], ny, axis=1).repeat(nx, axis=2)


def from_profile(profile: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """A movie of vertical bars, (n_frames, height, width) float32, from its (n_frames, width) profile."""
    prof = np.asarray(profile, dtype=np.float32)
    return np.repeat(prof[:, None, :], _hw(size)[0], axis=1)


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
        The (scalar) Parameters instance fitted to a grid (:func:`fit_grid`); ``height_px``,
        ``width_px``, ``pixel_um``, ``frame_period_s`` are read from it.
    movie : numpy.ndarray
        (n_frames, height_px, width_px) z-scored contrast.
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
    c.update(grid_coords(*grid_shape(params), params.pixel_um))
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
