"""Writing a streamed run's result piece by piece: netCDF (appended along ``time``) or a zarr store.

A streamed run (:mod:`mechlens.streaming`) hands its sink one piece per chunk of the movie: the
merged Dataset of that chunk's time points (the first piece also holds every variable without a
``time`` dim, and the attrs). The sink appends each piece along ``time`` and forgets it, so its
memory does not grow with the movie.

Why appending (and not a file pre-created at its full length, written region by region): the
pieces' variables and the ``time`` coordinate are known only once the plugins have produced them
(an attributor may add per-time variables of its own), so the file is created from the first piece
and grows with each chunk; one code path serves both formats.

- ``*.nc``: the first piece is written by xarray with ``time`` as netCDF4's unlimited dimension
  (float data as compressed float32, attrs made netCDF-safe by :func:`mechlens.io.prepare`, as
  :func:`mechlens.io.save` writes them); later pieces are appended with netCDF4 directly.
- ``*.zarr``: the store is created from the first piece and later pieces are appended with
  ``to_zarr(append_dim="time")`` (:func:`mechlens.zarrstore.stream_create`).

Both are written beside the target (``.NAME.XXXX.tmp``) and renamed into place only when the run
has finished (:meth:`Sink.finish`), as ``io.save`` does: an interrupted or refused run (``--strict``)
leaves the previous file intact and no temporary one (:meth:`Sink.abort`). A streamed run is not
resumable: started again, it starts afresh. A later piece that lacks a per-time variable of the
first gets NaN there (0 for integer flags). When every chunk is written, the reducer's input is read
back without the movie (:meth:`Sink.read_back`) and its output added to the file whole (:meth:`Sink.add`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from mechlens import io, zarrstore
from mechlens.errors import PluginError, UsageError

#: bytes per chunk of a variable along ``time`` in the file (HDF5 or zarr chunks), at most
FILE_CHUNK_BYTES = 1 << 20
#: HDF5 chunk cache per variable while appending: a few chunks (a piece's last, partial chunk is
#: completed by the next piece)
CACHE_BYTES = 4 * FILE_CHUNK_BYTES


def _file_mode() -> int:
    """The mode a plain ``open()`` would give a new file under the current umask."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


