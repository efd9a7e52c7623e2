from __future__ import annotations

import json
import re

import numpy as np
import pytest
import xarray as xr
from experiment_toys import (
    BrokenExperiment,
    ToyFlashExperiment,
    ToyNoiseExperiment,
    toy_registry,
)

from mechlens import experiments, io
from mechlens.errors import PluginError, PluginNotFoundError, SchemaError, UsageError
from mechlens.interfaces import Experiment
from mechlens.toymodels import ToyCNN


def test_run_all_saves_each_result_and_the_report(tmp_path, capsys, caplog):
    reg = toy_registry()
    with caplog.at_level("INFO", logger="mechlens"):
        paths = experiments.run_all(outdir=tmp_path, seed=3, history="mechlens run", registry=reg)
    assert [p.name for p in paths] == ["toy-flash-sweep.nc", "toy-noise-run.nc"]
    assert (tmp_path / "report.html").stat().st_size > 1000
    ds = io.load(tmp_path / "toy-flash-sweep.nc")
    assert ds.attrs["experiment"] == "toy-flash-sweep"
    assert ds.attrs["experiment_distribution"] == "toy-dist"
    assert ds.attrs["model"] == "toy-cnn" and ds.attrs["seed"] == 3
    assert ds.attrs["history"].endswith(": mechlens run")  # an ISO 8601 timestamp first (CF history)
    assert ds["in_window"].dims == ("condition", "time")
    # each result announced once, by the log (library code prints nothing)
    assert capsys.readouterr().out == ""
    assert sum("wrote" in r.getMessage() and "toy-flash-sweep.nc" in r.getMessage() for r in caplog.records) == 1


def test_int_cells_pick_the_most_responsive_cells_in_the_window():
    reg = toy_registry()
    model = ToyCNN(n_cells=4)
    exp = ToyFlashExperiment()
    chosen = experiments.select_cells(exp, model, registry=reg)
    assert chosen is not None and len(chosen) == 2
    # recompute the ranking by hand: max - min of each cell's response inside the window
    ds = experiments.run_experiment(ToyFlashExperiment, model, registry=reg)
    from mechlens.pipeline import merge

    stim = reg.get("stimulus", "toy-flash")(intensity=[0.5, 1.0, 2.0]).generate(0)
    full = merge([stim, model.predict(stim)])
    resp = full["response"].where(exp.window_mask(full))
    spread = (resp.max(["condition", "time"]) - resp.min(["condition", "time"])).values
    expected = sorted(np.array(model.cells)[np.argsort(-spread)[:2]])
    assert chosen == expected
    assert json.loads(ds.attrs["analysed_cells"]) == expected
    assert list(ds["cell"].values) == expected


def test_generic_numbers_and_mechanism_are_computed_from_the_data():
    reg = toy_registry()
    ds = experiments.run_experiment("toy-flash-sweep", ToyCNN(), registry=reg)
    nums = experiments.summary(ds)
    for key, value in nums.items():
        assert ds.attrs[key] == pytest.approx(value, nan_ok=True)
    # the toy attributor is complete by construction; keeping 2 of 3 channels explains part of it
    assert nums["completeness_error_rel"] < 1e-4
    assert 0 < nums["explained_fraction_mean"] < 1
    # keeping every channel would be exact: explained fraction of the full attribution is 1
    full = ds.drop_vars(["weights", "components", "component"])
    full["components"] = xr.DataArray(np.eye(3, dtype=np.float32), dims=("component", "unit_channel"))
    full["weights"] = ds["attribution"].rename(unit_channel="component")
    assert experiments.summary(full)["explained_fraction_mean"] == pytest.approx(1.0, abs=1e-5)
    assert -1 <= nums["reduced_r_mean"] <= 1
    text = ds.attrs["mechanism"]
    focus = str(ds.attrs.get("focus_cell") or ds["weights"]["cell"].values[0])
    assert text.startswith(f"{focus}: ") and "the 150 ms after the flash" in text
    assert re.search(r"generates? \d+% of the response deviation", text)
    assert ds.attrs["measure_name"] == "peak slope"
    assert ds["measure_peak"].dims == ("condition", "cell")


def test_window_relative_to_an_event_per_condition():
    class Evented(Experiment):
        name = "evented"
        window = (0.0, 0.02)
        window_event = "event"

    t = np.round(np.arange(-0.02, 0.1, 0.01), 9)
    ds = xr.Dataset(
        {
            "response": (("condition", "time", "cell"), np.ones((2, t.size, 1))),
            "event": ("condition", [0.03, 0.05]),
        },
        coords={"time": t, "condition": [1, 2]},
    )
    mask = Evented().window_mask(ds)
    on = [list(np.round(t[m], 3)) for m in mask.transpose("condition", "time").values]
    assert on == [[0.03, 0.04, 0.05], [0.05, 0.06, 0.07]]
    with pytest.raises(SchemaError, match="no event variable 'event'"):
        Evented().window_mask(ds.drop_vars("event"))


def test_a_model_that_cannot_load_fails_each_experiment_once_with_one_message(tmp_path):
    reg = toy_registry()
    with pytest.raises(PluginError, match=r"2 of 2 experiment\(s\) failed \(toy-flash-sweep, toy-noise-run: .*n_cells"):
        experiments.run_all(outdir=tmp_path, model_params={"n_cells": 0}, registry=reg)
    assert not list(tmp_path.glob("*.nc")) and not (tmp_path / "report.html").exists()


def test_a_failing_experiment_is_reported_and_the_others_are_saved(tmp_path, caplog):
    reg = toy_registry(BrokenExperiment, ToyNoiseExperiment)
    with pytest.raises(PluginError, match=r"1 of 2 experiment\(s\) failed \(toy-broken: .*contrast"):
        experiments.run_all(outdir=tmp_path, registry=reg)
    assert (tmp_path / "toy-noise-run.nc").exists()
    assert not (tmp_path / "toy-broken.nc").exists()
    assert (tmp_path / "report.html").exists()
    assert any("toy-broken failed" in r.message for r in caplog.records)


def test_unknown_names_and_empty_registries_are_usage_errors(tmp_path):
    reg = toy_registry()
    with pytest.raises(PluginNotFoundError, match="did you mean toy-flash-sweep"):
        experiments.run_all(names=["toy-flash-swep"], outdir=tmp_path, registry=reg)
    from mechlens.registry import Registry

    with pytest.raises(UsageError, match="no experiments are registered"):
        experiments.resolve(None, Registry(autoload=False))


def test_model_override_and_checkpoint_conflict(tmp_path):
    reg = toy_registry(ToyNoiseExperiment)
    paths = experiments.run_all(outdir=tmp_path, model="toy-cnn", model_params={"n_cells": 2}, registry=reg)
    ds = io.load(paths[0])
    assert json.loads(ds.attrs["model_parameters"])["n_cells"] == 2
    with pytest.raises(UsageError, match="either a model checkpoint or model parameters"):
        experiments.load_model("toy-cnn", {"n_cells": 2}, "x.pt", reg)
