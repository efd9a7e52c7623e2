"""Saving and loading mechlens Datasets as netCDF4.

``save`` writes atomically (a temporary file beside the target, then a rename), so an interrupted
run never leaves a truncated file and never destroys the previous one. Float data are stored as
compressed float32; attrs are made netCDF-safe (None, bools, dicts and lists of non-numbers become
JSON strings or ints). ``load`` validates what it reads and explains what is wrong with a bad file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from mechlens import schema
from mechlens.errors import FileFormatError, SchemaError

#: global attrs every file carries (CF / ACDD conventions)
CONVENTIONS = "CF-1.11"
REFERENCES = (
    "Tanaka et al. 2019, From deep learning to mechanistic understanding in neuroscience: "
    "the structure of retinal prediction, NeurIPS, arXiv:1912.06207"
)


def safe_attr(value: Any) -> Any:
    """Convert an attr value to a type netCDF4 accepts.

    None becomes ``""``, a bool 0/1, a dict or a list holding non-numbers a JSON string, a Path a str.
    """
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray) and value.dtype.kind in "iuf":
        return value
    if (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in value)
    ):
        return np.asarray(value)
    return json.dumps(value, default=str, sort_keys=True)


def _safe_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k): safe_attr(v) for k, v in attrs.items()}


def prepare(ds: xr.Dataset) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """A copy of ``ds`` ready for netCDF, and its encoding (float32 + zlib for float data variables)."""
    out = ds.copy()
    out.attrs = _safe_attrs(out.attrs)
    out.attrs.setdefault("Conventions", CONVENTIONS)
    out.attrs.setdefault("references", REFERENCES)
    out.attrs.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    from mechlens import __version__

    out.attrs.setdefault("mechlens_version", __version__)
    encoding: dict[str, dict[str, Any]] = {}
    for name in list(out.variables):
        var = out[name]
        var.attrs = _safe_attrs(var.attrs)
        if var.dtype.kind == "b":
            out[name] = var.astype(np.int8)
        elif var.dtype.kind == "O" or var.dtype.kind == "U":
            out[name] = var.astype(str)
        if name in out.data_vars:
            enc: dict[str, Any] = {}
            if out[name].dtype.kind == "f":
                enc.update(dtype="float32", zlib=True, complevel=4)
            elif out[name].dtype.kind in "iu":
                enc.update(zlib=True, complevel=4)
            encoding[name] = enc
    # MultiIndex coords cannot be written to netCDF
    for idx in list(out.indexes):
        if out.indexes[idx].nlevels > 1:
            out = out.reset_index(idx)
    return out, encoding


def save(ds: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write ``ds`` to a netCDF4 file atomically.

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
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out, encoding = prepare(ds)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        out.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=encoding)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return path


def _stages_present(ds: xr.Dataset) -> list[str]:
    key_vars = {"stimulus": "stimulus", "attribution": "attribution", "reduction": "weights"}
    found = [stage for stage, var in key_vars.items() if var in ds.data_vars]
    if "response" in ds.data_vars and "attribution" not in found:
        found.append("response")
    return found


def load(path: str | os.PathLike[str], validate: bool = True) -> xr.Dataset:
    """Read a Dataset written by :func:`save` into memory and check it.

    Parameters
    ----------
    path : path-like
        A netCDF file written by mechlens.
    validate : bool
        Check the stage schemas of the variables present.

    Raises
    ------
    FileFormatError
        The file is missing, not netCDF, corrupt, not written by mechlens, or malformed.
    """
    path = Path(path)
    if not path.exists():
        raise FileFormatError(f"{path}: no such file")
    if path.is_dir():
        raise FileFormatError(f"{path}: is a directory, expected a netCDF file")
    try:
        ds = xr.load_dataset(path, engine="netcdf4")
    except Exception as err:
        raise FileFormatError(
            f"{path}: cannot be read as netCDF ({type(err).__name__}: {err}); the file is corrupt, truncated, "
            "or not a netCDF file"
        ) from err
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
