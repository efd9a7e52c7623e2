"""Saving and loading mechlens Datasets as netCDF4.

``save`` writes atomically (a temporary file beside the target, then a rename), so an interrupted
run never leaves a truncated file and never destroys the previous one; Ctrl-C or SIGTERM during the
write is held until the netCDF library has closed the file, then the temporary file is removed and
the signal acts (see docs/reliability.md). Float data are stored as compressed float32; attrs are
made netCDF-safe (None, bools, dicts and lists of non-numbers become JSON strings or ints) and laid
out for CF-1.11 and ACDD-1.3, provenance grouped per stage (:mod:`mechlens.compliance`). ``load``
gives back the flat attrs of docs/contract.md, validates what it reads and explains what is wrong
with a bad file. ``check_output`` refuses, before
any work, an output path that cannot be written.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import xarray as xr

import mechlens.compliance as compliance
from mechlens import schema
from mechlens.errors import FileFormatError, MechlensError, SchemaError, UsageError

#: the conventions every file follows (``mechlens.compliance``); kept here for callers of mechlens.io
CONVENTIONS = compliance.CONVENTIONS
safe_attr = compliance.safe_attr
_safe_attrs = compliance.safe_attrs
file_attrs = compliance.file_attrs
memory_attrs = compliance.memory_attrs


def prepare(ds: xr.Dataset) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """A copy of ``ds`` ready for netCDF, and its encoding.

    Float data variables are stored as zlib-compressed float32; coordinate variables get no
    ``_FillValue`` (CF 2.5.1); ``condition`` is made the leading dim of every variable that has it
    (docs/contract.md); every variable gets ``long_name``, ``units`` where known and an ACDD
    ``coverage_content_type``; the global attrs are laid out by :func:`file_attrs`.
    """
    out = ds.copy()
    for name in list(out.data_vars):
        dims = out[name].dims
        if "condition" in dims and dims[0] != "condition":
            out[name] = out[name].transpose("condition", ...)
    out.attrs = file_attrs(out.attrs, out)
    encoding: dict[str, dict[str, Any]] = {}
    for name in list(out.variables):
        var = out[name]
        var.attrs = _safe_attrs(var.attrs)
        if var.dtype.kind == "b":
            out[name] = var.astype(np.int8)
        elif var.dtype.kind == "O" or var.dtype.kind == "U":
            out[name] = var.astype(str)
        is_coord = name in out.coords
        out[name].attrs.update(compliance.variable_attrs(str(name), out[name], is_coord))
        if not is_coord:
            enc: dict[str, Any] = {}
            if out[name].dtype.kind == "f":
                enc.update(dtype="float32", zlib=True, complevel=4)
            elif out[name].dtype.kind in "iu":
                enc.update(zlib=True, complevel=4)
            encoding[str(name)] = enc
        else:
            # CF 2.5.1: coordinate variables hold no missing values, so they carry no _FillValue
            encoding[str(name)] = {"_FillValue": None}
    # MultiIndex coords cannot be written to netCDF
    for idx in list(out.indexes):
        if out.indexes[idx].nlevels > 1:
            out = out.reset_index(idx)
            encoding = {k: v for k, v in encoding.items() if k in out.variables}
    return out, encoding


class WriteError(MechlensError, OSError):
    """Writing a file failed for a reason outside mechlens (a full disk); the CLI exits 1 with its message.

    It is an :class:`OSError` too, with ``errno`` set (``errno.ENOSPC`` for a full disk), so callers
    that handle OSError keep working.
    """


#: below this many free bytes a failed write is blamed on a full disk: HDF5 writes in chunks of a
#: few MiB at most, so a write that ran out of space leaves less than that free
FULL_DISK_BYTES = 16 * 2**20

#: the signals :func:`save` holds while the netCDF library has the file open
DEFERRED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))


def _file_mode() -> int:
    """The mode a plain ``open()`` would give a new file under the current umask (0644 under 022)."""
    # os.umask is the only portable way to read the umask; set it back at once
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _free_bytes(folder: Path) -> int | None:
    """Bytes free to this user in ``folder``'s filesystem, or None when that cannot be told."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _write_error(err: BaseException, path: Path) -> BaseException:
    """``err`` from writing ``path``, or a :class:`WriteError` naming a full disk when that is the cause.

    netCDF reports a full disk as ``RuntimeError: NetCDF: HDF error`` (the errno is lost inside
    HDF5), so the free space is measured before the partial temporary file is removed.
    """
    code = getattr(err, "errno", None)
    if code not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        free = _free_bytes(path.parent)
        if free is None or free >= FULL_DISK_BYTES or isinstance(err, KeyboardInterrupt):
            return err
        code = errno.ENOSPC
    what = "no space left on device" if code == errno.ENOSPC else "disk quota exceeded"
    out = WriteError(
        f"{path}: {what} ({type(err).__name__}: {err}); nothing was written and any previous file is intact; "
        "free some space or write elsewhere with -o"
    )
    out.errno = code
    return out


