"""Ganglion-cell recordings: the published deep-retina HDF5 layout and mechlens's own netCDF format.

Both readers return one labeled, **lazily read** ``xarray.Dataset`` per split (``train``,
``test``)::

    stimulus  (time, y, x)         the movie as stored (z-scored for training with train statistics)
    response  (time, cell)         firing rate, Hz
    repeats   (repeat, time, cell) single-trial responses (test split, when the file has them)

with ``time`` in s, ``y``/``x`` pixel centres in um, ``cell`` string ids (``"gc00"``) and a
``cell_index`` coord (the cell's row in the file). Nothing is read until values are asked for,
and then only the slice asked for: ``ds["stimulus"][a:b].values`` reads frames ``a..b-1`` from
disk (h5py / netCDF4 hyperslabs), so an hour-long movie is never held in memory.

The HDF5 layout (Maheswaranathan et al. 2023, Stanford Digital Repository rk663dm5577; one file
per stimulus type, ``<experiment>/naturalscene.h5`` and ``<experiment>/whitenoise.h5``)::

    train/stimulus                    (T, 50, 50)
    train/time                        (T,)  s
    train/response/firing_rate_10ms   (n_cells, T)  Hz   (also firing_rate_5ms, firing_rate_20ms)
    test/stimulus, test/time, test/response/...
    test/repeats/cellNN               (n_repeats, T)  one dataset per cell

``cellNN`` counts from 1 (``cell01`` is response row 0) in the 2015 experiments; a file that has
a ``cell00`` is read as counting from 0. The netCDF layout is documented in docs/recordings.md.

The HDF5 reader is also an xarray backend (:class:`DeepRetinaBackend`, entry point
``xarray.backends: deep-retina``), so any xarray user reads one split of a published file without
mechlens's API: ``xr.open_dataset("naturalscene.h5", engine="deep-retina", group="test")``.

Why one file (640 lines): the two recording formats share the lazy-reading layer and the labeled
layout they both return; the xarray backend entry point is a thin wrapper over them.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing

from mechlens.errors import FileFormatError, UsageError
from mechlens.io import memory_attrs
from mechlens.schema import grid_coords
from mechlens_retina.units import PIXEL_UM

#: response keys of the published files and their bin widths, s
RESPONSE_KEYS = {"firing_rate_5ms": 0.005, "firing_rate_10ms": 0.01, "firing_rate_20ms": 0.02}
STIMULUS_TYPES = ("naturalscene", "whitenoise")
SPLITS = ("train", "test")
FORMAT_H5 = "deep-retina-hdf5"
FORMAT_NC = "mechlens-recording-netcdf"
_CELL_KEY = re.compile(r"^cell(\d+)$")


# -- lazy arrays over HDF5 datasets ----------------------------------------------------------
class _H5Array(BackendArray):
    """One h5py dataset, read by basic (slice / integer) hyperslabs only when values are needed."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.shape = tuple(dataset.shape)
        self.dtype = np.dtype(dataset.dtype)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC, self._read)

    def _read(self, key: tuple[Any, ...]) -> np.ndarray:
        return np.asarray(self.dataset[key])


class _H5Stack(BackendArray):
    """Per-cell HDF5 datasets of shape (n_repeats_i, T) as one lazy (repeat, time, cell) array.

    A cell without a dataset, or with fewer repeats than the most, reads as NaN there.
    """

    def __init__(self, members: Sequence[Any | None], n_time: int) -> None:
        self.members = list(members)
        self.n_repeat = max(int(m.shape[0]) for m in self.members if m is not None)
        self.shape = (self.n_repeat, n_time, len(self.members))
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC, self._read)

    def _read(self, key: tuple[Any, ...]) -> np.ndarray:
        def as_slice(k: Any) -> slice:
            return slice(k, k + 1) if isinstance(k, (int, np.integer)) else k

        kr, kt, kc = (as_slice(k) for k in key)
        rows = np.arange(self.n_repeat)[kr]
        n_t = len(range(*kt.indices(self.shape[1])))
        out = np.full((len(rows), n_t, len(range(*kc.indices(self.shape[2])))), np.nan, dtype=np.float32)
        for j, c in enumerate(range(*kc.indices(self.shape[2]))):
            member = self.members[c]
            if member is None:
                continue
            have = rows < member.shape[0]
            if have.any():
                lo, hi = int(rows[have].min()), int(rows[have].max()) + 1
                block = np.asarray(member[lo:hi, kt], dtype=np.float32)
                out[have, :, j] = block[rows[have] - lo]
        squeeze = tuple(i for i, k in enumerate(key) if isinstance(k, (int, np.integer)))
        return out.squeeze(axis=squeeze) if squeeze else out


