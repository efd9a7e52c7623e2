"""Reversing grating and object motion."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from mechlens_stimuli._render import pixel_centres, square_wave
from mechlens_stimuli.gratings import ObjectMotion, ReversingGrating

from mechlens.errors import ParameterError
from mechlens.testing import check_stimulus, parametrize_with_checks


@parametrize_with_checks([ReversingGrating, ObjectMotion])
def test_conformance(check: Callable[[], None]) -> None:
    check()


def test_reversing_grating_bars_and_reversals() -> None:
    ds = check_stimulus(ReversingGrating)
    v = ds["stimulus"].values
    t = ds["time"].values
    row = v[:, 0, :]
    assert np.all(v == v[:, :1, :]), "vertical bars"
    # 5-px bars (275 um) aligned on pixel edges: +-1 exactly, 10-px spatial period
    assert set(np.unique(row)) == {-1.0, 1.0}
    np.testing.assert_array_equal(row[:, :40], row[:, 10:50])
    assert np.all(row[:, :5] == row[:, :1]) and np.all(row[:, 5] == -row[:, 0])
    np.testing.assert_allclose(ds["reversal_time"].values, np.arange(6) * 0.5, atol=1e-9)
    # the polarity flips exactly at each reversal and nowhere else; the history shows the grating
    flips = t[1:][np.any(row[1:] != row[:-1], axis=1)]
    np.testing.assert_allclose(flips, ds["reversal_time"].values, atol=1e-9)
    assert np.all(row[t < 0] == row[0]) and np.abs(row[0]).min() == 1.0


def test_reversing_grating_phase_sweep_is_sub_pixel() -> None:
    ds = ReversingGrating(phase_um=[0.0, 27.5], duration=1.0).generate(0)
    assert list(ds["condition"].values) == [0.0, 27.5]
    shifted = ds["stimulus"].isel(condition=1, time=0, y=0).values
    # half a pixel shift: the pixels straddling an edge are half bright, half dark
    assert np.sum(shifted == 0) == 10 and set(np.unique(np.abs(shifted))) == {0.0, 1.0}


def test_object_motion_object_and_background() -> None:
    ds = check_stimulus(ObjectMotion, {"mode": ["differential", "global"]})
    assert list(ds["condition"].values) == ["differential", "global"]
    t = ds["time"].values
    diff, glob = ds.isel(condition=0), ds.isel(condition=1)
    obj = diff["object_position"].values
    np.testing.assert_array_equal(obj, glob["object_position"].values)  # the object moves the same way
    np.testing.assert_array_equal(glob["background_position"].values, obj)
    assert not np.array_equal(diff["background_position"].values, obj)
    # periodic: rest 0.93 s, a 275 um shift over 0.07 s, rest, shift back
    moving = np.abs(np.diff(obj)) > 0
    assert obj[t < 0.93 - 1e-9].max() == 0 and obj.max() == pytest.approx(275.0)
    np.testing.assert_allclose(np.diff(obj)[moving][:7], 275.0 / 7)
    # pixels in the disk centre follow the object grating, corners the background grating
    x = pixel_centres(ObjectMotion().parameters_on(None))
    centre_row = diff["stimulus"].values[:, 25, 22:28]
    expected = square_wave(x, 55.0, 165.0, obj)[:, 22:28]
    np.testing.assert_allclose(centre_row, expected, atol=1e-6)
    corner = diff["stimulus"].values[:, 0, :]
    np.testing.assert_allclose(corner, square_wave(x, 55.0, 165.0, diff["background_position"].values), atol=1e-6)


def test_object_motion_jitter_statistics() -> None:
    ds = ObjectMotion(motion="jitter", jitter_um=8.0, duration=20.0, mode="differential").generate(0)
    t = ds["time"].values
    for name in ("object_position", "background_position"):
        steps = np.diff(ds[name].values[t >= 0])
        assert steps.std() == pytest.approx(8.0, rel=0.05)
    a = np.diff(ds["object_position"].values)
    b = np.diff(ds["background_position"].values)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.1  # independent paths


@pytest.mark.parametrize(
    ("cls", "params", "name", "allowed"),
    [
        (ReversingGrating, {"bar_um": 5000.0}, "bar_um", r"\(0, 2750\] um"),
        (ReversingGrating, {"half_period": 0.0}, "half_period", "> 0"),
        (ObjectMotion, {"object_radius_um": 2000.0}, "object_radius_um", r"\(0, 1375\] um"),
        (ObjectMotion, {"mode": "local"}, "mode", "'differential', 'global'"),
        (ObjectMotion, {"transition_s": 0.075}, "transition_s", "whole number of frames"),
    ],
)
def test_bad_parameters_are_rejected_naming_the_range(cls: type, params: dict, name: str, allowed: str) -> None:
    with pytest.raises(ParameterError, match=rf"{name}.*{allowed}"):
        # what depends on the grid is checked once the grid is known: when generating
        cls(**params).generate(0)