class _HeldSignals:
    """Hold SIGINT/SIGTERM in the main thread while a C library holds a file open, and replay them after.

    A KeyboardInterrupt raised inside xarray's netCDF writer can fire between acquiring and entering
    its HDF5 lock; closing the file then waits on that lock forever (issue 22: Ctrl-C left the CLI
    blocked with a half-written temporary file). So the handlers only record the signal; once the
    library has closed the file the caller removes its temporary file and calls :meth:`replay`,
    which hands the signal to the handler that was installed before (KeyboardInterrupt for SIGINT,
    the default action, or a program's own handler). A second signal while held means the user will
    not wait: the temporary file is removed and the process exits at once (128 + signal number).
    Outside the main thread nothing is held (Python delivers signals to the main thread only).
    """

    def __init__(self) -> None:
        self.pending: int | None = None
        self.previous: dict[int, Any] = {}
        self.temporary: Path | None = None

    def __enter__(self) -> _HeldSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in DEFERRED_SIGNALS:
            previous = signal.getsignal(sig)
            if previous == signal.SIG_IGN:
                continue
            self.previous[sig] = previous
            signal.signal(sig, self._record)
        return self

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.pending is not None:
            if self.temporary is not None:
                with contextlib.suppress(OSError):
                    self.temporary.unlink()
            with contextlib.suppress(OSError, ValueError):
                sys.stdout.flush()
            with contextlib.suppress(OSError):
                os.write(2, b"mechlens: interrupted again while writing; quit without finishing the file\n")
            os._exit(128 + signum)
        self.pending = signum

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self.previous.items():
            # getsignal gives None for a handler not installed from Python; SIG_DFL is the closest
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)

    def replay(self) -> None:
        """Act on a held signal as its previous handler would have (call only after ``__exit__``)."""
        if self.pending is None:
            return
        signum, self.pending = self.pending, None
        previous = self.previous.get(signum)
        if callable(previous):
            previous(signum, None)
            return
        if previous in (None, signal.SIG_DFL):
            os.kill(os.getpid(), signum)  # the default action, now that nothing is half-written
        if signum == getattr(signal, "SIGINT", None):
            raise KeyboardInterrupt


#: numeric data variables bigger than this are written block by block, each block whole HDF5 chunks, so
#: that a held Ctrl-C stops the write within one block instead of after the whole variable
BLOCK_BYTES = 8 * 2**20

#: attrs that make xarray transform the data on writing; such variables are written by xarray whole
_CF_DATA_ATTRS = ("_FillValue", "missing_value", "scale_factor", "add_offset", "calendar")


