"""Conformance kit: run a plugin through the mechlens contract in your own tests.

Every built-in plugin's tests call these; a third-party plugin author should too::

    from mechlens.testing import check_stimulus

    def test_my_stimulus_conforms():
        check_stimulus(MyStimulus)

Each check raises ``AssertionError`` with a message saying what broke, and returns the Dataset it
produced so a test can go on to check the physics.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from mechlens import io, schema
from mechlens.interfaces import Attributor, Model, Plugin, Reducer, Stimulus
from mechlens.parameters import specs

__all__ = [
    "assert_round_trip",
    "check_attributor",
    "check_model",
    "check_parameters",
    "check_reducer",
    "check_stimulus",
    "merged",
    "noise_stimulus",
]

_KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def check_parameters(cls: type[Plugin]) -> None:
    """The class has a kebab-case name and a frozen Parameters dataclass, every field documented with a default."""
    assert isinstance(cls.name, str) and _KEBAB.match(cls.name), (
        f"{cls.__qualname__}.name must be kebab-case (e.g. 'moving-bar'), got {cls.name!r}"
    )
    assert (cls.__doc__ or "").strip(), f"{cls.__qualname__} needs a docstring (shown by mechlens list)"
    params = cls.Parameters
    assert dataclasses.is_dataclass(params), f"{cls.__qualname__}.Parameters must be a dataclass"
    assert params.__dataclass_params__.frozen, f"{cls.__qualname__}.Parameters must be frozen (@dataclass(frozen=True))"
    for spec in specs(params):
        assert spec.doc, (
            f"{cls.__qualname__}.Parameters.{spec.name} has no doc; declare it with mechlens.parameters.param"
        )
        assert spec.default is not dataclasses.MISSING, f"{cls.__qualname__}.Parameters.{spec.name} has no default"


def assert_round_trip(ds: xr.Dataset) -> xr.Dataset:
    """Save with :func:`mechlens.io.save`, load with :func:`mechlens.io.load`, and compare (float32 tolerance)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "round_trip.nc"
        io.save(ds, path)
        back = io.load(path)
    for name in ds.data_vars:
        assert name in back.data_vars, f"variable {name!r} was lost in the netCDF round trip"
        a, b = ds[name], back[name]
        assert a.dims == b.dims, f"variable {name!r} changed dims in the round trip: {a.dims} -> {b.dims}"
        if a.dtype.kind == "f":
            np.testing.assert_allclose(
                b.values,
                a.values,
                rtol=1e-6,
                atol=1e-6 * (np.nanmax(np.abs(a.values)) or 1.0),
                err_msg=f"variable {name!r} changed in the netCDF round trip",
            )
        elif a.dtype.kind in "iub":
            np.testing.assert_array_equal(b.values, a.values, err_msg=f"variable {name!r} changed in the round trip")
    for name in ds.coords:
        assert name in back.coords, f"coord {name!r} was lost in the netCDF round trip"
    return back


def _assert_same(a: xr.Dataset, b: xr.Dataset, what: str) -> None:
    for name in a.data_vars:
        assert name in b.data_vars, f"{what}: variable {name!r} missing on the second call"
        if a[name].dtype.kind in "fiub":
            np.testing.assert_allclose(
                a[name].values,
                b[name].values,
                rtol=1e-6,
                atol=1e-9,
                equal_nan=True,
                err_msg=f"{what}: variable {name!r} differs between two identical calls",
            )


def noise_stimulus(model: Model, n_times: int = 24, seed: int = 0, contrast: float = 1.0) -> xr.Dataset:
    """Gaussian white noise on a model's grid, with exactly the history it needs before time 0."""
    rng = np.random.default_rng(seed)
    h, (ny, nx) = model.history, model.input_shape
    n = n_times + h - 1
    movie = (rng.standard_normal((n, ny, nx)) * contrast).astype(np.float32)
    coords: dict[str, Any] = {"time": schema.time_coord(n, model.frame_period_s, -(h - 1) * model.frame_period_s)}
    coords.update(schema.grid_coords(ny, nx, 55.0))
    stim = xr.DataArray(movie, dims=("time", "y", "x"), coords=coords, attrs={"units": "1", "long_name": "contrast"})
    return xr.Dataset(
        {"stimulus": stim},
        attrs={"frame_period_s": model.frame_period_s, "pre_s": (h - 1) * model.frame_period_s},
    )


