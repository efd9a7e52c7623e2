"""The synthetic retina: contract, exactness of the fast path, and each piece of the circuit."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest
import torch
import xarray as xr
from mechlens_retina.models.synthetic import SyntheticRetina, default_spec, delayed_filter, dog, temporal_filter

from mechlens import registry
from mechlens.errors import ParameterError
from mechlens.interfaces import Model
from mechlens.schema import grid_coords, time_coord
from mechlens.testing import noise_stimulus, parametrize_with_checks


@pytest.fixture(scope="module")
def model() -> SyntheticRetina:
    return SyntheticRetina()


def full_field(values: np.ndarray, pre_s: float = 0.39) -> xr.Dataset:
    """A full-field movie, one contrast per frame, on the retina grid (time from -pre_s)."""
    movie = np.broadcast_to(np.asarray(values, np.float32)[:, None, None], (len(values), 50, 50)).copy()
    coords = {"time": time_coord(len(values), 0.01, -pre_s), **grid_coords(50, 50, 55.0)}
    da = xr.DataArray(movie, dims=("time", "y", "x"), coords=coords)
    return xr.Dataset({"stimulus": da}, attrs={"frame_period_s": 0.01, "pre_s": pre_s})


def flash_movie(intensity: float, n_pre: int = 39, n_post: int = 40) -> np.ndarray:
    v = np.zeros(n_pre + n_post, np.float32)
    v[n_pre : n_pre + 2] = intensity
    return v


@parametrize_with_checks([SyntheticRetina])
def test_conforms_to_the_model_contract(check: Callable[[], None]) -> None:
    check()


def test_default_response_cells_and_layer(model: SyntheticRetina) -> None:
    out = model.predict(noise_stimulus(model))
    assert out["response"].shape == (24, 8)
    assert model.layers() == {"bipolar": (8, 36, 36)}
    assert model.cells == [f"gc{i:02d}" for i in range(8)]


def test_is_registered_and_discovery_does_not_import_torch() -> None:
    assert registry.get("model", "synthetic-retina") is SyntheticRetina
    code = "import sys, mechlens_retina.models.synthetic, mechlens_retina.phenomena; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_fast_path_equals_the_module(model: SyntheticRetina) -> None:
    stim = noise_stimulus(model, n_times=30, seed=3)
    windows = model.windows(stim["stimulus"]).contiguous()
    with torch.no_grad():
        z = model.below(windows)
        np.testing.assert_allclose(model.bipolar_movie(stim["stimulus"].values).numpy(), z.numpy(), atol=1e-4)
        below, above = model.split("bipolar")
        np.testing.assert_allclose(above(below(windows)).numpy(), model.module(windows).numpy(), rtol=1e-6)
    fast = model.predict(stim)["response"].values
    slow = Model.predict(model, stim)["response"].values  # the base class's windows path
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-3)


def test_conv_weights_are_the_separable_filters(model: SyntheticRetina) -> None:
    w = model.conv.weight.detach().numpy()
    for c, bt in enumerate(model.spec.types):
        np.testing.assert_allclose(w[c], np.einsum("t,yx->tyx", temporal_filter(bt), dog(bt)), rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(w[4 + c], np.einsum("t,yx->tyx", delayed_filter(bt), dog(bt)), rtol=1e-5, atol=1e-8)
        # a centre-surround field: positive centre, negative surround, net gain 1 - surround weight
        space = dog(bt)
        assert space[7, 7] > 0 > space[7, 0]
        assert space.sum() == pytest.approx(1 - bt.surround_weight, abs=1e-6)


def test_filter_polarity_and_kinetics(model: SyntheticRetina) -> None:
    """ON types answer a light flash with depolarisation, OFF types with hyperpolarisation; fast peaks first."""
    z = model.bipolar_movie(full_field(flash_movie(+1.0))["stimulus"].values).numpy()[
        :, :4, 18, 18
    ]  # (time after the flash, type)
    truth = model.ground_truth_types()
    peaks = {}
    for c, bt in enumerate(model.spec.types):
        first = z[np.argmax(np.abs(z[:, c])), c]
        assert np.sign(first) == bt.polarity, bt.name
        assert truth[c]["polarity"] == ("ON" if bt.polarity > 0 else "OFF")
        peaks[bt.name] = np.argmax(np.abs(z[:, c]))
        # "fast"/"slow" is the time to peak; transience (biphasic index) is a separate axis here:
        # ON-slow is the most transient type (its rebound outweighs its first lobe inside the window)
        f = temporal_filter(bt)
        assert np.abs(f).sum() > 0, bt.name
    transient = {bt.name: bt.biphasic for bt in model.spec.types}
    assert transient["ON-slow"] > 1.0 > transient["ON-fast"]
    assert peaks["OFF-fast"] < peaks["OFF-slow"]
    assert peaks["ON-fast"] < peaks["ON-slow"]
    assert truth[0]["t_peak_s"] < truth[1]["t_peak_s"] and truth[2]["t_peak_s"] < truth[3]["t_peak_s"]


def test_ground_truth_types_describe_every_channel(model: SyntheticRetina) -> None:
    truth = model.ground_truth_types()
    assert [t["channel"] for t in truth] == list(range(8))
    assert [t["name"] for t in truth] == model.channel_names
    assert {t["path"] for t in truth[:4]} == {"direct"} and {t["path"] for t in truth[4:]} == {"delayed"}
    assert all(truth[4 + c]["t_peak_s"] > truth[c]["t_peak_s"] for c in range(4))
    assert {(t["polarity"], t["kinetics"]) for t in truth} == {
        ("ON", "fast"),
        ("ON", "slow"),
        ("OFF", "fast"),
        ("OFF", "slow"),
    }


def test_cells_have_kinds_and_positions(model: SyntheticRetina) -> None:
    assert model.cell_kind == ["OFF"] * 3 + ["ON"] * 2 + ["ON-OFF"] * 3
    assert model.cell_position_um.shape == (8, 2)
    out = model.predict(full_field(np.zeros(45, np.float32)))
    assert list(out["cell_kind"].values) == model.cell_kind
    # the spontaneous rate at grey is a few Hz
    assert np.all((out["response"].values > 0.5) & (out["response"].values < 15))


def test_cell_kinds_follow_their_polarity(model: SyntheticRetina) -> None:
    dark = model.predict(full_field(flash_movie(-2.0)))["response"].values
    light = model.predict(full_field(flash_movie(+2.0)))["response"].values
    base = dark[0]
    kinds = np.array(model.cell_kind)
    early = slice(0, 12)  # the first 120 ms after the flash: the centre response, before any rebound
    assert np.all(dark[early][:, kinds == "OFF"].max(0) > base[kinds == "OFF"] + 20)
    assert np.all(light[early][:, kinds == "OFF"].max(0) < base[kinds == "OFF"] + 1)
    assert np.all(light[early][:, kinds == "ON"].max(0) > base[kinds == "ON"] + 20)
    assert np.all(dark[early][:, kinds == "ON"].max(0) < base[kinds == "ON"] + 1)
    onoff = kinds == "ON-OFF"
    assert np.all(dark[:, onoff].max(0) > base[onoff] + 5) and np.all(light[:, onoff].max(0) > base[onoff] + 5)


def test_gain_control_lowers_gain_at_high_contrast(model: SyntheticRetina) -> None:
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(160).astype(np.float32)
    factors = {}
    for contrast in (0.2, 1.0):
        z = model.bipolar_movie(full_field(contrast * noise)["stimulus"].values)
        with torch.no_grad():
            parts = model.above.parts(z)
        active = parts["subunit"] > 1e-3
        factors[contrast] = (parts["output"][active] / parts["subunit"][active]).mean().item()
    assert factors[1.0] < 0.8 * factors[0.2]  # the divisive factor falls with contrast
    off = SyntheticRetina(gain_control=0.0)
    with torch.no_grad():
        parts = off.above.parts(off.bipolar_movie(full_field(noise)["stimulus"].values))
    torch.testing.assert_close(parts["output"], parts["subunit"])


def test_gain_control_acts_with_a_delay(model: SyntheticRetina) -> None:
    """A strong flash's gain signal peaks after the subunit it divides (the delayed copy drives it)."""
    with torch.no_grad():
        parts = model.above.parts(model.bipolar_movie(full_field(flash_movie(-3.0))["stimulus"].values))
    sub = parts["subunit"][:, 0, 18, 18].numpy()  # OFF-fast
    gain = parts["gain_signal"][:, 0, 18, 18].numpy()
    assert np.argmax(gain) > np.argmax(sub)