def _lazy(array: BackendArray, dims: tuple[str, ...], attrs: dict[str, Any]) -> xr.Variable:
    return xr.Variable(dims, indexing.LazilyIndexedArray(array), attrs=attrs)


# -- datasets --------------------------------------------------------------------------------
@dataclass
class Recording:
    """The train and test splits of one recording.

    Attributes
    ----------
    train : xarray.Dataset
        The training split (lazily read).
    test : xarray.Dataset or None
        The test split, when the recording has one.
    source : str
        The file it came from, or ``"<memory>"``.
    format : str
        ``"deep-retina-hdf5"``, ``"mechlens-recording-netcdf"`` or ``"memory"``.
    """

    train: xr.Dataset
    test: xr.Dataset | None
    source: str = "<memory>"
    format: str = "memory"

    @property
    def cells(self) -> list[str]:
        """Cell ids (the same in both splits)."""
        return [str(c) for c in self.train["cell"].values]

    @property
    def frame_period_s(self) -> float:
        """Seconds per frame."""
        return float(self.train.attrs["frame_period_s"])

    @property
    def pixel_um(self) -> float:
        """Micrometres per pixel."""
        return float(self.train.attrs.get("pixel_um", PIXEL_UM))

    def fingerprint(self) -> str:
        """sha256 identifying the data: of the file, or of the arrays for an in-memory recording."""
        if self.source != "<memory>" and Path(self.source).is_file():
            from mechlens_retina.models.checkpoint import sha256_file

            return sha256_file(self.source)
        digest = hashlib.sha256()
        for ds in (self.train, self.test):
            if ds is None:
                continue
            for name in ("stimulus", "response", "repeats"):
                if name in ds:
                    _hash_array(digest, ds[name])
        return digest.hexdigest()

    def close(self) -> None:
        """Close the files behind the splits."""
        self.train.close()
        if self.test is not None:
            self.test.close()

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _hash_array(digest: Any, da: xr.DataArray, chunk: int = 4096) -> None:
    digest.update(f"{da.name}{da.dims}{da.shape}{da.dtype}".encode())
    for start in range(0, da.sizes["time"], chunk):
        digest.update(np.ascontiguousarray(da.isel(time=slice(start, start + chunk)).values).tobytes())


def resolve_path(path: str | os.PathLike[str], stimulus_type: str = "naturalscene") -> Path:
    """The recording file: ``path`` itself, or ``path/<stimulus_type>.h5`` for an experiment directory."""
    path = Path(path).expanduser()
    if path.is_dir():
        if stimulus_type not in STIMULUS_TYPES:
            raise UsageError(f"stimulus type {stimulus_type!r} is not one of {', '.join(STIMULUS_TYPES)}")
        candidate = path / f"{stimulus_type}.h5"
        if not candidate.is_file():
            found = sorted(p.name for p in path.glob("*.h5")) or ["no .h5 files"]
            raise FileFormatError(
                f"experiment directory {path} has no {candidate.name} (it has {', '.join(found)}); "
                "choose another --stimulus-type or give the file"
            )
        return candidate
    if not path.is_file():
        raise FileFormatError(f"recording {path} not found; give a .h5 file, an experiment directory or a .nc file")
    return path


def _is_hdf5(path: Path) -> bool:
    import h5py

    return bool(h5py.is_hdf5(path))