def check_stimulus(cls: type[Stimulus], params: Mapping[str, Any] | None = None, seed: int = 0) -> xr.Dataset:
    """Run a Stimulus class through the contract.

    Checks declared parameters, the schema of ``generate``, ``pre_s``/``frame_period_s`` attrs and a
    time coord starting at ``-pre_s``, determinism under a seed, and the netCDF round trip.

    Returns
    -------
    xarray.Dataset
        The generated stimulus.
    """
    check_parameters(cls)
    stim = cls(**dict(params or {}))
    ds = stim.generate(seed)
    schema.validate(ds, "stimulus", f"stimulus {cls.name!r}")
    assert "pre_s" in ds.attrs, f"stimulus {cls.name!r} must state its history in attrs['pre_s'] (seconds)"
    period = float(ds.attrs["frame_period_s"])
    assert period > 0, f"stimulus {cls.name!r}: frame_period_s must be > 0"
    t = ds["time"].values
    np.testing.assert_allclose(
        np.diff(t), period, rtol=1e-6, err_msg=f"stimulus {cls.name!r}: time steps != frame period"
    )
    np.testing.assert_allclose(
        t[0], -float(ds.attrs["pre_s"]), atol=period * 1e-3, err_msg=f"stimulus {cls.name!r}: time must start at -pre_s"
    )
    assert ds["stimulus"].dtype == np.float32, f"stimulus {cls.name!r}: movie must be float32"
    assert np.isfinite(ds["stimulus"].values).all(), f"stimulus {cls.name!r}: movie has non-finite values"
    _assert_same(ds, cls(**dict(params or {})).generate(seed), f"stimulus {cls.name!r} with seed {seed}")
    assert_round_trip(ds)
    return ds


def check_model(model: Model, stimulus: xr.Dataset | None = None, atol: float = 1e-4) -> xr.Dataset:
    """Run a Model instance through the contract.

    Checks cells and layers, that ``split(layer)`` recomposes the module for every layer, that the
    layer shapes are right, the response schema (time coords = stimulus times from ``history - 1`` on,
    finite non-negative rates in Hz), determinism, and the netCDF round trip.

    Returns
    -------
    xarray.Dataset
        The model's response.
    """
    import torch

    check_parameters(type(model))
    cells = list(model.cells)
    assert cells and all(isinstance(c, str) for c in cells), f"model {model.name!r}: cells must be a list of str ids"
    assert len(set(cells)) == len(cells), f"model {model.name!r}: cell ids must be unique"
    layers = model.layers()
    assert layers, f"model {model.name!r} declares no attributable layers"
    stim = stimulus if stimulus is not None else noise_stimulus(model)
    windows = model.windows(
        stim["stimulus"] if "condition" not in stim["stimulus"].dims else stim["stimulus"].isel(condition=0)
    )
    x = windows[:4].contiguous()
    module = model.torch_module()
    module.eval()
    with torch.no_grad():
        full = module(x)
        assert tuple(full.shape) == (x.shape[0], len(cells)), (
            f"model {model.name!r}: module output shape {tuple(full.shape)}, expected (batch, {len(cells)})"
        )
        for layer, shape in layers.items():
            below, above = model.split(layer)
            z = below(x)
            assert tuple(z.shape[1:]) == tuple(shape), (
                f"model {model.name!r}: layer {layer!r} has shape {tuple(z.shape[1:])}, layers() says {shape}"
            )
            np.testing.assert_allclose(
                above(z).numpy(),
                full.numpy(),
                rtol=1e-4,
                atol=atol,
                err_msg=f"model {model.name!r}: above(below(x)) != module(x) for layer {layer!r}",
            )
    out = model.predict(stim)
    schema.validate(out, "response", f"model {model.name!r}")
    resp = out["response"]
    assert list(resp["cell"].values) == cells, f"model {model.name!r}: response cells differ from model.cells"
    expected_t = stim["time"].values[model.history - 1 :]
    np.testing.assert_allclose(resp["time"].values, expected_t, err_msg=f"model {model.name!r}: response times")
    assert np.isfinite(resp.values).all(), f"model {model.name!r}: non-finite rates"
    assert (resp.values >= 0).all(), f"model {model.name!r}: negative rates (Hz)"
    _assert_same(out, model.predict(stim), f"model {model.name!r} predict")
    assert_round_trip(out)
    return out


