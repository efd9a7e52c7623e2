"""The reduced model: keeping every unit is the full model, keeping none the baseline, and fidelity is measured."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from mechlens_reduction.celltypes import CellTypes
from mechlens_reduction.factorise import NMFReducer
from mechlens_reduction.prepare import prepare
from mechlens_reduction.reduced import additive_response, layer_mask, run_reduced
from reduction_test_helpers import LinearToy, exact_attribution

from mechlens.errors import UsageError
from mechlens.testing import check_reducer
from mechlens.toymodels import ToyCNN, ToyNoise


def channel_mask(n: int, value: bool) -> xr.DataArray:
    return xr.DataArray(np.full(n, value), dims="unit_channel", coords={"unit_channel": np.arange(n)})


@pytest.fixture(scope="module")
def toy() -> tuple[ToyCNN, xr.Dataset]:
    model = ToyCNN(channels=3, n_cells=3)
    stim = ToyNoise(frames=20, contrast=[0.5, 1.0]).generate(seed=3)
    return model, exact_attribution(model, stim, steps=8)


def test_keeping_every_unit_reproduces_the_full_response(toy: tuple[ToyCNN, xr.Dataset]) -> None:
    model, ds = toy
    res = run_reduced(model, prepare(ds), channel_mask(3, True))
    full = model.predict(ToyNoise(frames=20, contrast=[0.5, 1.0]).generate(seed=3))["response"]
    assert res["reduced"].dims == ("condition", "time", "cell")
    expected = full.sel(time=res["reduced"]["time"]).values
    np.testing.assert_allclose(res["reduced"].values, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(res["full"].values, expected, rtol=1e-6, atol=1e-6)


def test_keeping_no_unit_gives_the_baseline_response(toy: tuple[ToyCNN, xr.Dataset]) -> None:
    model, ds = toy
    res = run_reduced(model, prepare(ds), channel_mask(3, False))
    base = ds["baseline_response"].values
    assert np.ptp(res["full"].values) > 0.1
    np.testing.assert_allclose(res["reduced"].values, np.broadcast_to(base, res["reduced"].shape), rtol=1e-6, atol=1e-6)


def test_a_baseline_window_is_the_clamp_value_with_lag_zero_as_the_present() -> None:
    model = ToyCNN(channels=2, n_cells=2, history=4, size=8, kernel=3)
    ds = exact_attribution(model, n_times=6, steps=4)
    rng = np.random.default_rng(0)
    present_first = rng.standard_normal((4, 8, 8)).astype(np.float32)
    ds["baseline_window"] = xr.DataArray(
        present_first, dims=("lag", "y", "x"), coords={"lag": -np.arange(4) * 0.01, "y": ds["y"], "x": ds["x"]}
    )
    res = run_reduced(model, prepare(ds), channel_mask(2, False))
    with torch.no_grad():
        expected = model.torch_module()(torch.from_numpy(present_first[::-1].copy())[None]).numpy()[0]
    np.testing.assert_allclose(res["reduced"].values, np.broadcast_to(expected, res["reduced"].shape), rtol=1e-5)
    np.testing.assert_allclose(res["baseline"].values, expected, rtol=1e-5)


def test_a_linear_model_reduced_equals_its_additive_prediction() -> None:
    model = LinearToy(channels=4, n_cells=2)
    ds = exact_attribution(model, n_times=30, steps=2)
    assert float(abs(ds["completeness_error"]).max()) < 1e-4
    mask = xr.DataArray([True, False, True, False], dims="unit_channel", coords={"unit_channel": np.arange(4)})
    prep = prepare(ds)
    res = run_reduced(model, prep, mask)
    np.testing.assert_allclose(res["reduced"].values, additive_response(prep, mask).values, rtol=1e-4, atol=1e-4)


def test_spatial_masks_broadcast_to_the_layer() -> None:
    m = xr.DataArray([[True, False], [False, False], [True, True]], dims=("unit_channel", "unit_x"))
    full = layer_mask(m, (3, 4, 2))
    assert full.shape == (3, 4, 2)
    assert full[0, :, 0].all() and not full[0, :, 1].any() and not full[1].any() and full[2].all()


def test_fidelity_of_the_cell_types_reduction_on_a_linear_model() -> None:
    model = LinearToy(channels=4, n_cells=2)
    ds = exact_attribution(model, n_times=40, steps=2)
    out = check_reducer(CellTypes, ds, model, {"explained": 1.0, "sta_windows": 2})
    # every type kept: the reduced model is the full model
    assert int(out["kept"].sum()) == 4
    np.testing.assert_allclose(out["reduced_r"].values, 1.0, atol=1e-6)
    np.testing.assert_allclose(out["peak_time_error"].values, 0.0)
    np.testing.assert_allclose(out["reduced_response"].values, ds["response"].dropna("time").values, atol=1e-5)
    partial = CellTypes(explained=0.3, characterise=False).reduce(ds, model)
    assert int(partial["kept"].sum()) < 4
    np.testing.assert_allclose(partial["reduced_response"].values, partial["additive_response"].values, atol=1e-4)
    assert (partial["reduced_r"].values < 1.0).all()
    # the complement (kept types clamped to baseline) of a linear model is baseline + the other types' attributions
    others = ds["attribution"].dropna("time", how="all").where(partial["kept"] == 0, 0.0)
    expected = ds["baseline_response"] + others.sum([d for d in others.dims if d.startswith("unit_")])
    np.testing.assert_allclose(
        partial["complement_response"].values, expected.transpose("time", "cell").values, atol=1e-4
    )
    np.testing.assert_allclose(
        partial["complement_model_explained"].values, partial["complement_explained_fraction"].values, atol=1e-3
    )
    assert out.attrs["all_kept"] == 1 and out.attrs["reduction_check"] == "all kept"


def test_reduced_model_over_conditions_and_a_cell_subset(toy: tuple[ToyCNN, xr.Dataset]) -> None:
    model, ds = toy
    sub = ds.sel(cell=["gc02"])
    out = NMFReducer(n_components=1, characterise=False).reduce(sub, model)
    assert out["reduced_response"].dims == ("condition", "time", "cell")
    assert out["peak_time_error"].dims == ("condition", "cell")
    keep_all = run_reduced(model, prepare(sub), channel_mask(3, True))
    np.testing.assert_allclose(
        keep_all["reduced"].values, ds["response"].sel(cell=["gc02"]).dropna("time").values, rtol=1e-6, atol=1e-6
    )


def test_without_the_stimulus_a_reduced_model_is_refused(toy: tuple[ToyCNN, xr.Dataset]) -> None:
    model, ds = toy
    with pytest.raises(UsageError, match="merge the stimulus"):
        CellTypes().reduce(ds.drop_vars("stimulus"), model)


def test_fidelity_measures_by_hand() -> None:
    from mechlens_reduction.reduced import peak_time_error

    t = xr.DataArray(np.arange(10) * 0.01, dims="time")
    full = xr.DataArray(np.zeros((10, 1)), dims=("time", "cell"), coords={"time": t, "cell": ["gc00"]})
    red = full.copy()
    full[4, 0], red[6, 0] = 5.0, -3.0
    window = xr.DataArray(np.ones(10, bool), dims="time", coords={"time": t})
    base = xr.DataArray([0.0], dims="cell", coords={"cell": ["gc00"]})
    np.testing.assert_allclose(peak_time_error(red, full, base, window).values, [0.02])
    prep_window = window.copy()
    prep_window[6:] = False
    np.testing.assert_allclose(peak_time_error(red, full, base, prep_window).values, [-0.04])