def open_split(
    path: str | os.PathLike[str],
    split: str = "train",
    *,
    stimulus_type: str = "naturalscene",
    response: str = "firing_rate_10ms",
    cells: Sequence[int] | None = None,
    pixel_um: float = PIXEL_UM,
) -> xr.Dataset | None:
    """Open one split of a recording as a lazily read Dataset.

    Parameters
    ----------
    path : path
        A deep-retina ``.h5`` file, an experiment directory holding ``<stimulus_type>.h5``, or a
        mechlens netCDF recording (``.nc``).
    split : str
        ``"train"`` or ``"test"``.
    stimulus_type : str
        ``"naturalscene"`` or ``"whitenoise"`` (used for an experiment directory).
    response : str
        Response key of the HDF5 layout (``firing_rate_10ms``, ``_5ms`` or ``_20ms``).
    cells : sequence of int, optional
        Cells to keep, as rows of the file's response (default: all).
    pixel_um : float
        Micrometres per pixel for an HDF5 file (which does not store it).

    Returns
    -------
    xarray.Dataset or None
        ``stimulus`` (time, y, x), ``response`` (time, cell) in Hz, ``repeats`` (repeat, time,
        cell) when present; None when the file has no such split (only ``test`` may be absent).
    """
    if split not in SPLITS:
        raise UsageError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    file = resolve_path(path, stimulus_type)
    if _is_hdf5(file) and not _is_netcdf4(file):
        ds = _open_h5_split(file, split, response, pixel_um, stimulus_type)
    else:
        ds = _open_nc_split(file, split)
    if ds is None:
        return None
    if cells is not None:
        n = ds.sizes["cell"]
        bad = [c for c in cells if not 0 <= int(c) < n]
        if bad:
            raise UsageError(f"{file}: cells {bad} out of range; the recording has {n} cells (0..{n - 1})")
        ds = ds.isel(cell=[int(c) for c in cells])
    check_split(ds, f"{file}:{split}")
    return ds


def open_recording(
    path: str | os.PathLike[str],
    *,
    stimulus_type: str = "naturalscene",
    response: str = "firing_rate_10ms",
    cells: Sequence[int] | None = None,
    pixel_um: float = PIXEL_UM,
) -> Recording:
    """Open both splits of a recording (see :func:`open_split` for the parameters)."""
    file = resolve_path(path, stimulus_type)
    kw: dict[str, Any] = {"stimulus_type": stimulus_type, "response": response, "cells": cells, "pixel_um": pixel_um}
    train = open_split(file, "train", **kw)
    if train is None:  # pragma: no cover - open_split raises for a missing train split
        raise FileFormatError(f"{file} has no train split")
    test = open_split(file, "test", **kw)
    if test is not None and list(test["cell"].values) != list(train["cell"].values):
        raise FileFormatError(f"{file}: the test split's cells differ from the train split's")
    fmt = train.attrs.get("format", "")
    return Recording(train=train, test=test, source=str(file), format=str(fmt))


def from_datasets(train: xr.Dataset, test: xr.Dataset | None = None) -> Recording:
    """A Recording from in-memory Datasets (checked like a file's)."""
    check_split(train, "train")
    if test is not None:
        check_split(test, "test")
    return Recording(train=train, test=test)


def check_split(ds: xr.Dataset, where: str) -> None:
    """Raise FileFormatError unless ``ds`` has the recording variables, dims and attrs."""
    problems = []
    expected = {"stimulus": ("time", "y", "x"), "response": ("time", "cell"), "repeats": ("repeat", "time", "cell")}
    for name, dims in expected.items():
        if name not in ds:
            if name != "repeats":
                problems.append(f"missing variable {name!r} {dims}")
        elif ds[name].dims != dims:
            problems.append(f"{name!r} has dims {ds[name].dims}, expected {dims}")
    if "frame_period_s" not in ds.attrs:
        problems.append("missing attr 'frame_period_s'")
    if "cell" in ds.dims and "cell" not in ds.coords:
        problems.append("dim 'cell' needs string ids as a coord")
    if problems:
        raise FileFormatError(f"recording {where}: " + "; ".join(problems) + " (see docs/recordings.md)")


# -- HDF5 (deep-retina) ------------------------------------------------------------------------
def _is_netcdf4(path: Path) -> bool:
    # netCDF4 files are HDF5 files too; they carry a _NCProperties attribute on the root group
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "_NCProperties" in f.attrs
    except OSError:
        return False


def _open_h5_split(path: Path, split: str, response: str, pixel_um: float, stimulus_type: str) -> xr.Dataset | None:
    import h5py

    f = h5py.File(path, "r")
    try:
        ds = _h5_dataset(f, path, split, response, pixel_um, stimulus_type)
    except BaseException:
        f.close()
        raise
    if ds is None:
        f.close()
        return None
    ds.set_close(f.close)
    return ds


#: bytes per frame a split holds in memory when it is opened and trained on, beyond the movie's blocks:
#: the time axis (read, as a coordinate, and an index over it), the sample index
_FRAME_BYTES = 4 * 8


