"""The shared renderers and the common parameters of the stimulus library."""

from __future__ import annotations

from dataclasses import fields
from types import SimpleNamespace

import numpy as np
import pytest
from mechlens_stimuli import _render
from mechlens_stimuli._render import (
    COMMON_PARAMETERS,
    disk_coverage,
    interval_coverage,
    pixel_centres,
    square_wave,
    stimulus_parameters,
)

from mechlens.errors import ParameterError
from mechlens.interfaces import Grid
from mechlens.parameters import param, specs

GRID = SimpleNamespace(size_px=20, pixel_um=55.0)


def test_interval_coverage_centre_of_mass_is_subpixel_exact() -> None:
    """Area weighting puts the centre of mass exactly on the bar when its width is whole pixels."""
    x = pixel_centres(GRID)
    centres = np.linspace(-200.0, 200.0, 37)  # steps of 11.1 um, a fifth of a pixel
    cover = interval_coverage(centres - 55.0, centres + 55.0, x, GRID.pixel_um)
    com = (cover * x).sum(axis=1) / cover.sum(axis=1)
    np.testing.assert_allclose(com, centres, atol=1e-9)
    np.testing.assert_allclose(cover.sum(axis=1) * GRID.pixel_um, 110.0)  # the bar's whole width is drawn
    assert cover.min() >= 0 and cover.max() <= 1


def test_interval_coverage_other_widths_ripple_within_the_box_filter_bound() -> None:
    """Other widths: the centre of mass ripples by at most pixel^2 / (4 width) and its slope is exact."""
    x = pixel_centres(GRID)
    centres = np.linspace(-200.0, 200.0, 401)
    cover = interval_coverage(centres - 60.0, centres + 60.0, x, GRID.pixel_um)
    com = (cover * x).sum(axis=1) / cover.sum(axis=1)
    err = np.abs(com - centres)
    assert 0.1 < err.max() <= GRID.pixel_um**2 / (4 * 120.0)
    assert abs(np.polyfit(centres, com, 1)[0] - 1.0) < 1e-3


def test_square_wave_is_the_pixel_mean_of_the_grating() -> None:
    x = pixel_centres(GRID)
    shifts = np.array([0.0, 13.7, -40.2])
    got = square_wave(x, GRID.pixel_um, 80.0, shifts)
    fine = (np.arange(2000) + 0.5) / 2000 - 0.5  # 2000 samples inside each pixel
    u = x[None, :, None] + fine[None, None, :] * GRID.pixel_um - shifts[:, None, None]
    brute = np.where(np.mod(u, 160.0) < 80.0, 1.0, -1.0).mean(axis=2)
    np.testing.assert_allclose(got, brute, atol=2e-3)


def test_disk_coverage_area() -> None:
    grid = SimpleNamespace(size_px=50, pixel_um=55.0)
    mask = disk_coverage(grid, (0.0, 0.0), 275.0)
    area = mask.sum() * 55.0**2
    assert abs(area - np.pi * 275.0**2) / (np.pi * 275.0**2) < 0.01
    np.testing.assert_allclose(mask, mask.T)  # centred disk: symmetric


def test_pulse_train_and_fullfield() -> None:
    env = _render.pulse_train(10, np.array([1, 6]), 2, -2.0)
    np.testing.assert_array_equal(env, [0, -2, -2, 0, 0, 0, -2, -2, 0, 0])
    movie = _render.fullfield(env, 3)
    assert movie.shape == (10, 3, 3) and movie.dtype == np.float32
    np.testing.assert_array_equal(movie[:, 2, 1], env)


def test_zigzag_is_injective() -> None:
    values = [_render.zigzag(k) for k in range(-50, 50)]
    assert len(set(values)) == 100 and min(values) == 0


@stimulus_parameters
class _Demo:
    gap: float | list[float] = param(0.05, "a gap", units="s", gt=0, sweepable=True)
    count: int = param(2, "a count", min=1)

    def __post_init__(self) -> None:
        if self.count > 5:
            raise ParameterError("count", "got too many; allowed range [1, 5]")


def test_common_parameters_follow_the_stimulus_own() -> None:
    names = [f.name for f in fields(_Demo)]
    assert names == ["gap", "count", *COMMON_PARAMETERS]
    # the grid's parameters default to the model's grid, else to the library's defaults
    assert {s.name: s.default for s in specs(_Demo)}["pixel_um"] is None
    fitted = _render.fit_grid(_Demo(), None)
    assert (fitted.size_px, fitted.height_px, fitted.width_px) == (50, 50, 50)
    assert (fitted.pixel_um, fitted.frame_period_s, fitted.pre_s) == (55.0, 0.01, 0.4)
    assert _Demo.__dataclass_params__.frozen


