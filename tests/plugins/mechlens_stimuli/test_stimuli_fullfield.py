"""Full-field stimuli: flash / step, omitted-stimulus flash train, paired flash."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from mechlens_stimuli.fullfield import Flash, OmittedStimulus, PairedFlash

from mechlens.errors import ParameterError
from mechlens.testing import check_stimulus, parametrize_with_checks


def _trace(ds, **sel) -> tuple[np.ndarray, np.ndarray]:
    """Time and the value of the (uniform) movie, checking it is uniform in space."""
    movie = ds["stimulus"].isel(**sel).values
    assert np.ptp(movie.reshape(movie.shape[0], -1), axis=1).max() == 0, "a full-field movie must be uniform"
    return ds["time"].values, movie[:, 0, 0]


@parametrize_with_checks([Flash, OmittedStimulus, PairedFlash])
def test_conformance(check: Callable[[], None]) -> None:
    check()


def test_flash_default_is_the_latency_ig_dark_step() -> None:
    """Notes 3.1: 40 grey frames of history, then a step to -1.5 for the 400 ms analysed epoch."""
    ds = check_stimulus(Flash)
    t, v = _trace(ds)
    assert ds.sizes["time"] == 80 and t[0] == pytest.approx(-0.4)
    np.testing.assert_array_equal(v[t < 0], 0.0)
    np.testing.assert_array_equal(v[t >= 0], np.float32(-1.5))
    assert float(ds["flash_onset"]) == 0.0 and float(ds["flash_offset"]) == pytest.approx(0.4)
    assert ds["flash_onset"].attrs["units"] == "s"


def test_flash_intensity_sweep_gives_one_condition_per_value() -> None:
    values = [-0.5, -1.0, -2.0, -3.0]
    ds = check_stimulus(Flash, {"intensity": values, "duration": 0.02, "post_s": 0.3})
    assert list(ds["condition"].values) == values and ds["condition"].attrs["swept"] == "intensity"
    for i, value in enumerate(values):
        t, v = _trace(ds, condition=i)
        on = (t >= -1e-9) & (t < 0.02 - 1e-9)
        np.testing.assert_array_equal(v[on], np.float32(value))
        np.testing.assert_array_equal(v[~on], 0.0)
    assert ds["time"].values[-1] == pytest.approx(0.31)


def test_osr_onsets_and_omitted_flash_are_where_the_parameters_say() -> None:
    ds = check_stimulus(OmittedStimulus, {"period": 0.08, "n_flashes": 6, "duration": 0.02, "intensity": -2.0})
    t, v = _trace(ds)
    np.testing.assert_allclose(ds["flash_onset"].values, np.arange(6) * 0.08, atol=1e-9)
    # onsets: the frames where the movie turns dark
    dark = v < 0
    rising = t[1:][dark[1:] & ~dark[:-1]]
    np.testing.assert_allclose(rising, ds["flash_onset"].values, atol=1e-9)
    assert dark.sum() == 6 * 2 and np.all(v[dark] == np.float32(-2.0))
    omitted = float(ds["omitted_time"])
    assert omitted == pytest.approx(6 * 0.08)
    assert not dark[t >= omitted - 0.08 + 0.02 - 1e-9].any()  # nothing after the last flash: the omission
    assert t[-1] == pytest.approx(omitted + 0.4 - 0.01)  # post_s of recording after the omitted onset
    assert float(ds["period"]) == pytest.approx(0.08)


def test_osr_period_sweep() -> None:
    periods = [0.06, 0.1, 0.15]
    ds = OmittedStimulus(period=periods, n_flashes=5).generate(0)
    assert ds.sizes["condition"] == 3 and list(ds["condition"].values) == periods
    np.testing.assert_allclose(ds["omitted_time"].values, [0.3, 0.5, 0.75], atol=1e-9)
    np.testing.assert_allclose(ds["period"].values, periods)
    for i, p in enumerate(periods):
        np.testing.assert_allclose(ds["flash_onset"].isel(condition=i).values, np.arange(5) * p, atol=1e-9)
        _, v = _trace(ds, condition=i)
        assert (v < 0).sum() == 5 * 2


def test_osr_defaults_follow_the_notes() -> None:
    p = OmittedStimulus().params
    assert (p.period, p.duration, p.intensity) == (0.1, 0.02, -2.0)


@pytest.mark.parametrize(
    ("cls", "params", "name", "allowed"),
    [
        (Flash, {"duration": -0.1}, "duration", "> 0"),
        (Flash, {"duration": 0.015}, "duration", "whole number of frames"),
        (Flash, {"intensity": [-1.0, -20.0]}, "intensity", r"\[-10, 10\]"),
        (OmittedStimulus, {"period": 0.02}, "period", "> 0.02"),
        (OmittedStimulus, {"period": [0.1, 0.01]}, "period", "> 0.02"),
        (OmittedStimulus, {"n_flashes": 0}, "n_flashes", r"\[1, 10000\]"),
        (PairedFlash, {"interval": 0.0}, "interval", "> 0"),
        (PairedFlash, {"post_s": -1.0}, "post_s", ">= 0"),
    ],
)
def test_bad_parameters_are_rejected_naming_the_range(cls: type, params: dict, name: str, allowed: str) -> None:
    with pytest.raises(ParameterError, match=rf"{name}.*{allowed}"):
        # what depends on the grid is checked once the grid is known: when generating
        cls(**params).generate(0)


def test_paired_flash_gap() -> None:
    ds = check_stimulus(PairedFlash, {"interval": [0.02, 0.1]})
    for i, gap in enumerate([0.02, 0.1]):
        t, v = _trace(ds, condition=i)
        dark = t[v < 0]
        np.testing.assert_allclose(dark, [0.0, 0.01 + gap], atol=1e-9)
        np.testing.assert_allclose(ds["flash_onset"].isel(condition=i).values, dark, atol=1e-9)