def check_memory(path: Path, split: str, n_time: int, n_cells: int, n_repeats: int = 0) -> None:
    """Refuse, from its shape alone, a split whose per-frame arrays would not fit the memory budget.

    Training holds a split's time axis, responses (read, then made contiguous), sample index and
    (test split) repeats in memory; only the movie is streamed. A header claiming 1e8 frames is
    refused here, before any of it is allocated.
    """
    from mechlens import memory

    per_frame = _FRAME_BYTES + 2 * 4 * n_cells + 4 * n_cells * n_repeats
    memory.check(
        float(n_time) * per_frame,
        "--data",
        f"the {split} split of {path} ({n_time} frames, {n_cells} cells"
        + (f", {n_repeats} repeats" if n_repeats else "")
        + "), its time axis, responses and sample index",
        "use a shorter recording",
    )


def _h5_dataset(
    f: Any, path: Path, split: str, response: str, pixel_um: float, stimulus_type: str
) -> xr.Dataset | None:
    if split not in f:
        if split == "test":
            return None
        raise FileFormatError(f"{path} has no '{split}' group (it has {', '.join(f.keys()) or 'nothing'})")
    g = f[split]
    if "stimulus" not in g:
        raise FileFormatError(f"{path}: '{split}/stimulus' is missing")
    stim = g["stimulus"]
    if stim.ndim != 3:
        raise FileFormatError(f"{path}: '{split}/stimulus' has shape {stim.shape}; expected (time, y, x)")
    n_t, n_y, n_x = (int(s) for s in stim.shape)
    if response not in RESPONSE_KEYS:
        raise UsageError(f"response {response!r} is not one of {', '.join(RESPONSE_KEYS)}")
    if "response" not in g or response not in g["response"]:
        have = ", ".join(g["response"].keys()) if "response" in g else "no 'response' group"
        raise FileFormatError(f"{path}: '{split}/response/{response}' is missing (found: {have})")
    resp = g["response"][response]
    if resp.ndim != 2 or resp.shape[1] != n_t:
        raise FileFormatError(
            f"{path}: '{split}/response/{response}' has shape {resp.shape}; expected (cells, {n_t}) to match "
            f"the {n_t} stimulus frames (is the response at another bin width than the stimulus frames?)"
        )
    n_cell = int(resp.shape[0])
    n_rep = (
        max((int(m.shape[0]) for m in g["repeats"].values() if getattr(m, "ndim", 0) == 2), default=0)
        if "repeats" in g
        else 0
    )
    check_memory(path, split, n_t, n_cell, n_rep)
    time: np.ndarray
    if "time" in g:
        time = np.asarray(g["time"][()], dtype=np.float64).ravel()
        if time.shape[0] != n_t:
            raise FileFormatError(f"{path}: '{split}/time' has {time.shape[0]} values for {n_t} stimulus frames")
        period = float(np.median(np.diff(time))) if n_t > 1 else RESPONSE_KEYS[response]
        if not period > 0:
            raise FileFormatError(f"{path}: '{split}/time' does not increase")
    else:
        period = RESPONSE_KEYS[response]
        time = np.arange(n_t) * period
    period = float(np.round(period, 9))
    coords: dict[str, Any] = {
        "time": xr.DataArray(time, dims="time", attrs={"units": "s", "long_name": "time"}),
        "cell": ("cell", [f"gc{i:02d}" for i in range(n_cell)]),
        "cell_index": ("cell", np.arange(n_cell), {"long_name": "row of the cell in the file's responses"}),
    }
    coords.update(grid_coords(n_y, n_x, pixel_um))
    variables: dict[str, Any] = {
        "stimulus": _lazy(_H5Array(stim), ("time", "y", "x"), {"units": "1", "long_name": "stimulus as stored"}),
        "response": _lazy(_H5Array(resp), ("cell", "time"), {"units": "Hz", "long_name": response}),
    }
    if "repeats" in g and len(g["repeats"]):
        variables["repeats"] = _lazy(
            _repeats_stack(g["repeats"], n_cell, n_t, path),
            ("repeat", "time", "cell"),
            {"long_name": "single trials of the test movie, as stored"},
        )
    ds = xr.Dataset(variables, coords=coords)
    ds["response"] = ds["response"].transpose("time", "cell")
    ds.attrs.update(
        {
            "frame_period_s": period,
            "pixel_um": float(pixel_um),
            "split": split,
            "source": str(path),
            "format": FORMAT_H5,
            "response_key": response,
            "stimulus_type": stimulus_type,
        }
    )
    return ds