class Sink:
    """Where a streamed run writes (see the module doc); make one with :func:`open_sink`.

    Attributes
    ----------
    path : Path
        The target.
    extra_attrs : dict
        Attrs added to the result (``mechlens run`` adds ``history``, its command line).
    written : bool
        Whether a streamed run has finished writing ``path`` (the caller then saves nothing).
    """

    def __init__(self, path: str | os.PathLike[str], extra_attrs: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.extra_attrs = dict(extra_attrs or {})
        self.written = False
        self.tmp: Path | None = None
        self.n_time = 0
        #: per-time variables of the first piece: name -> (dims, dtype, sizes of the other dims)
        self.template: dict[str, tuple[tuple[str, ...], np.dtype[Any], dict[str, int]]] = {}
        self.first_attrs: dict[str, Any] = {}
        self.first_names: list[str] = []
        self.first_variable_attrs: dict[str, dict[str, Any]] = {}

    # -- the interface mechlens.streaming uses ------------------------------------------------------
    def write(self, piece: xr.Dataset) -> None:
        """Append one piece (the first creates the file)."""
        if self.tmp is None:
            piece = piece.copy()
            piece.attrs.update(self.extra_attrs)
            prepared, encoding = io.prepare(piece)
            self.template = {
                str(name): (
                    tuple(str(d) for d in var.dims),
                    var.dtype,
                    {str(d): int(n) for d, n in var.sizes.items() if d != "time"},
                )
                for name, var in prepared.variables.items()
                if "time" in var.dims and name != "time"
            }
            # kept to lay out the file's attrs again at the end (with the whole run's completeness numbers), and
            # because appending to a zarr store rewrites the attrs with the piece's
            self.first_attrs = dict(piece.attrs)
            self.first_names = [str(k) for k in piece.data_vars]
            self.first_variable_attrs = {str(k): dict(v.attrs) for k, v in prepared.variables.items()}
            self._create(prepared, encoding, self._time_chunks(prepared))
        else:
            prepared, _ = io.prepare(self._conform(piece))
            self._append(prepared)
        self.n_time += int(piece.sizes.get("time", 0))

    def finish(self, attrs: Mapping[str, Any], variable_attrs: Mapping[str, Mapping[str, Any]]) -> Path:
        """Add the final attrs, move the file into place, and mark it written."""
        raise NotImplementedError

    def read_back(self, drop: Sequence[str] = ()) -> xr.Dataset:
        """What was written so far, without the variables ``drop``, read into memory (the reducer's input).

        The attrs are those a finished file would give :func:`mechlens.io.load`.
        """
        assert self.tmp is not None
        with self._open_written() as ds:
            out = ds.drop_vars([n for n in drop if n in ds.variables]).load()
        out.attrs = io.memory_attrs(out.attrs)
        return out

    def add(self, ds: xr.Dataset) -> None:
        """Add new variables (the reduction's) to the unfinished file: along ``time`` they span it whole.

        Variables (and coords) the file already holds are left as written.
        """
        assert self.tmp is not None
        prepared, encoding = io.prepare(ds)
        prepared.attrs = {}
        with self._open_written() as written:
            held = {str(n) for n in written.variables}
        new = [str(n) for n in prepared.variables if str(n) not in held]
        prepared = prepared[[n for n in new if n in prepared.data_vars]]
        prepared = prepared.drop_vars([n for n in prepared.coords if str(n) not in new])
        self.first_names += [str(n) for n in prepared.data_vars]
        self.first_variable_attrs.update({str(k): dict(v.attrs) for k, v in prepared.variables.items()})
        self._add(prepared, {k: v for k, v in encoding.items() if k in prepared.variables})

    def _open_written(self) -> xr.Dataset:
        raise NotImplementedError

    def _add(self, prepared: xr.Dataset, encoding: dict[str, dict[str, Any]]) -> None:
        raise NotImplementedError

    def file_attrs(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """The global attrs: the first piece's and ``attrs``, laid out as :func:`mechlens.io.save` lays them out."""
        skeleton = xr.Dataset({name: xr.Variable((), 0.0) for name in self.first_names})
        skeleton.attrs = {**self.first_attrs, **attrs}
        return dict(io.prepare(skeleton)[0].attrs)

    def abort(self) -> None:
        """Remove the temporary file of an unfinished run (the target is left as it was)."""
        raise NotImplementedError

    def open(self) -> xr.Dataset:
        """The written result, opened lazily (nothing read into memory)."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------
    def _time_chunks(self, ds: xr.Dataset) -> dict[str, int]:
        """File chunk length along ``time`` per variable: about :data:`FILE_CHUNK_BYTES` per chunk."""
        out: dict[str, int] = {}
        for name in ds.data_vars:
            var = ds[name]
            if "time" not in var.dims:
                continue
            row = max(1, int(var.dtype.itemsize) * int(np.prod([n for d, n in var.sizes.items() if d != "time"])))
            out[str(name)] = int(max(1, min(max(1, ds.sizes["time"]), FILE_CHUNK_BYTES // row)))
        return out

    def _conform(self, piece: xr.Dataset) -> xr.Dataset:
        """A later piece with exactly the first piece's per-time variables (missing ones filled)."""
        n = int(piece.sizes["time"])
        data: dict[str, xr.Variable] = {}
        for name, (dims, dtype, sizes) in self.template.items():
            if name in piece.variables:
                var = piece[name].variable
                got = {d: int(k) for d, k in var.sizes.items() if d != "time"}
                if set(var.dims) != set(dims) or got != sizes:
                    raise PluginError(
                        f"streamed run: {name!r} has dims {dict(var.sizes)} in a later chunk, but "
                        f"{dims} with sizes {sizes} in the first; a plugin returned inconsistent chunks"
                    )
                data[name] = var.transpose(*dims)
            else:
                shape = tuple(n if d == "time" else sizes[d] for d in dims)
                fill = np.nan if dtype.kind == "f" else 0
                data[name] = xr.Variable(dims, np.full(shape, fill, dtype=dtype))
        return xr.Dataset(
            {k: v for k, v in data.items() if k not in piece.coords},
            coords={"time": piece["time"], **{k: v for k, v in data.items() if k in piece.coords}},
        )

    def _create(self, prepared: xr.Dataset, encoding: dict[str, dict[str, Any]], chunks: dict[str, int]) -> None:
        raise NotImplementedError

    def _append(self, prepared: xr.Dataset) -> None:
        raise NotImplementedError


class NetCDFSink(Sink):
    """A netCDF4 file with an unlimited ``time`` dim, appended chunk by chunk (see the module doc)."""

    _nc: Any = None

    def _create(self, prepared: xr.Dataset, encoding: dict[str, dict[str, Any]], chunks: dict[str, int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(name)
        for var, length in chunks.items():
            dims = prepared[var].dims
            encoding.setdefault(var, {})["chunksizes"] = tuple(
                length if d == "time" else prepared.sizes[d] for d in dims
            )
        prepared.to_netcdf(self.tmp, engine="netcdf4", format="NETCDF4", encoding=encoding, unlimited_dims=["time"])

    def _append(self, prepared: xr.Dataset) -> None:
        import netCDF4

        assert self.tmp is not None
        if self._nc is None:
            self._nc = netCDF4.Dataset(self.tmp, "a")
            for name in ("time", *self.template):
                # a small cache: netCDF's default (up to tens of MiB per variable) fills up as the file grows,
                # so the memory would grow with the movie until it is full
                self._nc.variables[name].set_var_chunk_cache(size=CACHE_BYTES)
        nc = self._nc
        start, n = len(nc.dimensions["time"]), int(prepared.sizes["time"])
        for name in ("time", *self.template):
            var = nc.variables[name]
            var.set_auto_maskandscale(False)  # the values are already what xarray would store (NaN as NaN)
            values = prepared[name].transpose(*var.dimensions).values
            where = tuple(slice(start, start + n) if d == "time" else slice(None) for d in var.dimensions)
            var[where] = np.asarray(values, dtype=var.dtype)

    def _close(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(RuntimeError):
                self._nc.close()
            self._nc = None

    def finish(self, attrs: Mapping[str, Any], variable_attrs: Mapping[str, Mapping[str, Any]]) -> Path:
        import netCDF4

        assert self.tmp is not None
        self._close()
        every = self.file_attrs(attrs)
        with netCDF4.Dataset(self.tmp, "a") as nc:
            for key in nc.ncattrs():
                if key not in every:
                    nc.delncattr(key)
            for key, value in every.items():
                nc.setncattr(str(key), io.safe_attr(value))
            for name, extra in variable_attrs.items():
                if name in nc.variables:
                    for key, value in extra.items():
                        nc.variables[name].setncattr(str(key), io.safe_attr(value))
        os.chmod(self.tmp, _file_mode())
        os.replace(self.tmp, self.path)
        self.tmp, self.written = None, True
        return self.path

    def _open_written(self) -> xr.Dataset:
        assert self.tmp is not None
        self._close()  # the appending handle: netCDF4 allows one writer and no reader beside it
        return xr.open_dataset(self.tmp, engine="netcdf4")

    def _add(self, prepared: xr.Dataset, encoding: dict[str, dict[str, Any]]) -> None:
        assert self.tmp is not None
        self._close()
        prepared.to_netcdf(self.tmp, mode="a", engine="netcdf4", format="NETCDF4", encoding=encoding)

    def abort(self) -> None:
        self._close()
        if self.tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()
            self.tmp = None

    def open(self) -> xr.Dataset:
        try:
            return io.load(self.path, validate=False, chunks={})
        except UsageError:  # no dask: xarray's own lazy arrays, the attrs as stored
            return xr.open_dataset(self.path, engine="netcdf4")


class ZarrSink(Sink):
    """A zarr store appended along ``time`` chunk by chunk (:func:`mechlens.zarrstore.stream_create`)."""

    def _create(self, prepared: xr.Dataset, encoding: dict[str, dict[str, Any]], chunks: dict[str, int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent))
        zarrstore.stream_create(prepared, self.tmp, chunks)

    def _append(self, prepared: xr.Dataset) -> None:
        assert self.tmp is not None
        zarrstore.stream_append(prepared, self.tmp)

    def finish(self, attrs: Mapping[str, Any], variable_attrs: Mapping[str, Mapping[str, Any]]) -> Path:
        assert self.tmp is not None
        every = {k: {**v, **dict(variable_attrs.get(k, {}))} for k, v in self.first_variable_attrs.items()}
        zarrstore.stream_finish(self.tmp, self.path, self.file_attrs(attrs), every)
        self.tmp, self.written = None, True
        return self.path

    def _open_written(self) -> xr.Dataset:
        assert self.tmp is not None
        # the store's own reader wants a finished store; the zarr layout is zarrstore's (its helpers, used as it does)
        with zarrstore._quiet():
            ds = xr.open_zarr(self.tmp, consolidated=False, chunks=None)
        return zarrstore._strings_in(ds)

    def _add(self, prepared: xr.Dataset, encoding: dict[str, dict[str, Any]]) -> None:
        assert self.tmp is not None
        with zarrstore._quiet():
            zarrstore._stream_ready(prepared).to_zarr(self.tmp, mode="a", consolidated=False)

    def abort(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def open(self) -> xr.Dataset:
        return io.load(self.path, validate=False, chunks={})


def open_sink(path: str | os.PathLike[str], extra_attrs: Mapping[str, Any] | None = None) -> Sink:
    """A sink for ``path``: a zarr store for ``*.zarr``, else a netCDF4 file.

    Parameters
    ----------
    path : path-like
        The output (checked beforehand with :func:`mechlens.io.check_output`).
    extra_attrs : mapping, optional
        Attrs added to the result (``history``).
    """
    if zarrstore.is_store(path) or Path(path).suffix == ".zarr":
        return ZarrSink(path, extra_attrs)
    return NetCDFSink(path, extra_attrs)
