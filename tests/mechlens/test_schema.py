from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from mechlens import schema
from mechlens.errors import SchemaError
from mechlens.testing import noise_stimulus
from mechlens.toymodels import ToyCNN


@pytest.fixture
def stim():
    return noise_stimulus(ToyCNN(), n_times=6)


def test_good_stimulus_passes(stim):
    assert schema.problems(stim, "stimulus") == []


def test_missing_variable_names_the_plugin(stim):
    with pytest.raises(SchemaError, match=r"(?s)stimulus plugin 'bad'.*missing variable 'stimulus'"):
        schema.validate(stim.rename({"stimulus": "movie"}), "stimulus", "stimulus plugin 'bad'")


def test_wrong_dims_units_and_attrs_are_all_listed(stim):
    bad = stim.transpose("x", "y", "time")
    bad["time"].attrs["units"] = "ms"
    del bad.attrs["frame_period_s"]
    found = schema.problems(bad, "stimulus")
    assert any("has dims ('x', 'y', 'time')" in p for p in found)
    assert any("'units'] = 's'" in p for p in found)
    assert any("frame_period_s" in p for p in found)


def test_condition_must_lead_and_name_its_parameter():
    da = xr.DataArray(
        np.ones((3, 2, 1)),
        dims=("time", "condition", "cell"),
        coords={"time": ("time", [0.0, 0.01, 0.02], {"units": "s"}), "cell": ["a"], "condition": [1, 2]},
    )
    found = schema.problems(xr.Dataset({"response": da}), "response")
    assert any("'condition' must be the first dim" in p for p in found)
    assert any("swept" in p for p in found)


def test_attribution_allows_space_and_rejects_extra_dims():
    t = xr.DataArray([0.0, 0.01], dims="time", attrs={"units": "s"})
    base = xr.Dataset(
        {
            "attribution": (("time", "cell", "unit_channel", "unit_y", "unit_x"), np.zeros((2, 1, 2, 3, 3))),
            "response": (("time", "cell"), np.zeros((2, 1))),
            "baseline_response": (("cell",), np.zeros(1)),
            "completeness_error": (("time", "cell"), np.zeros((2, 1))),
        },
        coords={"time": t, "cell": ["gc00"]},
    )
    assert schema.problems(base, "attribution") == []
    bad = base.assign(attribution=base["attribution"].rename(unit_x="pixel"))
    assert schema.problems(bad, "attribution")


def test_all_nan_and_non_string_cells_are_rejected():
    ds = xr.Dataset(
        {"response": (("time", "cell"), np.full((2, 2), np.nan))},
        coords={"time": ("time", [0.0, 0.01], {"units": "s"}), "cell": [0, 1]},
    )
    found = schema.problems(ds, "response")
    assert any("no finite values" in p for p in found)
    assert any("string ids" in p for p in found)


def test_non_finite_values_and_coords_are_refused_at_the_stage_boundary(stim):
    bad = stim.copy(deep=True)
    bad["stimulus"].values[3, 1, 2] = np.nan
    bad["stimulus"].values[5] = np.inf
    problems = schema.problems(bad, "stimulus")
    assert any("'stimulus' holds" in p and "non-finite" in p and "y=" in p for p in problems), problems
    inf_grid = stim.assign_coords(x=stim["x"].values * np.inf)
    inf_grid["x"].attrs["units"] = "um"
    assert any("'x' holds" in p for p in schema.problems(inf_grid, "stimulus"))
    with pytest.raises(SchemaError, match="non-finite"):
        schema.validate(bad, "stimulus", "stimulus plugin 'toy'")
    # a model that emits NaN is caught even when no reducer follows
    resp = ToyCNN().predict(stim)
    resp["response"].values[0, 0] = np.nan
    with pytest.raises(SchemaError, match="'response' holds 1 non-finite"):
        schema.validate(resp, "response", "model plugin 'toy-cnn'")