def check_attributor(
    cls: type[Attributor],
    model: Model,
    stimulus: xr.Dataset | None = None,
    params: Mapping[str, Any] | None = None,
    layer: str | None = None,
    completeness_rtol: float = 1e-2,
) -> xr.Dataset:
    """Run an Attributor class through the contract on a model and stimulus.

    Checks the schema, that ``response`` matches ``model.predict``, that ``completeness_error`` is
    what it says (sum of attributions minus (response - baseline_response)) and small relative to the
    response range, cell selection, determinism and the netCDF round trip.

    Returns
    -------
    xarray.Dataset
        The attribution Dataset.
    """
    check_parameters(cls)
    stim = stimulus if stimulus is not None else noise_stimulus(model)
    attributor = cls(**dict(params or {}))
    ds = attributor.attribute(model, stim, layer, None)
    schema.validate(ds, "attribution", f"attributor {cls.name!r}")
    attr = ds["attribution"]
    assert attr.attrs.get("layer") == (layer or model.default_layer()), (
        f"attributor {cls.name!r}: attribution.attrs['layer'] must name the attributed layer"
    )
    assert list(ds["cell"].values) == list(model.cells), f"attributor {cls.name!r}: cells differ from the model's"
    pred = model.predict(stim)["response"].sel(time=ds["time"])
    np.testing.assert_allclose(
        ds["response"].values,
        pred.values,
        rtol=1e-4,
        atol=1e-4,
        err_msg=f"attributor {cls.name!r}: response differs from model.predict",
    )
    summed = attr.sum([d for d in attr.dims if d.startswith("unit_")])
    recomputed = summed - (ds["response"] - ds["baseline_response"])
    np.testing.assert_allclose(
        ds["completeness_error"].values,
        recomputed.values,
        rtol=1e-4,
        atol=1e-4,
        err_msg=f"attributor {cls.name!r}: completeness_error is not sum(A) - (r - r0)",
    )
    span = float(np.ptp(ds["response"].values)) or 1.0
    worst = float(np.abs(ds["completeness_error"].values).max()) / span
    assert worst <= completeness_rtol, (
        f"attributor {cls.name!r}: completeness error {worst:.2e} of the response range exceeds {completeness_rtol}"
    )
    one = [model.cells[-1]]
    sub = attributor.attribute(model, stim, layer, one)
    assert list(sub["cell"].values) == one, f"attributor {cls.name!r}: cells=[{one[0]!r}] not honoured"
    np.testing.assert_allclose(
        sub["attribution"].values,
        attr.sel(cell=one).values,
        rtol=1e-4,
        atol=1e-5,
        err_msg=f"attributor {cls.name!r}: attributing one cell differs from all cells",
    )
    _assert_same(ds, cls(**dict(params or {})).attribute(model, stim, layer, None), f"attributor {cls.name!r}")
    assert_round_trip(ds)
    return ds


def check_reducer(
    cls: type[Reducer],
    attribution: xr.Dataset,
    model: Model | None = None,
    params: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Run a Reducer class through the contract on an attribution Dataset (merged with its stimulus).

    Checks the schema, components over the attribution's unit dims, ``reduced_response`` when a
    model is given, determinism and the netCDF round trip.

    Returns
    -------
    xarray.Dataset
        The reduction Dataset.
    """
    check_parameters(cls)
    reducer = cls(**dict(params or {}))
    ds = reducer.reduce(attribution, model)
    schema.validate(ds, "reduction", f"reducer {cls.name!r}")
    assert ds.sizes["component"] >= 1, f"reducer {cls.name!r}: no components"
    assert ds.sizes["unit_channel"] == attribution.sizes["unit_channel"], (
        f"reducer {cls.name!r}: components must span the attribution's unit_channel"
    )
    if model is not None:
        assert "reduced_response" in ds, f"reducer {cls.name!r}: a model was given but no reduced_response"
        assert np.isfinite(ds["reduced_response"].values).all(), f"reducer {cls.name!r}: non-finite reduced_response"
    _assert_same(ds, cls(**dict(params or {})).reduce(attribution, model), f"reducer {cls.name!r}")
    assert_round_trip(ds)
    return ds


def merged(stimulus: xr.Dataset, attribution: xr.Dataset) -> xr.Dataset:
    """The stimulus and attribution Datasets merged as the pipeline hands them to a reducer."""
    from mechlens.pipeline import merge

    return merge([stimulus, attribution])
