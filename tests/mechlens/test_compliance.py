"""Every kind of file mechlens writes passes the IOOS compliance checker for CF-1.11 and ACDD-1.3 (issue 20).

Each output (a stimulus, a prediction, an attribution, a reduction, an experiment's result, and a
reduction by the built-in integrated-gradients and cell-types plugins) is written from toy inputs
and checked with the checker's Python API; the test fails on any high-priority finding except the
two documented in docs/data-model.md ("Files"): CF has no standard name, and no calendar-free time
axis, for what mechlens stores. The scores are printed (``pytest -s``). The checker reads the CF
standard-name table packaged with it; a download attempt fails the test.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr
from experiment_toys import toy_registry

import mechlens
from mechlens import experiments, io
from mechlens.toymodels import ToyCNN, ToyNoise

pytest.importorskip("compliance_checker")
from compliance_checker.runner import CheckSuite

#: the checks and versions the files claim (their ``Conventions``)
CHECKS = ("cf:1.11", "acdd:1.3")

#: high-priority findings that are expected, with why (docs/data-model.md, "Files")
EXPECTED = {
    # the checker takes a dim named `time` for a calendar axis; mechlens's time is seconds relative to
    # the stimulus (CF time coordinates need "units since <date>", which would be a made-up date)
    "cf:1.11": (re.compile(r"^Coordinate variable 'time' should have standard_name='time'"),),
    # ACDD asks every data variable for a CF standard_name; the CF table has none for firing rates,
    # attributions or contrast, and an invented one fails CF 3.3
    "acdd:1.3": (re.compile(r"^standard_name$"),),
}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    from compliance_checker.cf import util

    def no_download(*args, **kwargs):
        raise AssertionError("the compliance checker tried to download the CF standard-name table")

    saved = util.download_cf_standard_name_table
    util.download_cf_standard_name_table = no_download
    cs = CheckSuite()
    cs.load_all_available_checkers()
    yield cs
    util.download_cf_standard_name_table = saved


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, Path]:
    """One file of each kind mechlens writes, from toy inputs (the whole set in a few seconds)."""
    out = tmp_path_factory.mktemp("outputs")
    reg = toy_registry()
    model = ToyCNN()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # completeness warnings of the quick built-in attribution
        files = {
            "stimulus": io.save(ToyNoise(contrast=[0.5, 1.0]).generate(3, model.grid), out / "stimulus.nc"),
            "response": io.save(mechlens.run(model, ToyNoise(contrast=[0.5, 1.0]), seed=3), out / "response.nc"),
            "attribution": io.save(
                mechlens.run(model, "toy-noise", "toy-share", seed=3, registry=reg), out / "attribution.nc"
            ),
            "reduction": io.save(
                mechlens.run(model, "toy-flash", "toy-share", "toy-keep", seed=3, registry=reg), out / "reduction.nc"
            ),
            "builtin-reduction": io.save(
                mechlens.run(
                    model,
                    ToyNoise(contrast=[0.5, 1.0]),
                    "integrated-gradients",
                    "cell-types",
                    attributor_params={"n_steps": 4},
                    seed=3,
                ),
                out / "builtin.nc",
            ),
        }
        written = experiments.run_all(outdir=out / "exp", seed=3, history="mechlens run -o exp", registry=reg)
    files.update({f"experiment {p.stem}": p for p in written})
    return files


def high_priority_findings(suite, path: Path) -> dict[str, list[str]]:
    """Per check, the messages of its failed high-priority results that are not :data:`EXPECTED`."""
    ds = suite.load_dataset(str(path))
    found: dict[str, list[str]] = {}
    for name, (groups, errors) in suite.run_all(ds, list(CHECKS)).items():
        agg = suite.build_structure(name, groups, str(path), 1)
        print(
            f"{path.name} {name}: {agg['scored_points']}/{agg['possible_points']} points; failed: "
            f"{agg['high_count']} high, {agg['medium_count']} medium, {agg['low_count']} low; "
            f"checker errors: {sorted(errors)}"
        )
        bad = []
        for result in agg["high_priorities"]:
            if result.value[0] >= result.value[1]:
                continue
            messages = result.msgs or [result.name]
            bad += [f"{result.name}: {m}" for m in messages if not any(p.search(m) for p in EXPECTED.get(name, ()))]
        found[name] = bad
    return found


@pytest.mark.parametrize(
    "kind",
    [
        "stimulus",
        "response",
        "attribution",
        "reduction",
        "builtin-reduction",
        "experiment toy-flash-sweep",
        "experiment toy-noise-run",
    ],
)
def test_every_output_passes_cf_and_acdd(outputs, suite, kind):
    assert high_priority_findings(suite, outputs[kind]) == {name: [] for name in CHECKS}


def test_the_file_layout(outputs):
    path = outputs["experiment toy-flash-sweep"]
    with netCDF4.Dataset(path) as nc:
        names = nc.ncattrs()
        attrs = {k: nc.getncattr(k) for k in names}
        # CF 2.5.1: no coordinate variable carries _FillValue
        for dim in nc.dimensions:
            if dim in nc.variables:
                assert "_FillValue" not in nc.variables[dim].ncattrs(), dim
        # condition leads wherever it appears (docs/contract.md)
        for var in nc.variables.values():
            assert "condition" not in var.dimensions or var.dimensions[0] == "condition", var.name
        assert nc.variables["in_window"].getncattr("units") == "1"
    # a few top-level attrs (CF, ACDD, identification) and one JSON object per stage and for the result
    assert attrs["Conventions"] == "CF-1.11, ACDD-1.3"
    assert len(names) <= 25, names
    for acdd in ("title", "summary", "keywords", "date_created", "source", "history"):
        assert attrs[acdd], acdd
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", line) for line in attrs["history"].splitlines())
    assert attrs["history"].endswith(": mechlens run -o exp")
    groups = [k for k in names if k.startswith("mechlens_") and k not in ("mechlens_version", "mechlens_format")]
    stages = {k: json.loads(attrs[k]) for k in groups}
    assert {"mechlens_model", "mechlens_stimulus", "mechlens_attributor", "mechlens_experiment"} <= set(stages)
    assert stages["mechlens_experiment"]["plugin"] == "toy-flash-sweep"
    assert stages["mechlens_stimulus"]["attrs"]["frame_period_s"] == 0.01
    assert isinstance(stages["mechlens_model"]["parameters"], dict)
    assert isinstance(attrs["mechlens_format"], np.integer)


def test_integer_attrs_stay_integers(outputs):
    with netCDF4.Dataset(outputs["builtin-reduction"]) as nc:
        assert isinstance(nc.variables["attribution"].getncattr("n_steps"), np.integer)
        info = json.loads(nc.getncattr("mechlens_attributor"))["attrs"]["attribution_info"]
        assert info["n_steps"] == 4


def test_load_gives_back_the_attrs_the_pipeline_made(tmp_path):
    reg = toy_registry()
    ds = mechlens.run(ToyCNN(), "toy-flash", "toy-share", "toy-keep", seed=3, registry=reg)
    ds.attrs.update(measure_plot=json.dumps(["measure_a"]), measure_value=float("nan"), own_flag=True)
    back = io.load(io.save(ds, tmp_path / "r.nc"))
    for key, value in ds.attrs.items():
        got = back.attrs[key]
        if isinstance(value, float) and np.isnan(value):
            assert np.isnan(got), key
        else:
            assert got == io.safe_attr(value) or np.array_equal(got, value), key
    assert io.parameters(back, "stimulus") == io.parameters(ds, "stimulus")
    # saved again, the file keeps its creation date and history
    again = io.load(io.save(back, tmp_path / "r2.nc"))
    assert again.attrs["created"] == back.attrs["created"] and again.attrs["history"] == back.attrs["history"]


def test_files_written_before_the_layout_still_load(tmp_path):
    reg = toy_registry()
    ds = mechlens.run(ToyCNN(), "toy-flash", "toy-share", seed=3, registry=reg)
    flat = ds.copy()
    flat.attrs = {**io._safe_attrs(ds.attrs), "Conventions": "CF-1.11", "created": "2024-01-01T00:00:00+00:00"}
    flat.to_netcdf(tmp_path / "old.nc", engine="netcdf4")
    back = io.load(tmp_path / "old.nc")
    assert back.attrs["attributor"] == "toy-share" and back.attrs["frame_period_s"] == ds.attrs["frame_period_s"]
    assert back.attrs["created"] == "2024-01-01T00:00:00+00:00"
    assert xr.Dataset.equals(back[["stimulus"]], ds[["stimulus"]])
