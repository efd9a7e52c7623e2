"""zarr output: ``-o run.zarr``, written part by part while a run goes, resumable, and read lazily.

While a pipeline's attribution runs in parts (:mod:`mechlens.distributed`), the store holds the
attribution in its own layout (``time`` = the model's output times) and a progress record,
``mechlens-progress.json``: the run's identity (plugins, parameters, seed, layer, cells), the plan
of parts and, for every part written, its region. Each part is written into its region as soon as
it finishes (one writer: the calling process). A run started again with the same identity reads the
parts already written and computes only the others; a store holding another run, or a finished
one, is started afresh (as ``-o x.nc`` replaces a file).

When the run ends, :func:`save` replaces the store by the finished Dataset (the same variables, dims,
float32 data and netCDF-safe attrs as :func:`mechlens.io.save` writes), written beside it and renamed
into place; a store with a progress record is an unfinished run, and :func:`open_store` refuses it
with a message saying to run the command again. zarr is the optional extra ``mechlens[scale]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from mechlens.errors import FileFormatError, UsageError

#: the progress record inside an unfinished store
PROGRESS = "mechlens-progress.json"

#: zarr chunk length along ``time`` (and one condition per chunk)
TIME_CHUNK = 512


def _zarr() -> Any:
    try:
        import zarr
    except ImportError as err:
        raise UsageError(f"a .zarr store needs zarr ({err}); install it with pip install 'mechlens[scale]'") from None
    return zarr


def is_store(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a zarr store (a directory with zarr metadata)."""
    p = Path(path)
    return p.is_dir() and any((p / name).exists() for name in ("zarr.json", ".zgroup", ".zattrs"))


def _write_json(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, sort_keys=True)
    os.replace(tmp, path)


def _clear(path: Path) -> None:
    """Remove a zarr store (or an empty folder) at ``path``; refuse any other folder."""
    if not path.exists():
        return
    if not path.is_dir():
        raise UsageError(f"-o {path}: exists and is not a zarr store (a folder); remove it or choose another -o")
    if not (is_store(path) or (path / PROGRESS).exists() or not any(path.iterdir())):
        raise UsageError(f"-o {path}: is a folder but not a zarr store; choose another -o")
    shutil.rmtree(path)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No warning about the progress record, which zarr finds in the store but does not know."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=f".*{PROGRESS}.*")
        yield


def _strings_out(ds: xr.Dataset) -> xr.Dataset:
    """Fixed-width strings as variable-length (zarr v3 has a specified type for those only)."""
    fix = {name: ds[name].astype(object) for name in ds.variables if ds[name].dtype.kind == "U"}
    return ds.assign_coords({k: v for k, v in fix.items() if k in ds.coords}).assign(
        {k: v for k, v in fix.items() if k not in ds.coords}
    )


def _strings_in(ds: xr.Dataset) -> xr.Dataset:
    """Strings read back (numpy's StringDType) as Python objects, as netCDF strings are read."""
    fix = {name: ds[name].astype(object) for name in ds.variables if ds[name].dtype.kind == "T"}
    return ds.assign_coords({k: v for k, v in fix.items() if k in ds.coords}).assign(
        {k: v for k, v in fix.items() if k not in ds.coords}
    )


