"""The core's reduced model (issue 18.8): a third-party reducer gets it without writing one, on models
split by their own ``split`` and on models reached through hooks alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from hooked_toys import SplittableSkipModel

import mechlens
from mechlens.interfaces import Model, Reducer
from mechlens.lesion import lesion_channels
from mechlens.reduced import attributed_times, reduced_model, run_reduced
from mechlens.registry import get
from mechlens.schema import REDUCTION_VARIABLES, validate
from mechlens.testing import check_reducer, merged, noise_stimulus
from mechlens.toymodels import ToyCNN, ToyNoise


class TopChannel(Reducer):
    """Keeps the channel with the largest summed |attribution| (a third party's reducer)."""

    name = "top-channel"

    def reduce(self, attribution: xr.Dataset, model: Model | None = None) -> xr.Dataset:
        a = attribution["attribution"].sel(time=attributed_times(attribution))
        space = [d for d in ("unit_y", "unit_x") if d in a.dims]
        per_channel = a.sum(space) if space else a
        top = int(abs(per_channel).sum([d for d in per_channel.dims if d != "unit_channel"]).argmax("unit_channel"))
        channels = per_channel["unit_channel"]
        kept = xr.DataArray(np.arange(channels.size) == top, dims="unit_channel", coords={"unit_channel": channels})
        weights = per_channel.sel(unit_channel=top, drop=True).expand_dims(component=[0], axis=-1)
        components = kept.astype(float).expand_dims(component=[0])
        out = xr.Dataset({"weights": weights, "components": components})
        if model is not None:
            red = reduced_model(model, attribution, kept)
            out = out.merge(red).assign_attrs(red.attrs)  # merge keeps the first Dataset's attrs
        return out


def _attribution(model: Model, n_times: int = 6) -> xr.Dataset:
    stim = ToyNoise(frames=n_times, contrast=[0.5, 1.0]).generate(seed=2, grid=model.grid)
    ds = get("attributor", "integrated-gradients")(n_steps=8).attribute(model, stim)
    return merged(stim, ds)


@pytest.mark.parametrize("make", [ToyCNN, SplittableSkipModel], ids=["own-split", "hooks"])
def test_a_third_party_reducer_gets_the_reduced_model_and_the_kit_passes_it(make: type[Model]) -> None:
    model = make()
    ds = _attribution(model)
    out = check_reducer(TopChannel, ds, model=model)
    validate(out, "reduction", "top-channel")
    for name in ("kept", "reduced_response", "complement_response", "reduced_r", "reduced_model_explained"):
        assert name in out and out[name].attrs["units"], name
    assert out.attrs["reduction_check"] in ("pass", "kept insufficient", "complement sufficient")
    # the reduced model is the lesioned model on the attributed windows
    stim = ds[["stimulus"]].assign_attrs(frame_period_s=model.frame_period_s)
    kept = out["kept"].values.astype(bool)
    lesioned = lesion_channels(model, model.default_layer(), np.flatnonzero(kept)).predict(stim)
    np.testing.assert_allclose(
        out["reduced_response"].transpose("condition", "time", "cell").values,
        lesioned["response"].sel(time=out["time"]).values,
        rtol=1e-5,
        atol=1e-5,
    )


def test_the_hooked_and_the_split_reduced_models_agree_and_keeping_all_is_the_model() -> None:
    class Hooked(ToyCNN):
        name = "hooked-toy-cnn"
        split = Model.split

        def layer_module(self, layer: str) -> torch.nn.Module:
            return self.below[0]

    fast, hooked = ToyCNN(), Hooked()
    stim = noise_stimulus(fast, n_times=12, seed=1)["stimulus"]
    keep = np.array([True, False, True])
    a, b = run_reduced(fast, "conv1", stim, keep), run_reduced(hooked, "conv1", stim, keep)
    for key in ("reduced", "complement", "full", "baseline"):
        np.testing.assert_allclose(b[key].values, a[key].values, rtol=1e-5, atol=1e-6)
    assert np.abs(a["reduced"] - a["full"]).max() > 1e-3
    every = run_reduced(hooked, "conv1", stim, np.ones(3, bool))
    np.testing.assert_allclose(every["reduced"].values, every["full"].values, rtol=1e-6)
    np.testing.assert_allclose(
        every["complement"].values, np.broadcast_to(every["baseline"].values, every["full"].shape), rtol=1e-5
    )


def test_a_built_in_reducer_runs_on_a_hooked_model_end_to_end() -> None:
    model = SplittableSkipModel()
    out = mechlens.run(
        model,
        ToyNoise(frames=12),
        "integrated-gradients",
        "cell-types",
        attributor_params={"n_steps": 16},
        layer="block",
        completeness_tolerance=0.05,
    )
    assert np.isfinite(out["reduced_response"].dropna("time").values).all()
    assert out.attrs["reduction_check"] in ("pass", "all kept", "kept insufficient", "complement sufficient")


def test_the_schema_declares_what_experiments_read() -> None:
    assert {"kept", "contribution", "sign", "explained_fraction"} <= set(REDUCTION_VARIABLES)
    assert all(d.units and d.meaning for d in REDUCTION_VARIABLES.values())
    bad = xr.Dataset(
        {
            "weights": xr.DataArray(np.ones((2, 1, 1)), dims=("time", "cell", "component")),
            "components": xr.DataArray(np.ones((1, 2)), dims=("component", "unit_channel")),
            "explained_fraction": xr.DataArray(np.ones(2), dims="unit_channel"),
        }
    )
    with pytest.raises(mechlens.errors.SchemaError, match="'explained_fraction' has dims"):
        validate(bad, "reduction")
