from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from experiment_toys import toy_registry

from mechlens import experiments, figures
from mechlens.toymodels import ToyCNN


def _png_ok(path):
    from matplotlib.image import imread

    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    # not a blank canvas: several distinct colours drawn
    assert len(np.unique(img.reshape(-1, img.shape[-1])[::97], axis=0)) > 5


@pytest.fixture(scope="module")
def result():
    return experiments.run_experiment("toy-flash-sweep", ToyCNN(), registry=toy_registry())


def test_every_standard_figure_is_drawn_for_a_full_result(result, tmp_path):
    paths = figures.standard_figures(result, tmp_path, prefix="t_")
    names = [p.stem for p in paths]
    assert names == ["t_stimulus", "t_response", "t_attribution", "t_contributions", "t_reduced", "t_measure"]
    for p in paths:
        _png_ok(p)


def test_figures_need_only_their_variables(result, tmp_path):
    bare = result[["stimulus", "response"]]
    names = [p.stem for p in figures.standard_figures(bare, tmp_path)]
    assert names == ["stimulus", "response"]


def _movie(kind: str) -> xr.DataArray:
    rng = np.random.default_rng(0)
    t, y, x = 8, 6, 7
    if kind == "trace":
        m = np.broadcast_to(rng.standard_normal((t, 1, 1)), (t, y, x))
    elif kind == "x":
        m = np.broadcast_to(rng.standard_normal((t, 1, x)), (t, y, x))
    elif kind == "y":
        m = np.broadcast_to(rng.standard_normal((t, y, 1)), (t, y, x))
    else:
        m = rng.standard_normal((t, y, x))
    return xr.DataArray(m.copy(), dims=("time", "y", "x"))


@pytest.mark.parametrize("kind", ["trace", "x", "y", "frames"])
def test_stimulus_layout_follows_the_movie(kind, tmp_path):
    movie = _movie(kind)
    assert figures.stimulus_layout(movie) == kind
    t = np.round(np.arange(8) * 0.01, 9)
    ds = xr.Dataset({"stimulus": movie.assign_coords(time=t, y=np.arange(6.0), x=np.arange(7.0))})
    _png_ok(figures.stimulus_figure(ds, tmp_path / f"{kind}.png"))


def test_type_colours_are_fixed_per_channel_and_components_take_their_channel_colour(result):
    assert figures.type_color(3) == figures.type_color(13) != figures.type_color(4)
    kept = [int(c) for c in np.argmax(result["components"].values, axis=1)]
    assert figures.component_colors(result) == [figures.type_color(c) for c in kept]
    assert figures.component_labels(result) == [f"c{c}" for c in kept]


def test_labels_use_unit_types_and_name_mixed_components_as_modes(result):
    ds = result.assign_coords(unit_type=("unit_channel", ["OFF-fast", "ON-slow", "OFF-slow"]))
    assert figures.channel_labels(ds) == ["OFF-fast", "ON-slow", "OFF-slow"]
    same = result.assign_coords(unit_type=("unit_channel", ["ON-fast", "OFF-slow", "ON-fast"]))
    assert figures.channel_labels(same) == ["ON-fast [channel 0]", "OFF-slow", "ON-fast [channel 2]"]
    mixed = ds.drop_vars(["components", "weights", "component"])
    mixed["components"] = xr.DataArray([[0.7, -0.3, 0.0]], dims=("component", "unit_channel"))
    assert figures.component_labels(mixed) == ["mode 0 (c0+ c1-)"]
    assert figures.component_colors(mixed) == [figures.MODE_COLORS[0]]


def test_focus_prefers_attrs_and_otherwise_the_largest_response(result):
    _, cell = figures.focus(result)
    resp = result["response"].where(result["in_window"].astype(bool))
    spread = (resp.max("time") - resp.min("time")).max("condition")
    assert cell == str(spread["cell"].values[int(spread.argmax())])
    tagged = result.assign_attrs(focus_condition=0, focus_cell=str(result["cell"].values[-1]))
    assert figures.focus(tagged) == (0, str(result["cell"].values[-1]))
    assert figures.shown_conditions(tagged) == [0, result.sizes["condition"] - 1]


def test_measure_variables_are_chosen_by_attr_or_by_having_a_sweep_dim(result):
    ds = result.copy()
    ds["measure_rho"] = ("cell", np.zeros(ds.sizes["cell"]))
    ds["measure_aligned"] = (("rel_time", "cell"), np.ones((4, ds.sizes["cell"])))
    assert figures.measure_variables(ds) == ["measure_peak", "measure_aligned"]
    ds.attrs["measure_plot"] = '["measure_rho"]'
    assert figures.measure_variables(ds) == ["measure_rho"]


def test_ground_truth_is_drawn_beside_the_model(result, tmp_path):
    gt = result["attribution"].isel(unit_channel=[0, 1]).rename(unit_channel="gt_unit")
    ds = result.assign(gt_attribution=gt.assign_coords(gt_unit=["OFF-fast", "ON-slow"]))
    ds["gt_attribution"].attrs.update(long_name="ground-truth contribution", units="Hz")
    path = figures.ground_truth_figure(ds, tmp_path / "gt.png")
    _png_ok(path)
    assert figures.ground_truth_figure(result, tmp_path / "none.png") is None
