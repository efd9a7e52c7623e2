from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import mechlens
from mechlens.errors import PluginError, SchemaError, UsageError
from mechlens.interfaces import Stimulus
from mechlens.toymodels import ToyCNN, ToyNoise


class NoUnits(ToyNoise):
    """A stimulus that forgets the units of its time coord."""

    name = "no-units"

    def render(self, params, seed):
        ds = super().render(params, seed)
        ds["time"].attrs.pop("units")
        return ds


class Crashing(Stimulus):
    """A stimulus that fails."""

    name = "crashing"

    def render(self, params, seed):
        raise ValueError("bad things")


def test_predict_run_merges_stimulus_and_response_with_provenance():
    ds = mechlens.run(ToyCNN(), ToyNoise(contrast=[0.5, 1.0]), seed=3)
    assert ds["response"].dims == ("condition", "time", "cell")
    # the response is undefined over the first history-1 frames, where no full window exists
    assert np.isnan(ds["response"].isel(time=slice(0, 4))).all()
    assert np.isfinite(ds["response"].isel(time=slice(4, None))).all()
    assert ds.attrs["model"] == "toy-cnn" and ds.attrs["stimulus"] == "toy-noise" and ds.attrs["seed"] == 3
    assert '"contrast": [0.5, 1.0]' in ds.attrs["stimulus_parameters"]
    assert ds["time"].attrs["units"] == "s"


def test_malformed_stage_output_fails_naming_the_plugin():
    with pytest.raises(SchemaError, match=r"(?s)stimulus plugin 'no-units'.*units"):
        mechlens.run(ToyCNN(), NoUnits())


def test_plugin_exception_is_wrapped_with_its_name():
    with pytest.raises(PluginError, match="stimulus plugin 'crashing' failed in generate: ValueError: bad things"):
        mechlens.run(ToyCNN(), Crashing())


def test_reducer_without_attributor_is_a_usage_error():
    with pytest.raises(UsageError, match="needs an attributor"):
        mechlens.run(ToyCNN(), ToyNoise(), reducer="cell-types")


def test_unknown_cells_are_rejected():
    with pytest.raises(UsageError, match="no cells"):
        mechlens.run(ToyCNN(), ToyNoise(), "whatever", cells=["gc99"])


def test_model_rejects_a_stimulus_on_another_grid():
    with pytest.raises(SchemaError, match="12x12 pixel movies; the stimulus is 8x8"):
        mechlens.run(ToyCNN(), ToyNoise(size=8))


def test_instances_take_no_extra_params():
    with pytest.raises(UsageError, match="already an instance"):
        mechlens.run(ToyCNN(), ToyNoise(), stimulus_params={"frames": 3})


def test_windows_are_a_view_equal_to_explicit_windows():
    m = ToyCNN()
    stim = ToyNoise(frames=7).generate(0)["stimulus"]
    w = m.windows(stim)
    movie = stim.values
    explicit = np.stack([movie[i : i + m.history] for i in range(movie.shape[0] - m.history + 1)])
    np.testing.assert_array_equal(w.numpy(), explicit)
    assert isinstance(stim, xr.DataArray)


def test_merge_keeps_variable_attrs():
    from mechlens.pipeline import merge

    stim = ToyNoise().generate(0)
    resp = ToyCNN().predict(stim)
    resp["response"].attrs["layer"] = "conv1"
    out = merge([stim, resp])
    assert out["response"].attrs["units"] == "Hz" and out["response"].attrs["layer"] == "conv1"
    assert out["stimulus"].attrs["long_name"] == "contrast"