def test_amacrine_inhibition_is_delayed_and_subtracts(model: SyntheticRetina) -> None:
    stim = full_field(flash_movie(-2.0))
    z = model.bipolar_movie(stim["stimulus"].values)
    with torch.no_grad():
        parts = model.above.parts(z)
    off = 1  # an OFF cell: the ON pathway's rebound after a dark flash inhibits it through amacrine cells
    exc = parts["excitation"][:, off].numpy()
    inh = parts["inhibition"][:, off].numpy()
    assert inh.max() > 0 and np.argmax(inh) > np.argmax(exc)
    without = SyntheticRetina(amacrine=0.0).predict(stim)["response"].values
    with_ = model.predict(stim)["response"].values
    assert np.all(without >= with_ - 1e-4)
    assert (without - with_)[:, off].max() > 2.0


def test_parameters_are_checked_and_round_trip(tmp_path: object, model: SyntheticRetina) -> None:
    with pytest.raises(ParameterError, match="gain_control"):
        SyntheticRetina(gain_control=-1.0)
    path = tmp_path / "synthetic.json"  # type: ignore[operator]
    SyntheticRetina(amacrine=0.5).save(path)
    back = SyntheticRetina.load(path)
    assert back.params.amacrine == 0.5 and back.params.gain_control == 1.0


def test_default_spec_is_the_documented_one() -> None:
    spec = default_spec()
    assert [t.name for t in spec.types] == ["OFF-fast", "OFF-slow", "ON-fast", "ON-slow"]
    assert len(spec.cells) == 8