def test_durations_must_be_whole_frames_and_own_checks_still_run() -> None:
    _Demo(gap=0.07, frame_period_s=0.01)
    _Demo(gap=[0.02, 0.03], frame_period_s=0.01)
    with pytest.raises(ParameterError, match=r"gap.*whole number of frames.*0\.01 or 0\.02"):
        _Demo(gap=0.015, frame_period_s=0.01)
    with pytest.raises(ParameterError, match=r"gap.*whole number"):
        _Demo(gap=[0.02, 0.025], frame_period_s=0.01)
    with pytest.raises(ParameterError, match=r"pre_s"):
        _Demo(pre_s=0.405, frame_period_s=0.01)
    # without a frame period the check waits for the grid (the model's, else 10 ms)
    with pytest.raises(ParameterError, match=r"gap.*whole number of frames of 0\.01 s"):
        _render.fit_grid(_Demo(gap=0.015), None)
    _render.fit_grid(_Demo(gap=0.02), Grid((4, 4), 0.02, 3))
    with pytest.raises(ParameterError, match=r"gap.*whole number of frames of 0\.02 s"):
        _render.fit_grid(_Demo(gap=0.03), Grid((4, 4), 0.02, 3))
    with pytest.raises(ParameterError, match=r"count"):
        _Demo(count=6)


MODEL_GRID = Grid((18, 16), 1 / 30, 20, 50.0)


def test_unset_grid_parameters_follow_the_model_grid() -> None:
    p = _render.fit_grid(_Demo(), MODEL_GRID)
    assert (p.height_px, p.width_px, p.size_px) == (18, 16, None)  # not square: no size_px
    assert (p.pixel_um, p.frame_period_s) == (50.0, 1 / 30)
    assert p.pre_s == pytest.approx(20 / 30)  # the model's whole window before time 0
    # a duration left at its default is rounded to whole frames of the model (0.05 s -> 2 frames)
    assert p.gap == pytest.approx(2 / 30)
    # one the user gave must be whole frames
    with pytest.raises(ParameterError, match=r"gap.*whole number of frames"):
        _render.fit_grid(_Demo(gap=0.04), MODEL_GRID)
    assert _render.fit_grid(_Demo(gap=0.1), MODEL_GRID).gap == 0.1
    # a model that states no pixel size leaves the stimulus's own
    assert _render.fit_grid(_Demo(), Grid((18, 16), 0.01, 5)).pixel_um == 55.0
    assert _render.fit_grid(_Demo(pixel_um=40.0), Grid((18, 16), 0.01, 5)).pixel_um == 40.0


@pytest.mark.parametrize(
    ("given", "name", "model_value"),
    [
        ({"size_px": 30}, "size_px", "18 px in height"),
        ({"height_px": 18, "width_px": 18}, "width_px", "16 px in width"),
        ({"pixel_um": 55.0}, "pixel_um", "model's pixels are 50 um"),
        ({"frame_period_s": 0.01}, "frame_period_s", "model's frames are 0.0333333 s"),
        ({"pre_s": 0.1}, "pre_s", "history of 20 frames"),
    ],
)
def test_explicit_values_that_contradict_the_grid_are_refused(given: dict, name: str, model_value: str) -> None:
    with pytest.raises(ParameterError, match=rf"^{name}: .*{model_value}.*") as err:
        _render.fit_grid(_Demo(**given), MODEL_GRID)
    assert err.value.name == name
    # the same through a stimulus: named as the CLI spells it
    from mechlens_stimuli.fullfield import Flash

    with pytest.raises(ParameterError, match=rf"^stimulus\.{name}: .*{model_value}"):
        Flash(**given).generate(0, MODEL_GRID)


def test_explicit_values_that_agree_with_the_grid_are_kept() -> None:
    p = _render.fit_grid(_Demo(height_px=18, width_px=16, pixel_um=50.0, frame_period_s=1 / 30, pre_s=1.0), MODEL_GRID)
    assert (p.height_px, p.width_px, p.pre_s) == (18, 16, 1.0)
    with pytest.raises(ParameterError, match=r"height_px.*size_px = 20"):
        _Demo(size_px=20, height_px=18)
