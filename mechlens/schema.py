"""Validators for the Dataset each pipeline stage produces (docs/contract.md, 'Stage outputs').

Every per-time variable may carry a leading ``condition`` dim (a swept stimulus parameter).
The pipeline calls :func:`validate` at every stage boundary with ``source`` naming the plugin, so a
plugin returning a malformed Dataset fails with a message saying which plugin and what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from mechlens.errors import SchemaError

#: the unit dims of an attribution or a reduction, channel first (docs/contract.md, "Datasets")
UNIT_DIMS = ("unit_channel", "unit_y", "unit_x")


@dataclass(frozen=True)
class VarSpec:
    """A required (or optional) variable.

    Attributes
    ----------
    dims : tuple of str
        The dims in order; ``condition`` may precede them.
    optional_dims : tuple of str
        Dims that may also appear (after the required ones), e.g. ``unit_y``, ``unit_x``.
    required : bool
        Whether the variable must be present.
    """

    dims: tuple[str, ...]
    optional_dims: tuple[str, ...] = ()
    required: bool = True


@dataclass(frozen=True)
class StageSpec:
    """What one stage's output must contain."""

    variables: dict[str, VarSpec]
    attrs: tuple[str, ...] = ()
    coord_units: dict[str, str] = field(default_factory=dict)


COORD_UNITS = {"time": "s", "y": "um", "x": "um", "lag": "s"}

STAGES: dict[str, StageSpec] = {
    "stimulus": StageSpec(
        variables={"stimulus": VarSpec(("time", "y", "x"))},
        attrs=("frame_period_s",),
        coord_units={"time": "s", "y": "um", "x": "um"},
    ),
    "response": StageSpec(
        variables={"response": VarSpec(("time", "cell"))},
        coord_units={"time": "s"},
    ),
    "attribution": StageSpec(
        variables={
            "attribution": VarSpec(("time", "cell", "unit_channel"), optional_dims=("unit_y", "unit_x")),
            "baseline_response": VarSpec(("cell",)),
            "completeness_error": VarSpec(("time", "cell")),
            "response": VarSpec(("time", "cell")),
        },
        coord_units={"time": "s"},
    ),
    "reduction": StageSpec(
        variables={
            "weights": VarSpec(("time", "cell", "component")),
            "components": VarSpec(("component", "unit_channel"), optional_dims=("unit_y", "unit_x")),
            "reduced_response": VarSpec(("time", "cell"), required=False),
        },
    ),
}


@dataclass(frozen=True)
class Declared:
    """A variable a stage may write and later stages read: its dims, units and meaning (docs/contract.md).

    Attributes
    ----------
    dims : tuple of str
        The dims in order (``condition`` may precede them).
    units : str
        CF units (``"Hz"``, ``"1"``).
    meaning : str
        What it is, in one sentence (its ``long_name``).
    optional_dims : tuple of str
        Dims that may follow, e.g. ``unit_y``, ``unit_x``.
    """

    dims: tuple[str, ...]
    units: str
    meaning: str
    optional_dims: tuple[str, ...] = ()


#: the reduction variables the experiments, the mechanism sentence and the report read
#: (mechlens.experiments.summary, mechlens.mechanism): optional, but a reducer that writes one writes it
#: with these dims (checked by :func:`validate`), so a third-party reduction reads like a built-in one.
#: ``dr = response - baseline_response`` and sums run over the reducer's window and the conditions.
REDUCTION_VARIABLES: dict[str, Declared] = {
    "kept": Declared(
        ("unit_channel",), "1", "1 = unit kept active in the reduced model, 0 = clamped to baseline", UNIT_DIMS[1:]
    ),
    "contribution": Declared(
        ("cell", "unit_channel"), "Hz", "sum over the window and conditions of |attribution| per channel"
    ),
    "sign": Declared(
        ("cell", "unit_channel"), "1", "+1 net excitatory (signed sum of the attribution >= 0), -1 net inhibitory"
    ),
    "explained_fraction": Declared(
        ("cell",), "1", "1 - ||dr - sum of the kept units' attributions|| / ||dr|| over the window"
    ),
}
# checked where present: optional entries of the reduction stage (its required ones are above)
STAGES["reduction"].variables.update(
    {name: VarSpec(d.dims, d.optional_dims, required=False) for name, d in REDUCTION_VARIABLES.items()}
)


def _check_var(ds: xr.Dataset, name: str, spec: VarSpec, where: str) -> list[str]:
    problems = []
    if name not in ds.data_vars:
        if spec.required:
            problems.append(f"missing variable {name!r} with dims {spec.dims}")
        return problems
    dims = ds[name].dims
    core = tuple(d for d in dims if d != "condition")
    if "condition" in dims and dims[0] != "condition":
        problems.append(f"{name!r}: 'condition' must be the first dim, got {dims}")
    n = len(spec.dims)
    if core[:n] != spec.dims or any(d not in spec.optional_dims for d in core[n:]):
        allowed = f"{spec.dims}" + (f" optionally followed by {spec.optional_dims}" if spec.optional_dims else "")
        problems.append(f"{name!r} has dims {dims}; expected {allowed} (optionally after 'condition')")
    elif np.issubdtype(ds[name].dtype, np.floating) and ds[name].size and not np.isfinite(ds[name].values).any():
        problems.append(f"{name!r} holds no finite values")
    return problems


