"""Polarity, kinetics and receptive-field size from a hand-set first layer (OFF-fast and ON-slow types)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from mechlens_reduction.celltypes import CellTypes
from mechlens_reduction.characterise import characterise, filter_properties
from mechlens_reduction.sentence import mechanism_details, mechanism_sentence
from reduction_test_helpers import exact_attribution
from torch import nn

from mechlens.interfaces import Model
from mechlens.parameters import param
from mechlens.testing import noise_stimulus
from mechlens.toymodels import ToyCNN

HISTORY, SIZE, KERNEL = 20, 15, 9
DT = 0.01


def temporal(peak: int, width: float, rebound: float) -> np.ndarray:
    """Present-first temporal kernel: a lobe peaking at ``peak`` frames and an opposite lobe 2x later."""
    lag = np.arange(HISTORY)
    return np.exp(-0.5 * ((lag - peak) / width) ** 2) - rebound * np.exp(-0.5 * ((lag - 2 * peak - 2) / width) ** 2)


def gaussian(sigma: float) -> np.ndarray:
    r = np.arange(KERNEL) - KERNEL // 2
    return np.exp(-0.5 * (r[:, None] ** 2 + r[None, :] ** 2) / sigma**2)


class TwoTypes(Model):
    """Channel 0 is OFF-fast with a small RF, channel 1 ON-slow with a large RF; a fixed read-out."""

    name = "two-types"

    @dataclass(frozen=True)
    class Parameters:
        readout: float = param(1.0, "sign of the OFF type's read-out weight")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.history = HISTORY
        self.input_shape = (SIZE, SIZE)
        self.frame_period_s = 0.01
        n = SIZE - KERNEL + 1
        self.below = nn.Sequential(nn.Conv2d(HISTORY, 2, KERNEL))
        self.above = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(2 * n * n, 1), nn.Softplus())
        off_fast = -np.einsum("t,yx->tyx", temporal(2, 0.8, 0.3), gaussian(1.0))
        on_slow = np.einsum("t,yx->tyx", temporal(9, 2.0, 0.6), gaussian(2.5))
        w = np.stack([off_fast, on_slow])[:, ::-1]  # conv input channels are frames, oldest first
        with torch.no_grad():
            self.below[0].weight.copy_(torch.from_numpy(w.copy()).float() * 0.2)
            self.below[0].bias.fill_(0.0)
            lin = self.above[2]
            lin.weight.fill_(0.0)
            lin.weight.view(2, n, n)[0] = self.params.readout
            lin.weight.view(2, n, n)[1] = -0.5
            lin.bias.fill_(1.0)
        self.module = nn.Sequential(self.below, self.above).eval()

    @property
    def cells(self) -> list[str]:
        return ["gc00"]

    def layers(self) -> dict[str, tuple[int, ...]]:
        n = SIZE - KERNEL + 1
        return {"conv1": (2, n, n)}

    def torch_module(self) -> nn.Module:
        return self.module

    def split(self, layer: str) -> tuple[nn.Module, nn.Module]:
        self.check_layer(layer)
        return self.below, self.above


def test_polarity_and_kinetics_of_hand_set_filters() -> None:
    table = characterise(TwoTypes(), n_windows=4, pixel_um=50.0)
    assert list(table["unit_type"].values) == ["OFF-fast", "ON-slow"]
    assert list(table["polarity"].values) == ["OFF", "ON"]
    np.testing.assert_allclose(table["time_to_peak"].values, [2 * DT, 9 * DT], atol=1e-9)
    off, on = temporal(2, 0.8, 0.3), temporal(9, 2.0, 0.6)  # OFF's filter is -off
    expected = [-off.min() / off.max(), -on.min() / on.max()]
    np.testing.assert_allclose(table["biphasic_index"].values, expected, rtol=1e-4)
    # half-max diameter of a Gaussian is 2.355 sigma; the pixel count makes it coarse
    np.testing.assert_allclose(table["rf_diameter"].values, [2.355 * 50.0, 2.355 * 2.5 * 50.0], rtol=0.25)
    assert table["rf_diameter"].attrs["units"] == "um"
    tf = table["temporal_filter"]
    assert tf.dims == ("unit_channel", "lag") and tf["lag"].values[1] == -DT
    assert tf.sel(unit_channel=0).values[2] < 0 < tf.sel(unit_channel=1).values[9]
    assert table["spatial_filter"].dims == ("unit_channel", "y", "x")
    assert float(table["spatial_filter"].max()) == 1.0


def test_an_explicit_threshold_overrides_the_median_split() -> None:
    table = characterise(TwoTypes(), n_windows=2, fast_threshold_s=0.2)
    assert list(table["kinetics"].values) == ["fast", "fast"]
    assert table["rf_diameter"].attrs["units"] == "px"


def test_the_dominant_lobe_nearest_the_present_sets_the_polarity() -> None:
    f = np.zeros(20)
    f[1] = 0.05  # a small positive blip at the present is not the dominant lobe
    f[3:6] = [-0.6, -1.0, -0.5]
    f[10:14] = [0.4, 0.9, 0.7, 0.2]  # a later, nearly as large, positive lobe
    props = filter_properties(f, DT)
    assert props["polarity"] == "OFF"
    assert np.isclose(props["time_to_peak"], 4 * DT)
    assert np.isclose(props["biphasic_index"], 0.9)


def test_characterise_works_on_any_model() -> None:
    model = ToyCNN(channels=3)
    table = characterise(model, stimulus=noise_stimulus(model), n_windows=8)
    assert table.sizes["unit_channel"] == 3
    assert table["spatial_filter"].shape == (3, 12, 12)
    assert set(table["polarity"].values) <= {"ON", "OFF"}
    # ToyCNN's first layer is a conv: its STA is the kernel at any number of windows
    again = characterise(model, n_windows=2, seed=5)
    np.testing.assert_allclose(again["temporal_filter"].values, table["temporal_filter"].values, rtol=1e-4, atol=1e-6)


def dark_flash(model: Model) -> xr.Dataset:
    stim = noise_stimulus(model, n_times=40)
    movie = np.zeros_like(stim["stimulus"].values)
    movie[HISTORY + 4 : HISTORY + 6] = -2.0
    stim["stimulus"].values[:] = movie
    return stim


def test_reductions_name_the_types_in_the_sentence() -> None:
    model = TwoTypes()
    ds = exact_attribution(model, dark_flash(model), steps=32)
    out = CellTypes(explained=0.95, sta_windows=2).reduce(ds, model)
    assert list(out["unit_type"].values) == ["OFF-fast", "ON-slow"]
    text = mechanism_sentence(out)
    assert text.startswith("gc00: ")
    kept = [str(out["unit_type"].values[i]) for i in np.flatnonzero(out["kept"].values)]
    for label in kept:
        assert label in text
    assert "channel" not in text
    # the OFF type is read out positively: a dark flash excites through it
    assert "OFF-fast (excitatory, " in text
    assert f"reduced model r = {float(out['reduced_r'].sel(cell='gc00')):.2f}" in mechanism_details(out, "gc00")
