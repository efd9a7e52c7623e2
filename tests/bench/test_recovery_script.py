"""bench/recovery.py's bookkeeping: which test-A checkpoints belong to which circuit, and the lesion
check read on the cells the score is computed on (the scoring itself is tested in
tests/plugins/mechlens_retina/experiments/test_retina_recovery.py)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from bench_scripts import load_script


@pytest.fixture(scope="module")
def recovery():
    return load_script("recovery")


def test_each_circuit_version_has_its_own_test_a_checkpoints(recovery):
    fixed, other = recovery.test_a_paths({})
    assert (fixed.name, other.name) == ("recovery-fixed.safetensors", "recovery-other.safetensors")
    fixed3, other3 = recovery.test_a_paths({"circuit": "v3"})
    assert (fixed3.name, other3.name) == ("recovery-fixed-v3.safetensors", "recovery-other-v3.safetensors")
    assert recovery.other_circuit({"circuit": "v3"}) == {"circuit": "v3", "silence": ["OFF-fast"]}
    assert recovery._toml(recovery.other_circuit({"circuit": "v3"})) == '{circuit="v3", silence=["OFF-fast"]}'


def test_each_phenomenon_is_controlled_by_a_circuit_without_its_own_ablation_table_types(recovery):
    from mechlens_retina.phenomena.ground_truth import MECHANISMS

    for name, mech in MECHANISMS.items():
        assert recovery.control_silenced(name) == mech.types
    sets = recovery.control_sets()
    assert sets[0] == recovery.OTHER_SILENCED and len(sets) == len(set(sets))
    assert set(sets) == {recovery.OTHER_SILENCED} | {mech.types for mech in MECHANISMS.values()}
    # the first control keeps its checkpoint name; every other set is named by its types
    assert recovery.other_path({"circuit": "v3"}) == recovery.test_a_paths({"circuit": "v3"})[1]
    assert recovery.other_path({}, ("ON-slow",)).name == "recovery-other-on-slow.safetensors"
    assert (
        recovery.other_path({"circuit": "v5"}, ("OFF-fast", "ON-fast", "ON-slow")).name
        == "recovery-other-off-fast-on-fast-on-slow-v5.safetensors"
    )
    assert recovery.other_circuit({"circuit": "v5"}, ("ON-slow",)) == {"circuit": "v5", "silence": ["ON-slow"]}


def test_a_modified_circuit_is_refused_as_the_ground_truth(recovery):
    with pytest.raises(SystemExit, match="modified circuit"):
        recovery.circuit_tag({"circuit": "v3", "silence": ["OFF-fast"]})


def test_the_lesion_check_reads_only_the_cells_that_show_the_phenomenon(recovery, monkeypatch):
    # intact: only an ON-OFF cell passes; the circuit shows the phenomenon in the OFF cells
    passed = {"intact": [False, True], "kept": [False, False], "silenced": [False, False]}
    calls = iter(["intact", "kept", "silenced"])

    def fake_measure(model, only):
        ds = xr.Dataset({"passed": ("cell", np.array(passed[next(calls)]))}, coords={"cell": ["off", "onoff"]})
        ds.attrs.update(measure="latency_coding", passed=int(ds["passed"].any()))
        return {only[0]: ds}

    monkeypatch.setattr(recovery, "measure_all", fake_measure)
    monkeypatch.setattr(recovery, "lesion_channels", lambda model, layer, keep: model)
    out = recovery.lesion_verdicts(object(), np.array([0, 1]), ["OFF-fast", "ON-slow"], ["OFF-fast"], "x", ["off"])
    assert out == {"intact": False, "kept only": False, "kept silenced": False}
    calls = iter(["intact", "kept", "silenced"])
    out = recovery.lesion_verdicts(object(), np.array([0, 1]), ["OFF-fast", "ON-slow"], ["OFF-fast"], "x", ["onoff"])
    assert out == {"intact": True, "kept only": False, "kept silenced": False}


def test_in_window_cuts_each_condition_from_its_own_event(recovery):
    t = np.round(np.arange(-0.1, 1.0, 0.01), 6)
    values = np.tile(t, (2, 1)) + np.array([[0.0], [10.0]])  # condition 1 offset by 10
    pooled = xr.DataArray(values, dims=("condition", "time"), coords={"condition": [0, 1], "time": t})
    event = xr.DataArray([0.2, 0.5], dims="condition")
    out = recovery.in_window(pooled, event, 0.1)
    assert out.sizes == {"condition": 2, "time": 11}
    np.testing.assert_allclose(out["time"].values, np.arange(11) * 0.01, atol=1e-9)
    np.testing.assert_allclose(out.sel(condition=0).values, 0.2 + np.arange(11) * 0.01, atol=1e-9)
    np.testing.assert_allclose(out.sel(condition=1).values, 10.5 + np.arange(11) * 0.01, atol=1e-9)


def test_window_scores_tell_a_split_that_differs_only_in_the_window(recovery):
    # two types; the truth's split flips sign inside the event window only, the model's never does
    rng = np.random.default_rng(0)
    t = np.round(np.arange(0.0, 1.0, 0.01), 6)
    base = rng.normal(size=(1, t.size, 1, 2)) * 5
    truth = base.copy()
    window = (t >= 0.5) & (t <= 0.7)
    truth[:, window, :, :] = truth[:, window, :, ::-1]
    coords = {"condition": [0], "time": t, "cell": ["c"], "unit_channel": [0, 1]}
    dims = ("condition", "time", "cell", "unit_channel")
    model = xr.DataArray(base, dims=dims, coords=coords)
    truth_da = xr.DataArray(truth, dims=dims, coords=coords)
    event = xr.DataArray([0.5], dims="condition")
    whole = float(recovery.R.score_pooled(model, truth_da, ["c"]).values[0])
    cut = recovery.window_scores({"m": model, "t": truth_da}, truth_da, event, 0.2, ["c"])
    assert whole > 0.5  # the whole probe hides the difference
    assert cut["m"] < -0.9 and cut["t"] > 0.99


def test_shown_cells_are_the_cells_that_pass_alone_and_the_population_only_when_none_does(recovery, monkeypatch):
    def fake_measure(truth):
        def ds(passed, population):
            out = xr.Dataset({"passed": ("cell", np.array(passed))}, coords={"cell": ["off", "onoff", "on"]})
            out.attrs["population_passed"] = population
            return out

        # the reversal: the population passes and one ON-OFF cell alone; a population-only phenomenon
        return {"motion_reversal": ds([0, 1, 0], 1), "population_only": ds([0, 0, 0], 1)}

    monkeypatch.setattr(recovery, "measure_all", fake_measure)
    assert recovery.shown_cells(object()) == {"motion_reversal": ["onoff"], "population_only": ["off", "onoff", "on"]}


def test_score_set_reads_every_model_and_control_with_the_same_score(recovery):
    """The headline kind asks the mechanism's types for the circuit's contribution: a model with the
    truth's split but without the mechanism type scores high on the split and low on the headline,
    and the controls are scored the same way."""
    rng = np.random.default_rng(1)
    t = np.round(np.arange(0.0, 0.5, 0.01), 6)
    coords = {"condition": [0, 1], "time": t, "cell": ["c0", "c1"], "unit_channel": [0, 1, 2]}
    dims = ("condition", "time", "cell", "unit_channel")
    truth = xr.DataArray(rng.normal(size=(2, t.size, 2, 3)) * [5.0, 2.0, 1.0], dims=dims, coords=coords)
    without = truth.where(truth["unit_channel"] != 2, 0.0)
    truth_ds = xr.Dataset(
        {
            "response": 10 + truth.sum("unit_channel"),
            "baseline_response": xr.full_like(truth.isel(unit_channel=0, drop=True), 10.0),
        }
    )
    pooled = {"A": truth, "own": without}
    split = recovery.score_set(pooled, truth_ds, truth, ["c0", "c1"], "split", [2])
    mech = recovery.score_set(pooled, truth_ds, truth, ["c0", "c1"], "mechanism", [2])
    assert split["A"] > 0.99 and mech["A"] > 0.99
    assert split["own"] > 0.8 and mech["own"] == 0.0
    assert mech["trivial"] <= split["trivial"] + 1e-12 and mech["shuffled"] <= split["shuffled"] + 1e-12
    assert set(recovery.KINDS) == {"mechanism", "split", "raw"}


def test_the_measure_contrast_attributes_the_burst_over_the_peak_before_to_the_types_that_raise_it(recovery):
    """Two types: 'a' carries the response before the reversal and falls after it; 'b' makes the burst.
    The contrast is read at each condition's own burst and peak before, and only 'b' raises it."""
    t = np.round(np.arange(0.0, 2.0, 0.01), 6)
    rev = [1.0, 1.2]
    a = np.zeros((2, t.size))
    b = np.zeros((2, t.size))
    for k, t0 in enumerate(rev):
        a[k] = np.where(t <= t0, 10.0 * np.exp(-((t - (t0 - 0.2)) ** 2) / 0.01), 2.0)
        b[k] = 30.0 * np.exp(-((t - (t0 + 0.1)) ** 2) / 0.002)
    attr = np.stack([a, b], axis=-1)[:, :, None, :]  # (condition, time, cell, type)
    dims = ("condition", "time", "cell", "unit_channel")
    pooled = xr.DataArray(attr, dims=dims, coords={"time": t, "cell": ["c"], "unit_channel": [0, 1]})
    response = pooled.sum("unit_channel") + 5.0
    out = recovery.measure_contrast(pooled, response, xr.DataArray(rev, dims="condition"), "motion-reversal", ["c"])
    # burst at t0 + 0.1 (a = 2, b = 30), peak before at t0 - 0.2 (a = 10, b ~ 0)
    np.testing.assert_allclose(out.sel(cell="c").values, [2.0 - 10.0, 30.0], atol=0.05)
    assert recovery.driving_types(out, ["a", "b"]) == ["b"]
    # the OSR reads its peak against the rate at the event itself
    osr = recovery.measure_contrast(pooled, response, xr.DataArray(rev, dims="condition"), "osr", ["c"])
    np.testing.assert_allclose(osr.sel(cell="c").values, [2.0 - float(a[0, 100]), 30.0 - float(b[0, 100])], atol=0.05)
    assert recovery.driving_types(-out, ["a", "b"]) == ["a"]
    assert recovery.driving_types(xr.zeros_like(out), ["a", "b"]) == []
    assert recovery.driving_types(out * 0.01, ["a", "b"]) == []  # a 0.3 Hz rise is no phenomenon


