"""Issue 18 (items 3, 4): every built-in stimulus and experiment runs on the grid a model declares.

The model is a third party's, registered through a real entry point: an 18x16 grid (not square),
30 frames per second, 20 frames of history, no pixel size stated, layers not named conv1/conv2.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from mechlens_retina.experiments import EXPERIMENTS

import mechlens
from mechlens import io, registry
from mechlens.cli import main

#: a third party's model; ``pixel_um`` may be set to state a pixel size (default: none stated)
ODD_GRID = '''
from dataclasses import dataclass

import torch
from torch import nn

from mechlens import hookimpl
from mechlens.interfaces import Model
from mechlens.parameters import param


class OddGrid(Model):
    """A third party's model on an 18x16 grid at 30 Hz, 20 frames of history (for tests)."""

    name = "odd-grid"

    @dataclass(frozen=True)
    class Parameters:
        frame_period_s: float = param(1 / 30, "seconds per frame", units="s", gt=0)
        history: int = param(20, "frames of history", min=1)
        pixel_um: float = param(0.0, "pixel size (0: not stated)", units="um", min=0)

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        self.history, self.frame_period_s, self.input_shape = p.history, p.frame_period_s, (18, 16)
        self.pixel_um = p.pixel_um or None
        g = torch.Generator().manual_seed(3)
        self.below = nn.Sequential(nn.Conv2d(p.history, 3, 5))
        self.above = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(3 * 14 * 12, 4), nn.Softplus())
        with torch.no_grad():
            for t in [*self.below.parameters(), *self.above.parameters()]:
                t.copy_(torch.randn(t.shape, generator=g) * 0.3)
        self.module = nn.Sequential(self.below, self.above).eval()

    @property
    def cells(self):
        return ["a", "b", "c", "d"]

    def layers(self):
        return {"bipolar": (3, 14, 12)}

    def torch_module(self):
        return self.module

    def split(self, layer):
        self.check_layer(layer)
        return self.below, self.above


@hookimpl
def mechlens_models():
    return [OddGrid]