def _attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Attrs as JSON values, the way ``mechlens.io.safe_attr`` makes them netCDF-safe (it is a layer above)."""
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if v is None:
            v = ""
        elif isinstance(v, (bool, np.bool_)):
            v = int(v)
        elif isinstance(v, (np.ndarray, np.generic)):
            v = v.tolist()
        elif isinstance(v, Path):
            v = str(v)
        elif isinstance(v, (dict, list, tuple)) and not (
            v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        ):
            v = json.dumps(v, default=str, sort_keys=True)
        out[str(k)] = v
    return out


class Progress:
    """The progress record of an unfinished store, and the parts in it (see the module docstring).

    Attributes
    ----------
    path : Path
        The store.
    parts : list of dict
        The plan (``index``, ``condition``, ``time``, ``cells``), kept across restarts.
    done : dict of int to dict
        Parts written: their region (``condition`` index or None, ``time`` [lo, hi), ``cells`` [lo, hi)
        or None) and ``max_abs``.
    """

    def __init__(self, path: Path, record: dict[str, Any]) -> None:
        self.path = path
        self.record = record
        self._ds: xr.Dataset | None = None

    @property
    def parts(self) -> list[dict[str, Any]]:
        return list(self.record["parts"])

    @property
    def done(self) -> dict[int, dict[str, Any]]:
        return {int(k): v for k, v in self.record["done"].items()}

    @classmethod
    def open(cls, path: str | os.PathLike[str], fingerprint: str, parts: Sequence[Mapping[str, Any]]) -> Progress:
        """Resume the store at ``path`` when it holds this unfinished run (``fingerprint``), else start it afresh."""
        _zarr()
        path = Path(path)
        record_path = path / PROGRESS
        if record_path.is_file():
            try:
                record = json.loads(record_path.read_text())
            except (OSError, ValueError):
                record = {}
            if record.get("run") == fingerprint and record.get("parts"):
                return cls(path, record)
        _clear(path)
        path.mkdir(parents=True)
        record = {"run": fingerprint, "parts": [dict(p) for p in parts], "done": {}}
        _write_json(record_path, record)
        return cls(path, record)

    def _save(self) -> None:
        _write_json(self.path / PROGRESS, self.record)

    def _dataset(self) -> xr.Dataset:
        if self._ds is None:
            with _quiet():
                self._ds = _strings_in(xr.open_zarr(self.path, consolidated=False, chunks=None))
        return self._ds

    def read(self, index: int) -> xr.Dataset:
        """A part already written, as its task returned it."""
        region = self.done[index]
        ds = self._dataset()
        sel: dict[str, Any] = {}
        if region["condition"] is not None and "condition" in ds.dims:
            sel["condition"] = [int(region["condition"])]
        if region["time"] is not None and "time" in ds.dims:
            sel["time"] = slice(*region["time"])
        if region.get("cells") is not None and "cell" in ds.dims:
            sel["cell"] = slice(*region["cells"])
        piece = ds.isel(sel).load()
        # the store's mark of an unfinished run is not the part's: it must not reach the result's attrs
        piece.attrs.pop("mechlens_unfinished", None)
        if "completeness_error" in piece:
            piece["completeness_error"].attrs["max_abs"] = float(region.get("max_abs", 0.0))
        return piece

    @property
    def splits_cells(self) -> bool:
        """Whether the plan splits cells (then ``cell`` is a region dim, like ``time`` and ``condition``)."""
        return any(p.get("cells") for p in self.record["parts"])

    def write(
        self,
        index: int,
        piece: xr.Dataset,
        full_times: xr.DataArray,
        stimulus: xr.Dataset,
        full_cells: Sequence[str] | None = None,
    ) -> None:
        """Write one finished part into its region (creating the store from the first), and record it.

        ``full_cells`` (the run's cells, in order) is needed when the plan splits cells.
        """
        part = next(p for p in self.record["parts"] if int(p["index"]) == index)
        condition = part["condition"]
        times = piece["time"].values if "time" in piece.dims else np.zeros(0)
        lo = 0
        if times.size:
            lo = int(np.searchsorted(full_times.values, times[0]))
            if lo >= full_times.size or full_times.values[lo] != times[0]:
                raise RuntimeError(f"part {index}: its times are not the run's output times")
        hi = lo + int(times.size)
        cells: list[int] | None = None
        if self.splits_cells and "cell" in piece.dims:
            if full_cells is None:
                raise RuntimeError(f"part {index}: the plan splits cells; write() needs the run's cells (full_cells)")
            names = [str(c) for c in piece["cell"].values]
            first = list(full_cells).index(names[0]) if names and names[0] in full_cells else -1
            if first < 0 or list(full_cells)[first : first + len(names)] != names:
                raise RuntimeError(f"part {index}: its cells {names} are not a run of the run's cells")
            cells = [first, first + len(names)]
        empty = "time" in piece.dims and not times.size  # a group with no chunk: nothing to write
        if not empty and not self.record.get("created"):
            self._create(piece, full_times, stimulus, full_cells)
        region: dict[str, slice] = {}
        if "time" in piece.dims:
            region["time"] = slice(lo, hi)
        if "condition" in piece.dims:
            if condition is None:
                region["condition"] = slice(0, piece.sizes["condition"])
            else:
                region["condition"] = slice(int(condition), int(condition) + 1)
        if cells is not None:
            region["cell"] = slice(*cells)
        if region and not empty:
            keep = [v for v in piece.data_vars if set(piece[v].dims) & set(region)]
            data = piece[keep].drop_vars([c for c in piece.coords if not set(piece[c].dims) & set(region)])
            data = data.drop_vars([c for c in data.coords if c in region])
            with _quiet():
                data.to_zarr(self.path, region=region, consolidated=False)
        err = piece["completeness_error"].attrs.get("max_abs", 0.0) if "completeness_error" in piece else 0.0
        self.record["done"][str(index)] = {
            "condition": condition,
            "time": [lo, hi] if "time" in piece.dims else None,
            "cells": cells,
            "max_abs": float(err),
        }
        self._save()
        self._ds = None

    def _create(
        self, piece: xr.Dataset, full_times: xr.DataArray, stimulus: xr.Dataset, full_cells: Sequence[str] | None
    ) -> None:
        """The store's arrays, shaped for the whole attribution; unwritten regions read as NaN (or 0)."""
        import dask.array as da

        sizes = dict(piece.sizes)
        coords: dict[str, Any] = {}
        if "time" in piece.dims:
            sizes["time"] = full_times.size
            coords["time"] = full_times.variable.copy()
        if "condition" in piece.dims:
            sizes["condition"] = stimulus.sizes["condition"]
            coords["condition"] = stimulus["condition"].variable.copy()
        split = ("time", "condition", "cell") if self.splits_cells else ("time", "condition")
        if "cell" in split and "cell" in piece.dims and full_cells is not None:
            sizes["cell"] = len(full_cells)
            coords["cell"] = xr.Variable("cell", np.asarray([str(c) for c in full_cells]))
        region_dims = {d for d in split if d in piece.dims}
        variables: dict[str, Any] = {}
        for name, var in piece.data_vars.items():
            if not set(var.dims) & region_dims:
                variables[str(name)] = var.variable.copy()
                continue
            shape = tuple(sizes[d] for d in var.dims)
            # a condition or a cell per chunk when they are split: parts never write into one chunk together
            chunks = tuple(
                1
                if d in ("condition", "cell") and d in region_dims
                else min(TIME_CHUNK, sizes[d])
                if d == "time"
                else -1
                for d in var.dims
            )
            fill = np.nan if var.dtype.kind == "f" else 0
            variables[str(name)] = xr.Variable(var.dims, da.full(shape, fill, dtype=var.dtype, chunks=chunks))
        for name, coord in piece.coords.items():
            if str(name) not in coords and not set(coord.dims) & region_dims:
                coords[str(name)] = coord.variable.copy()
        template = xr.Dataset(variables, coords=coords, attrs=_attrs(piece.attrs))
        for name in template.variables:
            source = piece[name] if name in piece.variables else None
            template[name].attrs = _attrs(source.attrs) if source is not None else {}
        template.attrs["mechlens_unfinished"] = "a run in progress; run the same command again to finish it"
        template = _strings_out(template)
        with _quiet():
            template.to_zarr(self.path, mode="w", compute=False, consolidated=False)
        self.record["created"] = True
        self._save()


def save(out: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write a finished Dataset, made netCDF-safe by ``mechlens.io.prepare``, as a zarr store at ``path``.

    Called by :func:`mechlens.io.save` for a ``*.zarr`` path. What is at ``path`` is replaced: the
    store is written beside it and renamed into place, so an interrupted save leaves the previous
    store (or the unfinished run, which can then be resumed).
    """
    _zarr()
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"-o {path}: exists and is not a zarr store (a folder); remove it or choose another -o")
    path.parent.mkdir(parents=True, exist_ok=True)
    out = _stream_ready(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        out.to_zarr(tmp, mode="w", consolidated=False)
        _swap_into_place(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def open_store(path: str | os.PathLike[str], chunks: Any = None) -> xr.Dataset:
    """Read a finished store: lazily (dask) with ``chunks`` (e.g. ``{}`` for the stored chunks), else into memory.

    Raises
    ------
    FileFormatError
        The store is an unfinished run, or cannot be read.
    """
    path = Path(path)
    if (path / PROGRESS).exists():
        raise FileFormatError(
            f"{path}: is an unfinished run (it holds {PROGRESS}); run the same command again to finish it"
        )
    _zarr()
    try:
        ds = xr.open_zarr(path, consolidated=False, chunks=chunks)
    except Exception as err:
        raise FileFormatError(f"{path}: cannot be read as a zarr store ({type(err).__name__}: {err})") from err
    if chunks is None:
        ds = ds.load()
    ds = _strings_in(ds)
    with contextlib.suppress(KeyError):
        del ds.attrs["mechlens_unfinished"]
    return ds


def _swap_into_place(tmp: Path, path: Path) -> Path:
    """Put the finished store ``tmp`` at ``path`` by renames: an old store (or an empty folder) there is moved
    aside first and removed after, so ``path`` is never half-written; any other folder or file is refused."""
    old = None
    if path.exists():
        if not path.is_dir() or not (is_store(path) or (path / PROGRESS).exists() or not any(path.iterdir())):
            raise UsageError(f"-o {path}: exists and is not a zarr store; remove it or choose another -o")
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path


# -- streamed runs (mechlens.streaming, mechlens.streamwrite) ---------------------------------------
def _stream_ready(piece: xr.Dataset) -> xr.Dataset:
    """A Dataset (already made netCDF-safe by ``mechlens.io.prepare``) as the store holds it: float32, JSON attrs.

    Used by :func:`save` and by the streamed writes, so a streamed store and a saved one are laid out alike.
    """
    out = piece.copy()
    for name in list(out.data_vars):
        if out[name].dtype.kind == "f" and out[name].dtype != np.float32:
            out[name] = out[name].astype(np.float32)
    out.attrs = _attrs(out.attrs)
    for name in out.variables:
        out[name].attrs = _attrs(out[name].attrs)
        out[name].encoding = {}
    return _strings_out(out)


def stream_create(piece: xr.Dataset, path: str | os.PathLike[str], time_chunks: Mapping[str, int]) -> None:
    """Start a streamed run's store at ``path`` (a temporary folder) with its first piece.

    ``time_chunks`` gives each variable's zarr chunk length along ``time`` (the other dims whole).
    """
    _zarr()
    ready = _stream_ready(piece)
    encoding = {
        str(name): {
            "chunks": tuple(int(time_chunks[str(name)]) if d == "time" else ready.sizes[d] for d in ready[name].dims)
        }
        for name in ready.data_vars
        if str(name) in time_chunks
    }
    with _quiet():
        ready.to_zarr(path, mode="w", consolidated=False, encoding=encoding)


def stream_append(piece: xr.Dataset, path: str | os.PathLike[str]) -> None:
    """Append a piece (only variables along ``time``, as the first piece had them) to a streamed store."""
    with _quiet():
        _stream_ready(piece).to_zarr(path, append_dim="time", consolidated=False)


def stream_finish(
    tmp: str | os.PathLike[str],
    path: str | os.PathLike[str],
    attrs: Mapping[str, Any],
    variable_attrs: Mapping[str, Mapping[str, Any]],
) -> Path:
    """Set a streamed store's attrs (``attrs`` replace the group's) and move it into place at ``path``."""
    zarr = _zarr()
    group = zarr.open_group(str(tmp), mode="r+")
    group.attrs.clear()
    group.attrs.update(_attrs(attrs))
    for name, extra in variable_attrs.items():
        if name in group:
            group[name].attrs.update(_attrs(extra))
    return _swap_into_place(Path(tmp), Path(path))
