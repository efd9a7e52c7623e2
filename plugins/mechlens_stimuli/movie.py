"""Bring your own movie: play a lab's own movie from a file, so responses are attributed to what was shown.

Three formats, told apart by the file's suffix:

- ``.npy``: a (time, y, x) numeric array (memory-mapped; read without pickle). It states no frame
  period or pixel size: they come from the model's grid (or the parameters).
- ``.nc`` (netCDF): the (time, y, x) variable ``variable`` (a mechlens stimulus file, or any
  netCDF). Its frame period is the attr ``frame_period_s`` (of the variable or the file), else the
  step of a ``time`` coordinate in s; its pixel size is the step of an ``x`` coordinate in um.
- ``.h5`` / ``.hdf5``: one split (``test`` by default) of a deep-retina HDF5 recording, read through
  xarray's public backend mechanism (``xr.open_dataset(path, engine="deep-retina", group=split)``,
  registered by the mechlens retina plugin); its frame period is the file's ``time`` step, and it
  states no pixel size.

A movie plays at its own frame rate and size: one that does not fit the model's grid is refused
(``ParameterError`` naming ``path``, exit status 2), never resampled silently. Time 0 is the file's
frame at ``start_s``; the ``pre_s`` history before it is the file's own preceding frames, and grey
where the file has none. ``file_frame`` (per time) is the frame's index in the file (-1 for grey),
to align the model's responses with responses recorded to the same movie. With ``normalize =
"zscore"`` (default) the frames played are z-scored with their own mean and standard deviation (a
recording's raw intensities); ``"none"`` plays values already in z-scored contrast.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from mechlens.errors import MechlensError, ParameterError
from mechlens.interfaces import Grid
from mechlens.memory import Estimate
from mechlens.parameters import param
from mechlens_stimuli._render import (
    LibraryStimulus,
    assemble,
    event,
    fit_grid,
    grid_shape,
    n_frames,
    stimulus_parameters,
)

NPY = (".npy",)
NETCDF = (".nc", ".nc4", ".netcdf", ".cdf")
HDF5 = (".h5", ".hdf5")


@dataclass
class Source:
    """An opened movie file: its frames, lazily sliceable, and what it states about its grid.

    Attributes
    ----------
    frames : array-like
        (time, y, x); ``frames[a:b]`` reads frames ``a..b-1`` (a memory map or a lazy DataArray).
    frame_period_s : float or None
        Seconds per frame, when the file states it.
    pixel_um : float or None
        Pixel spacing in um, when the file states it.
    close : callable
        Releases the file.
    """

    frames: Any
    frame_period_s: float | None
    pixel_um: float | None
    close: Any

    @property
    def n_time(self) -> int:
        return int(self.frames.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])


def _refuse(message: str) -> ParameterError:
    return ParameterError("path", message)


def _step(values: Any) -> float | None:
    """The median step of a coordinate, or None when it has fewer than two numeric values."""
    v = np.asarray(values)
    if v.size < 2 or v.dtype.kind not in "iuf":
        return None
    step = float(np.median(np.diff(v.astype(np.float64))))
    return step if math.isfinite(step) and step > 0 else None


def _open_npy(path: Path) -> Source:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise _refuse(f"{path} is not a readable .npy array ({err})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iuf":
        raise _refuse(
            f"{path} holds {getattr(arr, 'dtype', type(arr).__name__)}; expected a numeric (time, y, x) array"
        )
    return Source(arr, None, None, lambda: None)


def _open_netcdf(path: Path, variable: str) -> Source:
    try:
        # times stay numbers (seconds), not timedeltas
        ds = xr.open_dataset(path, engine="netcdf4", cache=False, decode_times=False, decode_timedelta=False)
    except (OSError, ValueError) as err:
        raise _refuse(f"{path} is not a readable netCDF file ({err})") from None
    if variable not in ds.data_vars:
        have = ", ".join(str(v) for v in ds.data_vars) or "no variables"
        ds.close()
        raise ParameterError("variable", f"got {variable!r}; {path} has {have}")
    da = ds[variable]
    if da.ndim == 3 and {"time", "y", "x"} == set(da.dims):
        da = da.transpose("time", "y", "x")
    period = da.attrs.get("frame_period_s", ds.attrs.get("frame_period_s"))
    try:
        stated = float(period) if period is not None else None
    except (TypeError, ValueError):
        stated = None
    if stated is None and "time" in da.coords and da["time"].attrs.get("units") in ("s", "seconds"):
        stated = _step(da["time"].values)
    pixel = _step(da["x"].values) if "x" in da.coords and da["x"].attrs.get("units") == "um" else None
    return Source(da, stated, pixel, ds.close)


def _open_hdf5(path: Path, split: str) -> Source:
    try:
        ds = xr.open_dataset(path, engine="deep-retina", group=split)
    except MechlensError as err:
        raise _refuse(str(err) if str(path) in str(err) else f"{path}: {err}") from None
    except ValueError as err:
        if "deep-retina" in str(err) and "engine" in str(err):
            raise _refuse(
                f"{path}: reading a deep-retina HDF5 file needs xarray's 'deep-retina' backend, which the mechlens "
                "retina plugin registers, and it is not installed; install it, or save the movie as .npy"
            ) from None
        raise _refuse(f"{path} is not a readable deep-retina HDF5 file ({err})") from None
    except OSError as err:
        raise _refuse(f"{path} is not a readable HDF5 file ({err})") from None
    return Source(ds["stimulus"], ds.attrs.get("frame_period_s"), None, ds.close)


def open_source(params: Any) -> Source:
    """Open the file ``params.path`` names (see the module docstring); refusals name the parameter.

    Raises
    ------
    ParameterError
        ``path`` when the file is missing, unreadable, of an unknown kind, or not a (time, y, x) movie;
        ``variable`` when a netCDF file has no such variable.
    """
    if not params.path:
        raise _refuse("no movie file given; name one (e.g. --set stimulus.path=movie.npy)")
    try:
        path = Path(params.path).expanduser()
        found = path.is_file()
    except (OSError, ValueError) as err:  # a name the system cannot take (a NUL byte, too long)
        raise _refuse(f"{params.path!r} is not a usable file name ({err})") from None
    if not found:
        raise _refuse(f"{path} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix in NPY:
        source = _open_npy(path)
    elif suffix in NETCDF:
        source = _open_netcdf(path, params.variable)
    elif suffix in HDF5:
        source = _open_hdf5(path, params.split)
    else:
        raise _refuse(
            f"{path}: unknown movie format {suffix or '(no suffix)'!r}; use .npy, netCDF ({', '.join(NETCDF)}) or a "
            f"deep-retina HDF5 file ({', '.join(HDF5)})"
        )
    if len(source.frames.shape) != 3 or min(source.frames.shape) < 1:
        shape = tuple(source.frames.shape)
        source.close()
        raise _refuse(f"{path}: the movie has shape {shape}; expected (time, y, x) with at least one frame and pixel")
    return source


class Movie(LibraryStimulus):
    """A user's own movie from a file (.npy, netCDF, or a deep-retina HDF5 split), played on the model's grid."""

    name = "movie"

    @stimulus_parameters
    class Parameters:
        path: str = param("", "the movie file: .npy (time, y, x), netCDF (.nc) or a deep-retina HDF5 file (.h5)")
        variable: str = param("stimulus", "netCDF: the (time, y, x) variable to play")
        split: str = param("test", "deep-retina HDF5: the split whose movie plays", choices=("test", "train"))
        start_s: float = param(0.0, "the file's time shown at time 0 (from its first frame)", units="s", min=0)
        duration: float | None = param(
            None, "movie length after time 0; default: to the end of the file", units="s", gt=0
        )
        normalize: str = param(
            "zscore",
            "'zscore': the frames played minus their mean, over their standard deviation; 'none': the file is "
            "already z-scored contrast",
            choices=("zscore", "none"),
        )

    def on_grid(self, params: Any, grid: Grid | None) -> Any:
        """The file's grid, checked against the parameters and the model's; durations checked against its length."""
        source = open_source(params)
        try:
            shape, n_time = source.shape, source.n_time
            stated_dt, stated_px = source.frame_period_s, source.pixel_um
        finally:
            source.close()
        where = f"the movie in {params.path} is {shape[0]}x{shape[1]} px (y x x)"
        for name, given, n in (
            ("height_px", params.height_px or params.size_px, shape[0]),
            ("width_px", params.width_px or params.size_px, shape[1]),
        ):
            if given is not None and given != n:
                name = name if getattr(params, name) else "size_px"
                raise ParameterError(name, f"got {given} px, but {where}; leave it unset")
        if grid is not None and grid.shape != shape:
            raise _refuse(
                f"{where}, but the model's grid is {grid.shape[0]}x{grid.shape[1]} px ({grid.describe()}); a movie "
                "is played as recorded, not resampled: crop or resample it to the model's grid first"
            )
        changes: dict[str, Any] = {"height_px": shape[0], "width_px": shape[1], "size_px": None}
        for name, stated, model_value, what in (
            ("frame_period_s", stated_dt, grid.frame_period_s if grid else None, "s frames"),
            ("pixel_um", stated_px, grid.pixel_um if grid else None, "um pixels"),
        ):
            if stated is None:
                continue
            given = getattr(params, name)
            if given is not None and not math.isclose(given, stated, rel_tol=1e-6):
                raise ParameterError(name, f"got {given:g}, but the movie in {params.path} has {stated:g} {what}")
            if model_value is not None and not math.isclose(model_value, stated, rel_tol=1e-6):
                raise _refuse(
                    f"the movie in {params.path} has {stated:g} {what}, but the model takes {model_value:g} {what} "
                    f"({grid.describe() if grid else ''}); a movie plays as recorded: use one made for this model"
                )
            changes[name] = float(stated)
        fitted = fit_grid(dataclasses.replace(params, **changes), grid)
        dt = fitted.frame_period_s
        first = n_frames(fitted.start_s, dt)
        if first >= n_time:
            raise ParameterError(
                "start_s",
                f"got {fitted.start_s:g} s, but the movie in {params.path} lasts {n_time * dt:g} s ({n_time} frames)",
            )
        if fitted.duration is not None and first + n_frames(fitted.duration, dt) > n_time:
            left = (n_time - first) * dt
            raise ParameterError(
                "duration",
                f"got {fitted.duration:g} s, but the movie in {params.path} has {left:g} s from start_s on; allowed "
                f"(0, {left:g}] s, or leave it unset",
            )
        return fitted

    def _span(self, params: Any, n_time: int) -> tuple[int, int, int]:
        """Frames of history, the file's frame at time 0, and frames from time 0 on."""
        dt = params.frame_period_s
        first = n_frames(params.start_s, dt)
        after = n_frames(params.duration, dt) if params.duration is not None else n_time - first
        return n_frames(params.pre_s, dt), first, after

    def memory_estimate(self, params: Any) -> Estimate | None:
        """The movie's bytes (twice: the frames read, then the movie), from the file's header."""
        if params.frame_period_s is None:
            return None
        source = open_source(params)
        try:
            n_pre, _, after = self._span(params, source.n_time)
        finally:
            source.close()
        ny, nx = grid_shape(params)
        frames = float(n_pre + after)
        return Estimate(2 * frames * ny * nx * 4.0, "duration", f"{frames:.0f} frames of {ny}x{nx} px")

    def render(self, params: Any, seed: int) -> xr.Dataset:
        source = open_source(params)
        try:
            n_pre, first, after = self._span(params, source.n_time)
            lo = max(first - n_pre, 0)  # the file's own history, where it has one
            read = np.asarray(source.frames[lo : first + after], dtype=np.float32)
        finally:
            source.close()
        # render-time refusals name the stage too, as the ones raised while fitting the grid do
        if not np.isfinite(read).all():
            raise ParameterError(
                "stimulus.path", f"the movie in {params.path} has non-finite values in the frames played"
            )
        if params.normalize == "zscore":
            mean, std = float(read.mean(dtype=np.float64)), float(read.std(dtype=np.float64))
            if not std > 0:
                raise ParameterError(
                    "stimulus.normalize",
                    f"the frames played of {params.path} are constant ({mean:g}): they cannot be z-scored",
                )
            read = (read - np.float32(mean)) / np.float32(std)
        else:
            mean, std = 0.0, 1.0
        grey = n_pre - (first - lo)  # history frames before the file's first
        movie = np.zeros((n_pre + after, *grid_shape(params)), dtype=np.float32)
        movie[grey:] = read
        index = np.arange(first - n_pre, first + after)
        index[:grey] = -1
        return assemble(
            params,
            movie,
            n_pre,
            events={
                "file_frame": (("time",), index.astype(np.int64), {"long_name": "frame index in the file (-1: grey)"}),
                "movie_start": event(0.0, "s", "the file's frame at start_s"),
            },
            description=f"the movie of {Path(params.path).name}, from {params.start_s:g} s, {after} frames",
            source=str(params.path),
            file_first_frame=int(first),
            normalize=str(params.normalize),
            file_mean=mean,
            file_std=std,
        )