def _repeats_stack(group: Any, n_cell: int, n_t: int, path: Path) -> _H5Stack:
    numbered = {}
    for key in group:
        match = _CELL_KEY.match(key)
        if match:
            numbered[int(match.group(1))] = group[key]
    base = 0 if 0 in numbered else 1
    members: list[Any | None] = []
    for row in range(n_cell):
        member = numbered.get(row + base)
        if member is not None and (member.ndim != 2 or member.shape[1] != n_t):
            raise FileFormatError(
                f"{path}: repeats/{member.name.rsplit('/', 1)[-1]} has shape {member.shape}; expected (repeats, {n_t})"
            )
        members.append(member)
    if all(m is None for m in members):
        raise FileFormatError(f"{path}: the repeats group has no cellNN datasets matching the {n_cell} cells")
    return _H5Stack(members, n_t)


class DeepRetinaBackend(BackendEntrypoint):
    """xarray backend for the published deep-retina HDF5 layout: one split as a lazily read Dataset.

    ``xr.open_dataset(path, engine="deep-retina", group="train", response="firing_rate_10ms",
    pixel_um=55.0)`` returns what :func:`open_split` returns for an HDF5 file (same variables,
    coords, attrs and laziness). Registered through the ``xarray.backends`` entry point group, the
    public way xarray takes third-party readers, rather than a private reader xarray cannot see.
    """

    description = "Baccus-lab / deep-retina HDF5 recordings (train/test groups, firing_rate_10ms) as labeled Datasets"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "group", "response", "pixel_um", "stimulus_type")

    def open_dataset(  # type: ignore[override]  # xarray's signature is (filename_or_obj, *, drop_variables, **kwargs)
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Sequence[str] | None = None,
        group: str = "train",
        response: str = "firing_rate_10ms",
        pixel_um: float = PIXEL_UM,
        stimulus_type: str = "naturalscene",
    ) -> xr.Dataset:
        """Open split ``group`` (``"train"`` or ``"test"``) of a deep-retina ``.h5`` file.

        Raises
        ------
        FileFormatError
            If the file is not in the layout, or has no such split.
        UsageError
            If ``group`` or ``response`` is not one the layout has.
        """
        if not isinstance(filename_or_obj, (str, os.PathLike)):
            raise UsageError(
                f"engine='deep-retina' reads a file path, not {type(filename_or_obj).__name__}; pass the .h5 path"
            )
        if group not in SPLITS:
            raise UsageError(f"engine='deep-retina': group {group!r} is not one of {', '.join(SPLITS)}")
        path = Path(filename_or_obj)
        if not path.is_file() or not _is_hdf5(path) or _is_netcdf4(path):
            raise FileFormatError(
                f"{path} is not a deep-retina HDF5 file (a netCDF recording opens with engine='netcdf4'; see "
                "docs/recordings.md)"
            )
        ds = _open_h5_split(path, group, response, float(pixel_um), stimulus_type)
        if ds is None:
            raise FileFormatError(f"{path} has no {group!r} split")
        if drop_variables:
            ds = ds.drop_vars([drop_variables] if isinstance(drop_variables, str) else list(drop_variables))
        return ds

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """True for an existing ``.h5``/``.hdf5`` file with a ``train/stimulus`` dataset that is not netCDF."""
        if not isinstance(filename_or_obj, (str, os.PathLike)):
            return False
        path = Path(filename_or_obj)
        if path.suffix.lower() not in (".h5", ".hdf5") or not path.is_file():
            return False
        import h5py

        try:
            with h5py.File(path, "r") as f:
                return "_NCProperties" not in f.attrs and "train/stimulus" in f
        except OSError:
            return False