def problems(ds: xr.Dataset, stage: str) -> list[str]:
    """Every way ``ds`` breaks the contract of ``stage`` (empty when it conforms).

    Parameters
    ----------
    ds : xarray.Dataset
        The Dataset to check.
    stage : str
        One of ``"stimulus"``, ``"response"``, ``"attribution"``, ``"reduction"``.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    if not isinstance(ds, xr.Dataset):
        return [f"expected an xarray.Dataset, got {type(ds).__name__}"]
    spec = STAGES[stage]
    out: list[str] = []
    for name, vspec in spec.variables.items():
        out += _check_var(ds, name, vspec, stage)
    for attr in spec.attrs:
        if attr not in ds.attrs:
            out.append(f"missing Dataset attr {attr!r}")
    for coord, units in spec.coord_units.items():
        if coord not in ds.coords:
            if coord in ds.dims:
                out.append(f"dim {coord!r} has no coordinate values; give it a coord in {units}")
            continue
        got = ds[coord].attrs.get("units")
        if got != units:
            out.append(f"coord {coord!r} must have attrs['units'] = {units!r}, got {got!r}")
    if "cell" in ds.dims and "cell" in ds.coords and ds["cell"].dtype.kind not in "OUS":
        out.append("coord 'cell' must hold string ids such as 'gc00'")
    if "time" in ds.coords and ds.sizes.get("time", 0) > 1:
        t = np.asarray(ds["time"].values, dtype=float)
        if not np.all(np.diff(t) > 0):
            out.append("coord 'time' must increase strictly")
    if "condition" in ds.dims and "condition" in ds.coords and "swept" not in ds["condition"].attrs:
        out.append("coord 'condition' must name the swept parameter in attrs['swept']")
    out += _non_finite(ds, FINITE.get(stage, ()))
    return out


#: per stage, the variables and coords that must hold finite numbers: a NaN frame or an infinite
#: pixel size would otherwise flow through every later stage and be saved without a word
FINITE: dict[str, tuple[str, ...]] = {
    "stimulus": ("stimulus", "time", "y", "x"),
    "response": ("response", "time"),
    "attribution": ("attribution", "response", "baseline_response"),
}


def _show(value: object) -> str:
    """A coordinate value as people write it (``-1347.5``, not ``np.float64(-1347.5)``)."""
    arr = np.asarray(value)
    return f"{float(arr):g}" if arr.ndim == 0 and arr.dtype.kind in "fiu" else str(value)


def _non_finite(ds: xr.Dataset, names: tuple[str, ...]) -> list[str]:
    out = []
    for name in names:
        if name not in ds.variables or ds[name].dtype.kind not in "fc":
            continue
        bad = ~np.isfinite(np.asarray(ds[name].values))
        n = int(bad.sum())
        if n:
            where = ", ".join(
                f"{d}={_show(ds[name][d].values[i])}" if d in ds[name].coords else f"{d} index {i}"
                for d, i in zip(ds[name].dims, np.unravel_index(int(np.argmax(bad)), bad.shape))
            )
            out.append(f"{name!r} holds {n} non-finite value(s) (NaN or inf), the first at {where or 'its only value'}")
    return out


def validate(ds: xr.Dataset, stage: str, source: str = "") -> xr.Dataset:
    """Raise :class:`SchemaError` listing every problem, or return ``ds`` unchanged.

    Parameters
    ----------
    ds : xarray.Dataset
        The Dataset to check.
    stage : str
        The stage whose contract applies.
    source : str
        Who produced it (``"stimulus plugin 'osr' (mechlens)"``), for the message.
    """
    found = problems(ds, stage)
    if found:
        who = f"{source} returned" if source else "got"
        raise SchemaError(
            f"{who} a malformed {stage} Dataset:\n  - " + "\n  - ".join(found) + "\n(see docs/contract.md, 'Datasets')"
        )
    return ds


def set_units(da: xr.DataArray, units: str, long_name: str | None = None) -> xr.DataArray:
    """Attach CF ``units`` (and ``long_name``) attrs; returns ``da`` for chaining."""
    da.attrs["units"] = units
    if long_name:
        da.attrs["long_name"] = long_name
    return da


def grid_coords(n_y: int, n_x: int, pixel_um: float) -> dict[str, xr.DataArray]:
    """``y``/``x`` coords: pixel centres in um, centred on the middle of the grid."""
    ys = (np.arange(n_y) - (n_y - 1) / 2) * pixel_um
    xs = (np.arange(n_x) - (n_x - 1) / 2) * pixel_um
    return {
        "y": xr.DataArray(ys, dims="y", attrs={"units": "um", "long_name": "pixel centre, vertical"}),
        "x": xr.DataArray(xs, dims="x", attrs={"units": "um", "long_name": "pixel centre, horizontal"}),
    }


def time_coord(n: int, frame_period_s: float, start_s: float = 0.0) -> xr.DataArray:
    """A ``time`` coord of ``n`` frames in seconds, starting at ``start_s`` (negative for history)."""
    t = start_s + np.arange(n) * frame_period_s
    return xr.DataArray(np.round(t, 9), dims="time", attrs={"units": "s", "long_name": "time"})
