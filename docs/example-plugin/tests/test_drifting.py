"""The plugin's own tests: the mechlens conformance kit plus the physics."""

import numpy as np
import pytest
from mechlens_gratings.drifting import DriftingGrating

from mechlens.errors import ParameterError
from mechlens.interfaces import Grid
from mechlens.testing import parametrize_with_checks


@parametrize_with_checks([DriftingGrating, DriftingGrating(speed_um_s=[-440.0, 440.0])])
def test_conforms(check):
    check()


def test_a_speed_sweep_gives_one_condition_per_speed():
    ds = DriftingGrating(speed_um_s=[-440.0, 440.0]).generate(0)
    assert ds.sizes["condition"] == 2


def test_phase_moves_at_the_stated_speed():
    ds = DriftingGrating(speed_um_s=550.0).generate(0)
    row = ds["stimulus"].sel(time=slice(0, None)).isel(y=0).values
    # one pixel (55 um) at 550 um/s takes 0.1 s = 10 frames
    np.testing.assert_allclose(row[10, 1:], row[0, :-1], atol=1e-5)


def test_unresolvable_wavelength_is_rejected():
    with pytest.raises(ParameterError, match="wavelength_um"):
        DriftingGrating(wavelength_um=60.0, pixel_um=55.0)
    with pytest.raises(ParameterError, match="wavelength_um"):  # on the default 55 um pixels
        DriftingGrating(wavelength_um=60.0).generate(0)


def test_it_renders_on_the_model_grid():
    grid = Grid((18, 16), 1 / 30, 20, 50.0)
    ds = DriftingGrating().generate(0, grid)
    assert (ds.sizes["y"], ds.sizes["x"]) == (18, 16)
    assert ds.attrs["frame_period_s"] == pytest.approx(1 / 30)
    with pytest.raises(ParameterError, match="pixel_um"):
        DriftingGrating(pixel_um=55.0).generate(0, grid)