# -- netCDF (mechlens) ---------------------------------------------------------------------------
def _open_nc_split(path: Path, split: str) -> xr.Dataset | None:
    try:
        ds = xr.open_dataset(path, group=split, engine="netcdf4", cache=False)
    except OSError as err:
        if "group" not in str(err).lower() and "not found" not in str(err).lower():
            raise FileFormatError(f"{path}: not a readable HDF5 or netCDF recording ({err})") from None
        ds = None
    except ValueError as err:
        raise FileFormatError(f"{path}: not a readable netCDF recording ({err})") from None
    if ds is None:
        if split == "test":
            return None
        root = xr.open_dataset(path, engine="netcdf4", cache=False)
        if "stimulus" not in root:
            root.close()
            raise FileFormatError(
                f"{path} has neither a 'train' group nor a stimulus in its root group (see docs/recordings.md)"
            )
        ds = root
    try:
        check_memory(path, split, ds.sizes.get("time", 0), ds.sizes.get("cell", 0), ds.sizes.get("repeat", 0))
    except BaseException:
        ds.close()
        raise
    ds.attrs = memory_attrs(ds.attrs)  # a file saved by mechlens.io groups its attrs per stage
    if "frame_period_s" not in ds.attrs and "time" in ds.coords and ds.sizes["time"] > 1:
        ds.attrs["frame_period_s"] = float(np.round(np.median(np.diff(ds["time"].values)), 9))
    if "pixel_um" not in ds.attrs and "x" in ds.coords and ds.sizes.get("x", 0) > 1:
        ds.attrs["pixel_um"] = float(np.round(np.median(np.diff(ds["x"].values)), 6))
    if "cell" in ds.dims and "cell_index" not in ds.coords:
        ds = ds.assign_coords(cell_index=("cell", np.arange(ds.sizes["cell"])))
    if "cell" in ds.coords:
        ds = ds.assign_coords(cell=[str(c) for c in ds["cell"].values])
    ds.attrs.update({"split": split, "source": str(path), "format": FORMAT_NC})
    return ds


# -- writers ------------------------------------------------------------------------------------------
def write_netcdf(path: str | os.PathLike[str], train: xr.Dataset, test: xr.Dataset | None = None) -> Path:
    """Write a recording in the mechlens netCDF layout: groups ``/train`` and ``/test``.

    Parameters
    ----------
    path : path
        Output ``.nc`` file (overwritten).
    train, test : xarray.Dataset
        Splits with ``stimulus`` (time, y, x), ``response`` (time, cell) in Hz and optionally
        ``repeats`` (repeat, time, cell); attr ``frame_period_s``.
    """
    from mechlens.io import safe_attr

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode: Literal["w", "a"] = "w"
    for split, ds in (("train", train), ("test", test)):
        if ds is None:
            continue
        check_split(ds, split)
        out = ds.drop_vars([v for v in ("cell_index",) if v in ds.coords])
        out.attrs = {k: safe_attr(v) for k, v in ds.attrs.items() if k not in ("split", "source", "format")}
        encoding = {name: {"dtype": "float32", "zlib": False} for name in out.data_vars}
        out.to_netcdf(path, mode=mode, group=split, engine="netcdf4", encoding=encoding)
        mode = "a"
    return path


def write_h5(
    path: str | os.PathLike[str],
    train: xr.Dataset,
    test: xr.Dataset | None = None,
    response: str = "firing_rate_10ms",
    chunk_frames: int = 10000,
) -> Path:
    """Write a recording in the published deep-retina HDF5 layout, copying the movie in chunks.

    Parameters
    ----------
    path : path
        Output ``.h5`` file (overwritten).
    train, test : xarray.Dataset
        Splits as for :func:`write_netcdf` (lazily backed Datasets are copied chunk by chunk).
    response : str
        The response key to write (``firing_rate_10ms``).
    chunk_frames : int
        Frames copied per write.
    """
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for split, ds in (("train", train), ("test", test)):
            if ds is None:
                continue
            check_split(ds, split)
            g = f.create_group(split)
            n_t, n_y, n_x = (ds.sizes[d] for d in ("time", "y", "x"))
            stim = g.create_dataset("stimulus", shape=(n_t, n_y, n_x), dtype="float32")
            resp = g.create_group("response").create_dataset(response, shape=(ds.sizes["cell"], n_t), dtype="float32")
            for start in range(0, n_t, chunk_frames):
                part = ds.isel(time=slice(start, start + chunk_frames))
                stim[start : start + part.sizes["time"]] = part["stimulus"].transpose("time", "y", "x").values
                resp[:, start : start + part.sizes["time"]] = part["response"].transpose("cell", "time").values
            g.create_dataset("time", data=np.asarray(ds["time"].values, dtype=np.float64))
            if "repeats" in ds:
                reps = g.create_group("repeats")
                values = ds["repeats"].transpose("repeat", "time", "cell").values
                for c in range(values.shape[2]):
                    reps.create_dataset(f"cell{c + 1:02d}", data=values[:, :, c].astype(np.float32))
    return path