def _set_aside(out: xr.Dataset) -> tuple[xr.Dataset, dict[str, np.ndarray]]:
    """``out`` with each big numeric data variable replaced by a constant of its shape, and their data.

    xarray then creates those variables exactly as it would (dtype, compression, chunking, attrs) at
    the cost of compressing a constant; :func:`_write_blocks` writes the data afterwards.
    """
    later: dict[str, np.ndarray] = {}
    for name in list(out.data_vars):
        var = out[name]
        if var.ndim == 0 or var.dtype.kind not in "fiu" or var.nbytes <= BLOCK_BYTES:
            continue
        if any(key in var.attrs for key in _CF_DATA_ATTRS):
            continue
        data = np.asarray(var.values)
        later[str(name)] = data
        fill = np.asarray(np.nan if data.dtype.kind == "f" else 0, dtype=data.dtype)
        # a bare Variable: assigning a DataArray would re-check its coords against out's, at length of time
        out[name] = xr.Variable(var.dims, np.broadcast_to(fill, data.shape), var.attrs)
    return out, later


def _blocks(shape: tuple[int, ...], chunks: list[int], itemsize: int) -> Iterator[tuple[slice, ...]]:
    """Slices that cover an array of ``shape`` in blocks of whole chunks, each about BLOCK_BYTES or less.

    A block is one chunk along axes ``0..k`` and the whole extent along the later axes, with ``k``
    the first axis for which that fits the budget (the last axis, one chunk, when nothing does).
    Whole chunks matter: a partly written compressed chunk would be read back and recompressed.
    """
    n = len(shape)
    chunks = [min(max(1, c), s) if s else 1 for c, s in zip(chunks, shape)]
    k = n - 1
    for axis in range(n):
        size = itemsize * math.prod(chunks[: axis + 1]) * math.prod(shape[axis + 1 :])
        if size <= BLOCK_BYTES:
            k = axis
            break
    starts = [range(0, shape[j], chunks[j]) for j in range(k + 1)]
    for first in itertools.product(*starts):
        head = tuple(slice(s, min(s + chunks[j], shape[j])) for j, s in enumerate(first))
        yield head + (slice(None),) * (n - k - 1)


def _write_blocks(path: Path, later: Mapping[str, np.ndarray], held: _HeldSignals) -> None:
    """Write the data set aside by :func:`_set_aside` into ``path``, stopping between blocks on a held signal."""
    if not later:
        return
    import netCDF4

    lock: Any = contextlib.nullcontext()
    with contextlib.suppress(ImportError):  # the lock xarray takes around netCDF calls (netCDF-C is not thread-safe)
        from xarray.backends.netCDF4_ import NETCDF4_PYTHON_LOCK as lock
    with lock, netCDF4.Dataset(path, "a") as nc:
        for name, data in later.items():
            var = nc.variables[name]
            var.set_auto_maskandscale(False)  # the data are already what xarray would store
            # no chunk cache: cached chunks would be compressed on close, after a held signal too
            var.set_var_chunk_cache(size=0)
            chunking = var.chunking()
            chunks = list(data.shape) if chunking == "contiguous" else [int(c) for c in chunking]
            for block in _blocks(data.shape, chunks, data.dtype.itemsize):
                if held.pending is not None:
                    return
                var[block] = np.asarray(data[block], dtype=var.dtype)