def test_the_figure_draws_each_probe_from_its_largest_condition_around_its_event(recovery, tmp_path):
    t = np.round(np.arange(0.0, 3.0, 0.01), 6)
    rng = np.random.default_rng(3)
    data = rng.normal(size=(3, t.size, 1, 4))
    data[2, :100] *= 50  # condition 2 is the largest, early on, far from its event
    data[1, (t > 1.6) & (t < 1.7), :, 3] += 100.0  # condition 1 bursts just after its event
    dims = ("condition", "time", "cell", "unit_channel")
    truth = xr.DataArray(data, dims=dims, coords={"time": t, "cell": ["c"], "unit_channel": [0, 1, 2, 3]})
    event = xr.DataArray([1.0, 1.5, 2.0], dims="condition")
    assert recovery.trace_panel({}, truth, "c", None)[0] == 2
    k, traces = recovery.trace_panel({"test A": truth * 0.5}, truth, "c", event)
    assert k == 1 and list(traces) == ["circuit", "test A"]
    tr = traces["circuit"]
    assert tr.dims == ("time", "unit_channel")
    np.testing.assert_allclose([tr["time"].min(), tr["time"].max()], [-0.5, 0.6], atol=1e-9)
    np.testing.assert_allclose(traces["test A"].values, 0.5 * tr.values)
    names = ["OFF-fast", "OFF-slow", "ON-fast", "ON-slow"]
    contrast = xr.DataArray(rng.normal(size=(1, 4)), dims=("cell", "unit_channel"), coords={"cell": ["c"]})
    scores = {k: 0.1 for k in ("A", "B", "random", "trivial", "shuffled", "own")}
    osr_figure = {"traces": traces, "cell": "c", "condition": k, "event": "omitted_time"}
    flash_figure = {"traces": traces, "cell": "c", "condition": k, "event": None}
    rows = [
        {"probe": "osr", "figure": osr_figure, "contrasts": {"circuit": contrast}, "scores": scores},
        {"probe": "flash", "figure": flash_figure, "contrasts": {}, "scores": scores},
    ]
    out = tmp_path / "fig" / "recovery.png"
    recovery.plot_figure(rows, names, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def _row(probe: str, a: float, own: float) -> dict:
    """A table row as main() builds it (reversal-like; test B's gate fails)."""
    scores = {"A": a, "B": 0.1, "random": 0.0, "trivial": 0.0, "shuffled": -0.33, "own": own, "other": 0.2}
    gate = {"passed": True, "r_median": 0.99, "peak_error_ms": 2.0}
    contrast = xr.DataArray([[-30.0, 0.0, 2.0, 80.0]], dims=("cell", "unit_channel"), coords={"cell": ["c"]})
    verdicts = {"intact": True, "kept only": True, "kept silenced": False}
    circuit_vs = {("ON-slow",): {"mechanism": 0.0, "split": 0.85}}
    return {
        "probe": probe, "phenomenon": "motion_reversal", "scores": scores,
        "gate": {"A": gate, "B": {**gate, "passed": False}}, "kept": ["ON-slow"], "truth": ["ON-slow"], "cells": 3,
        "trivial_each": [0.0] * 4, "shuffled_max": -0.3, "lesions": verdicts, "seconds": 1.0, "own": ("ON-slow",),
        "circuit_vs": circuit_vs, "windowed": {}, "per_cell": {}, "own_types": {"A": 0.9}, "split": {"A": 0.97},
        "contrasts": {"circuit": contrast, "test A": contrast}, "driving": ["ON-slow"], "driving_lesions": verdicts,
        "smallest": [("ON-slow",)] if probe == "motion-reversal" else [("OFF-fast", "ON-slow")],
    }  # fmt: skip


def test_the_table_calls_a_test_failing_when_a_control_scores_high_and_withholds_ungated_scores(recovery, capsys):
    names = ["OFF-fast", "OFF-slow", "ON-fast", "ON-slow"]
    rows = [_row("motion-reversal", 0.90, -0.07), _row("osr", 0.92, 0.85)]
    recovery.print_table(rows, names, free=False)
    recovery.print_diagnoses(rows, names)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("| motion reversal")]
    assert "| low |" in lines[0] and "| HIGH: test fails |" in lines[1]
    assert "| 0.90 | 0.97 / 0.90 |" in lines[0] and "gate fails: not scored" in lines[0]
    assert "shows it / shows it / lost" in lines[0]
    # the kept types against this circuit's smallest ablation set; the default row in brackets where it differs
    assert "| ON-slow | ON-slow | yes |" in lines[0]
    assert "| ON-slow | OFF-fast, ON-slow (ON-slow) | no |" in lines[1]
    assert "Raised by (positive parts, >= 80 % of their sum): circuit ON-slow; test A ON-slow" in out
    every = {(cs, kind): rows[0]["scores"] for cs in ("shown", "responding") for kind in recovery.KINDS}
    recovery.print_ungated([("motion_reversal", every)])
    assert capsys.readouterr().out.count("motion_reversal") == 6
