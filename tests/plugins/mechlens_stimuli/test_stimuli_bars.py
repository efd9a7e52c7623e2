"""Bars: moving bar (sub-pixel motion at the stated speed), flashed bar, motion reversal."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from mechlens_stimuli.bars import FlashedBar, MotionReversal, MovingBar, speed_um_s

from mechlens.errors import ParameterError
from mechlens.interfaces import Grid
from mechlens.testing import check_stimulus, parametrize_with_checks

PIXEL = 55.0
HALF_SCREEN = 25 * PIXEL


def _profile(ds) -> np.ndarray:
    """(time, x) profile of a bar movie, checking the bar is full height (every row equal)."""
    movie = ds["stimulus"].values
    assert np.abs(movie - movie[:, :1, :]).max() == 0, "a full-height bar: every row is the same"
    return movie[:, 0, :].astype(float)


def _centre_of_mass(ds, intensity: float) -> np.ndarray:
    prof = _profile(ds) / intensity
    x = ds["x"].values
    return (prof * x).sum(axis=1) / prof.sum(axis=1)


def _on_grid(centre: np.ndarray, width: float) -> np.ndarray:
    return np.abs(centre) + width / 2 <= HALF_SCREEN - 1e-9


@parametrize_with_checks([MovingBar, FlashedBar, MotionReversal])
def test_conformance(check: Callable[[], None]) -> None:
    check()


def test_speed_conversion() -> None:
    assert speed_um_s(0.08) == 440.0  # Berry et al. 1999 in the authors' units
    assert speed_um_s(0.19) == MotionReversal().params.speed


@pytest.mark.parametrize("speed", [440.0, 1100.0, 3000.0])
def test_moving_bar_centre_of_mass_moves_at_the_stated_speed(speed: float) -> None:
    ds = MovingBar(speed=speed).generate(0)
    centre = ds["bar_center"].values
    t = ds["time"].values
    ok = _on_grid(centre, 110.0) & (t >= 0)
    assert ok.sum() > 50
    com = _centre_of_mass(ds.isel(time=ok), -1.0)
    # area-weighted rendering of a whole-pixel-wide bar: the centre of mass is the bar centre, sub-pixel
    np.testing.assert_allclose(com, centre[ok], atol=1e-6)
    slope = np.polyfit(t[ok], com, 1)[0]
    assert slope == pytest.approx(speed, rel=1e-9)
    # the stated path: start at -1650 um at t = 0, speed um/s
    np.testing.assert_allclose(centre[t >= 0][:10], -1650.0 + speed * t[t >= 0][:10], atol=1e-9)
    np.testing.assert_allclose(centre[t < 0], -1650.0)


def test_moving_bar_sub_pixel_steps_and_other_widths() -> None:
    """0.08 px/frame (4.4 um per frame) is rendered as smooth motion, also for a 133 um (Berry) bar."""
    ds = MovingBar(speed=440.0, width_um=133.0).generate(0)
    centre = ds["bar_center"].values
    ok = _on_grid(centre, 133.0)
    com = _centre_of_mass(ds.isel(time=ok), -1.0)
    steps = np.diff(com)
    # no staircase: every frame moves the bar by about 4.4 um (the box filter modulates it a little)
    assert 0.5 * 4.4 < steps.min() and steps.max() < 1.5 * 4.4 and steps.mean() == pytest.approx(4.4, rel=0.01)
    assert np.abs(com - centre[ok]).max() <= PIXEL**2 / (4 * 133.0)  # box-filter ripple bound
    t = ds["time"].values[ok]
    assert np.polyfit(t, com, 1)[0] == pytest.approx(440.0, rel=1e-3)
    # the whole bar is drawn: its area is width x intensity in every on-grid frame
    np.testing.assert_allclose(-_profile(ds.isel(time=ok)).sum(axis=1) * PIXEL, 133.0, rtol=1e-5)


def test_moving_bar_left_is_the_mirror_image() -> None:
    ds = MovingBar(direction=["right", "left"], speed=2200.0).generate(0)
    assert list(ds["condition"].values) == ["right", "left"]
    right, left = ds["stimulus"].isel(condition=0).values, ds["stimulus"].isel(condition=1).values
    np.testing.assert_allclose(left, right[:, :, ::-1])
    np.testing.assert_allclose(ds["bar_center"].isel(condition=1), -ds["bar_center"].isel(condition=0))
    assert float(ds["velocity"].isel(condition=1)) == -2200.0


def test_moving_bar_speed_sweep() -> None:
    speeds = [550.0, 1100.0, 2200.0]
    ds = MovingBar(speed=speeds, start_um=-825.0, stop_um=825.0).generate(0)
    assert list(ds["condition"].values) == speeds
    for i, v in enumerate(speeds):
        c = ds["bar_center"].isel(condition=i).values
        t = ds["time"].values
        moving = (t >= 0) & (t <= 1650.0 / v)
        assert np.polyfit(t[moving], c[moving], 1)[0] == pytest.approx(v)


@pytest.mark.parametrize(
    ("cls", "params", "name", "allowed"),
    [
        (MovingBar, {"width_um": 3000.0}, "width_um", r"\(0, 2750\] um"),
        (MovingBar, {"speed": -5.0}, "speed", "> 0"),
        (MovingBar, {"stop_um": -2000.0}, "stop_um", "> -1650"),
        (MovingBar, {"direction": "up"}, "direction", "'right', 'left'"),
        (FlashedBar, {"position": 1500.0}, "position", r"\(-1430, 1430\)"),
        (FlashedBar, {"width_um": 2800.0}, "width_um", "wider than the screen"),
        (FlashedBar, {"duration": 0.0}, "duration", "> 0"),
        (MotionReversal, {"reversal_um": [0.0, -2500.0]}, "reversal_um", "> -2200"),
        (MotionReversal, {"size_px": 10, "width_um": 600.0}, "width_um", r"\(0, 550\]"),
    ],
)
def test_bad_parameters_are_rejected_naming_the_range(cls: type, params: dict, name: str, allowed: str) -> None:
    with pytest.raises(ParameterError, match=rf"{name}.*{allowed}"):
        # what depends on the grid is checked once the grid is known: when generating
        cls(**params).generate(0)


def test_flashed_bar_positions_and_timing() -> None:
    positions = [-550.0, 27.5, 440.0]
    ds = check_stimulus(FlashedBar, {"position": positions})
    assert list(ds["condition"].values) == positions and ds["condition"].attrs["swept"] == "position"
    np.testing.assert_allclose(ds["bar_center"].values, positions)
    t = ds["time"].values
    for i, pos in enumerate(positions):
        one = ds.isel(condition=i)
        prof = _profile(one)
        shown = np.abs(prof).sum(axis=1) > 0
        np.testing.assert_allclose(t[shown], [0.0, 0.01], atol=1e-9)  # 20 ms from the onset
        com = _centre_of_mass(one.isel(time=shown), -1.0)
        np.testing.assert_allclose(com, pos, atol=1e-6)  # half-pixel offsets too
    assert float(ds["flash_onset"].isel(condition=0)) == 0.0


def test_flashed_bar_default_sweeps_the_grid() -> None:
    p = FlashedBar().parameters_on(None)
    assert isinstance(p.position, list) and len(p.position) == 25
    assert min(p.position) == -1320.0 and max(p.position) == 1320.0
    # on a model's 30 px grid: the positions whose bar centre lies on it (|x| <= 825 um)
    p = FlashedBar().parameters_on(Grid((30, 30), 0.01, 10, 55.0))
    assert p.position == [float(x) for x in np.arange(-770.0, 771.0, 110.0)]


def test_motion_reversal_reverses_where_and_when_stated() -> None:
    ds = check_stimulus(MotionReversal, {"reversal_um": [-220.0, 0.0, 220.0]})
    assert list(ds["condition"].values) == [-220.0, 0.0, 220.0]
    t = ds["time"].values
    for i, rev in enumerate([-220.0, 0.0, 220.0]):
        one = ds.isel(condition=i)
        t_rev = float(one["reversal_time"])
        assert t_rev == pytest.approx((rev + 2200.0) / 1045.0)
        c = one["bar_center"].values
        valid = np.isfinite(c)
        assert c[valid].max() <= rev + 1e-9 and c[valid].max() > rev - 1045.0 * 0.01
        before = valid & (t >= 0) & (t < t_rev - 0.02)
        after = valid & (t > t_rev + 0.02)
        assert np.polyfit(t[before], c[before], 1)[0] == pytest.approx(1045.0)
        assert np.polyfit(t[after], c[after], 1)[0] == pytest.approx(-1045.0)
        ok = valid & _on_grid(np.where(valid, c, 1e9), 110.0)
        np.testing.assert_allclose(_centre_of_mass(one.isel(time=ok), -1.0), c[ok], atol=1e-6)
        # the bar comes back to its start (off the grid) by the end of the condition's movie
        assert c[valid][-1] == pytest.approx(-2200.0, abs=1045.0 * 0.01)