def check_output(path: str | os.PathLike[str], *, folder: bool, option: str = "-o") -> Path:
    """Refuse, before any work, an output that cannot be written.

    Parameters
    ----------
    path : path-like
        The output: a file (``folder=False``) or a folder that files are written into.
    folder : bool
        Whether ``path`` is a folder. A folder named ``*.nc`` is refused (it is surely meant as a
        file), and so is an existing directory given as a file.
    option : str
        The command-line option that named it, for the message.

    Returns
    -------
    pathlib.Path
        ``path``. Missing folders are not created here; they are created when writing.

    Raises
    ------
    UsageError
        What is wrong with the path and how to fix it.
    """
    path = Path(path)
    where = f"{option} {path}"
    if folder and path.suffix == ".nc":
        raise UsageError(
            f"{where}: names a .nc file, but a folder is expected here (report.html and figures/ go into it); "
            "give a directory, e.g. -o results"
        )
    try:
        if folder and path.exists() and not path.is_dir():
            raise UsageError(f"{where}: exists and is not a directory; give a directory, e.g. -o results")
        if not folder and path.is_dir() and path.suffix != ".zarr":  # a .zarr store is a folder (zarrstore)
            raise UsageError(f"{where}: is a directory; give a file name, e.g. -o {path / 'result.nc'}")
        # the nearest folder that exists: the missing ones below it are created when writing
        probe = Path(os.path.abspath(path if folder else path.parent))
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise UsageError(f"{where}: {probe} is a file, not a folder; choose another {option}")
        # os.access is wrong for root and for read-only mounts: create (and remove) a file to know
        fd, name = tempfile.mkstemp(prefix=".mechlens-write-check.", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise UsageError(
            f"{where}: cannot write there ({err.strerror or err}); choose a writable place with {option} "
            "or fix the folder's permissions"
        ) from None
    return path


def save(ds: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write ``ds`` to a netCDF4 file atomically.

    The data go to a temporary file beside the target, which is renamed over it only once complete;
    the new file gets the mode a plain ``open()`` would give (0644 under umask 022). SIGINT and
    SIGTERM arriving while the netCDF library holds the file (main thread only) are held until it
    has closed it; then the temporary file is removed, the target is left as it was, and the signal
    acts (KeyboardInterrupt for Ctrl-C). A second such signal quits at once.

    Parameters
    ----------
    ds : xarray.Dataset
        Any mechlens Dataset.
    path : path-like
        Target file; its folder is created if missing. An existing file is replaced only once the new
        one is completely written.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    WriteError
        The disk is full (``errno.ENOSPC``); nothing was written.
    """
    path = Path(path)
    if path.suffix == ".zarr":  # a zarr store instead (mechlens.zarrstore, the optional extra mechlens[scale])
        from mechlens import zarrstore

        return zarrstore.save(prepare(ds)[0], path)  # netCDF-safe attrs and types; no netCDF encoding
    path.parent.mkdir(parents=True, exist_ok=True)
    out, encoding = prepare(ds)
    out, later = _set_aside(out)
    held = _HeldSignals()
    with held:
        tmp: Path | None = None
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            tmp = held.temporary = Path(tmp_name)
            os.close(fd)
            out.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=encoding)
            _write_blocks(tmp, later, held)
            if held.pending is None:
                # mkstemp made the file private (0600); a result file is as readable as any other
                os.chmod(tmp, _file_mode())
                os.replace(tmp, path)
        except BaseException as err:
            mapped = _write_error(err, path) if held.pending is None else err
            if tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            if held.pending is None:
                if mapped is err:
                    raise
                raise mapped from err
        if held.pending is not None and tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    held.replay()
    return path


def _stages_present(ds: xr.Dataset) -> list[str]:
    key_vars = {"stimulus": "stimulus", "attribution": "attribution", "reduction": "weights"}
    found = [stage for stage, var in key_vars.items() if var in ds.data_vars]
    if "response" in ds.data_vars and "attribution" not in found:
        found.append("response")
    return found


def _load_netcdf(path: Path, chunks: Any) -> xr.Dataset:
    try:
        if chunks is None:
            return xr.load_dataset(path, engine="netcdf4")
        return xr.open_dataset(path, engine="netcdf4", chunks=chunks)
    except Exception as err:
        if isinstance(err, (ImportError, ValueError)) and "dask" in str(err).lower():
            raise UsageError(f"reading {path} lazily (chunks=) needs dask: pip install 'mechlens[scale]'") from None
        raise FileFormatError(
            f"{path}: cannot be read as netCDF ({type(err).__name__}: {err}); the file is corrupt, truncated, "
            "or not a netCDF file"
        ) from err


def load(path: str | os.PathLike[str], validate: bool = True, chunks: Any = None) -> xr.Dataset:
    """Read a Dataset written by :func:`save` into memory (or lazily, with ``chunks``) and check it.

    Parameters
    ----------
    path : path-like
        A netCDF file or a ``*.zarr`` store written by mechlens.
    validate : bool
        Check the stage schemas of the variables present.
    chunks : dict, int or "auto", optional
        Open lazily, dask-backed, with these chunks (``{}``: the file's own); default: read into memory.

    Raises
    ------
    FileFormatError
        The file is missing, not netCDF, corrupt, not written by mechlens, or malformed.
    """
    path = Path(path)
    if not path.exists():
        raise FileFormatError(f"{path}: no such file")
    from mechlens import zarrstore

    if path.is_dir() and (zarrstore.is_store(path) or (path / zarrstore.PROGRESS).exists()):
        ds = zarrstore.open_store(path, chunks)
    elif path.is_dir():
        raise FileFormatError(f"{path}: is a directory, expected a netCDF file or a zarr store")
    else:
        ds = _load_netcdf(path, chunks)
    # back to the flat names of docs/contract.md, which every reader uses (files before the layout are flat)
    ds.attrs = memory_attrs(ds.attrs)
    if "mechlens_version" not in ds.attrs:
        raise FileFormatError(
            f"{path}: is netCDF but was not written by mechlens (no 'mechlens_version' attr); "
            "mechlens reads only files that mechlens wrote"
        )
    if validate:
        for stage in _stages_present(ds):
            part = ds
            if stage in ("response", "attribution"):
                # merged files pad per-time variables with NaN over the stimulus's history frames
                part = ds.dropna("time", how="all", subset=["response"]) if "response" in ds else ds
            try:
                schema.validate(part, stage, source=str(path))
            except SchemaError as err:
                raise FileFormatError(str(err)) from err
    return ds


def parameters(ds: xr.Dataset, stage: str) -> dict[str, Any]:
    """The parameters of a stage (``"stimulus"``, ``"model"``, ...) recorded in a Dataset's attrs."""
    raw = ds.attrs.get(f"{stage}_parameters", "{}")
    try:
        return dict(json.loads(raw))
    except (TypeError, ValueError) as err:
        raise FileFormatError(f"attr {stage}_parameters is not valid JSON: {raw!r}") from err


#: the entry of a ``.safetensors`` checkpoint's header metadata that holds mechlens's JSON metadata
SAFETENSORS_METADATA_KEY = "mechlens"


def read_safetensors_metadata(
    path: str | os.PathLike[str],
    key: str = SAFETENSORS_METADATA_KEY,
    *,
    error: type[MechlensError] = FileFormatError,
    writer: str = "a mechlens model",
) -> tuple[Any, dict[str, tuple[int, ...]]]:
    """The JSON metadata and the tensor shapes of a ``.safetensors`` checkpoint, reading no tensor data.

    Parameters
    ----------
    path : path
        A ``*.safetensors`` file.
    key : str
        The entry of the header's metadata that holds the JSON metadata.
    error : type
        The :class:`MechlensError` raised when the file is missing, is not safetensors, has no ``key``
        entry, or that entry is not JSON; its message names the file, what is wrong and what to give.
    writer : str
        What writes such checkpoints, for the messages (``"RetinaCNN.save"``).

    Returns
    -------
    metadata : JSON value
        The parsed ``key`` entry, not validated (the caller checks that it is the metadata it expects).
    shapes : dict of str to tuple of int
        Every tensor's shape, by name.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise error(f"checkpoint {path} not found; give a .safetensors file written by {writer}")
    try:
        # safe_open reads and checks the header only (size, JSON, byte ranges); tensors stay on disk
        with safe_open(str(path), framework="numpy") as fh:
            header = fh.metadata() or {}
            shapes = {name: tuple(int(d) for d in fh.get_slice(name).get_shape()) for name in fh.keys()}
    except (OSError, SafetensorError) as err:
        raise error(
            f"checkpoint {path} is not a readable safetensors file ({err}); it is damaged or not a checkpoint"
        ) from None
    text = header.get(key)
    if text is None:
        raise error(
            f"checkpoint {path} has no mechlens metadata (no {key!r} entry in its safetensors header); "
            f"it was not written by {writer}"
        )
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"checkpoint {path}: its mechlens metadata is not valid JSON ({err})") from None
    return meta, shapes