'''


@pytest.fixture
def odd_grid(make_dist):
    make_dist("odd-grid-lab", {"odd_grid_plugin": ODD_GRID}, {"oddgrid": "odd_grid_plugin"})
    registry.reset()
    yield
    registry.reset()


STIMULI = sorted(
    ["white-noise", "natural-scenes", "flash", "osr", "paired-flash", "moving-bar", "flashed-bar",
     "motion-reversal", "contrast-steps", "reversing-grating", "object-motion"]
)  # fmt: skip
#: short movies, where the defaults are long
SHORT = {"white-noise": {"duration": 0.5}, "natural-scenes": {"duration": 0.5}, "reversing-grating": {"duration": 1.0},
         "object-motion": {"duration": 1.0}, "moving-bar": {"speed": 2200.0}}  # fmt: skip


@pytest.mark.parametrize("period", [1 / 30, 0.02])
def test_every_built_in_stimulus_renders_on_the_model_grid(odd_grid, period):
    for name in STIMULI:
        ds = mechlens.run("odd-grid", name, model_params={"frame_period_s": period}, stimulus_params=SHORT.get(name))
        assert (ds.sizes["y"], ds.sizes["x"]) == (18, 16), name
        assert ds.attrs["frame_period_s"] == pytest.approx(period), name
        np.testing.assert_allclose(np.diff(ds["time"].values), period, rtol=1e-6, err_msg=name)
        # the model's whole window before time 0: it answers from time 0 on
        assert ds["response"].dropna("time", how="all")["time"].values[0] < 1e-9, name
        # the provenance states what it was rendered with
        used = json.loads(ds.attrs["stimulus_parameters"])
        assert (used["height_px"], used["width_px"], used["size_px"]) == (18, 16, None), name


@pytest.mark.slow
@pytest.mark.parametrize("period", [1 / 30, 0.02])
def test_every_built_in_experiment_runs_on_the_model_grid(odd_grid, tmp_path, period):
    names = sorted(cls.name for cls in EXPERIMENTS)
    argv = ["run", "--model", "odd-grid", "--set", f"model.frame_period_s={period!r}", "-o", str(tmp_path)]
    assert main(argv) == 0
    for name in names:
        ds = io.load(tmp_path / f"{name}.nc")
        assert (ds.sizes["y"], ds.sizes["x"]) == (18, 16) and ds.attrs["layer"] == "bipolar", name
        assert ds.attrs["frame_period_s"] == pytest.approx(period), name
        assert ds["in_window"].values.any(), name
    osr = io.load(tmp_path / "omitted-stimulus.nc")
    # the recipe's periods in whole frames of the model
    periods = osr["condition"].values
    np.testing.assert_allclose(periods / period, np.round(periods / period), atol=1e-6)
    assert len(set(np.round(periods, 9))) == 3
    lat = io.load(tmp_path / "latency-coding.nc")
    assert lat["response"].dropna("time", how="all")["time"].values[0] <= 0.0  # the flash onset is seen


def test_a_long_history_keeps_the_flash_onset():
    from mechlens_retina.models.cnn import RetinaCNN

    small = RetinaCNN(checkpoint="random", image_size=20, history=60, kernel1=7, kernel2=5)
    ds = mechlens.run(small, "flash", stimulus_params={"duration": 0.05})
    assert ds.attrs["pre_s"] == pytest.approx(0.6)
    assert ds["response"].dropna("time", how="all")["time"].values[0] < 1e-9


@pytest.mark.parametrize(
    ("setting", "named", "model_value"),
    [
        ("stimulus.size_px=30", "stimulus.size_px", "18 px in height"),
        ("stimulus.frame_period_s=0.01", "stimulus.frame_period_s", "0.0333333 s"),
        ("stimulus.pre_s=0.1", "stimulus.pre_s", "history of 20 frames"),
    ],
)
def test_a_value_that_contradicts_the_model_grid_exits_2_naming_it(
    odd_grid, tmp_path, capsys, setting, named, model_value
):
    argv = ["run", "--model", "odd-grid", "--stimulus", "flash", "--set", setting, "-o", str(tmp_path / "x.nc")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert named in err and model_value in err
    assert not (tmp_path / "x.nc").exists()


def test_a_pixel_size_mismatch_is_refused(odd_grid, tmp_path, capsys):
    # the retina CNN states 55 um pixels: 50 um stimulus pixels are refused by name
    argv = ["run", "--model", "retina-cnn", "--stimulus", "flash", "-o", str(tmp_path / "x.nc")]
    for key, value in {"checkpoint": '"random"', "image_size": 12, "history": 5, "kernel1": 5, "kernel2": 3}.items():
        argv += ["--set", f"model.{key}={value}"]
    assert main([*argv, "--set", "stimulus.pixel_um=50"]) == 2
    err = capsys.readouterr().err
    assert "stimulus.pixel_um" in err and "55 um" in err
    # a third party's model that states its pixel size, the same
    argv = [
        "run",
        "--model",
        "odd-grid",
        "--set",
        "model.pixel_um=50",
        "--stimulus",
        "flash",
        "-o",
        str(tmp_path / "y.nc"),
    ]
    assert main([*argv, "--set", "stimulus.pixel_um=55"]) == 2
    assert "model's pixels are 50 um" in capsys.readouterr().err
    # and one that states none takes the stimulus's own
    ds = mechlens.run("odd-grid", "flash", stimulus_params={"pixel_um": 40.0, "duration": 0.1})
    assert float(ds["x"].diff("x").mean()) == pytest.approx(40.0)


def test_a_stimulus_that_ignores_the_grid_is_refused_by_the_model(odd_grid):
    from mechlens.errors import SchemaError
    from mechlens.toymodels import ToyNoise

    with pytest.raises(SchemaError, match="pixels are 55 um apart"):
        mechlens.run("odd-grid", ToyNoise(pixel_um=55.0, size=18, width=16), model_params={"pixel_um": 50.0})
