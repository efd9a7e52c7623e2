"""The agreement gate: the synthetic retina agrees with itself, and not with a delayed, flipped or shuffled copy."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import xarray as xr
from mechlens_retina.models.synthetic import SyntheticRetina
from mechlens_retina.phenomena import agreement as ag

from mechlens.errors import SchemaError


class Cached:
    """The synthetic retina, each probe's responses computed once for all the tests."""

    name = "synthetic-retina"

    def __init__(self) -> None:
        self.retina = SyntheticRetina()
        self.cache: dict[str, xr.Dataset] = {}

    def predict(self, stimulus: xr.Dataset) -> xr.Dataset:
        key = f"{stimulus.attrs.get('stimulus')} {stimulus.attrs.get('stimulus_parameters')}"
        if key not in self.cache:
            self.cache[key] = self.retina.predict(stimulus)
        return self.cache[key].copy(deep=True)


class Altered:
    """A model whose responses are the truth's, changed by ``change(response DataArray)``."""

    def __init__(self, truth: Cached, change: Callable[[xr.DataArray], xr.DataArray], name: str) -> None:
        self.truth, self.change, self.name = truth, change, name

    def predict(self, stimulus: xr.Dataset) -> xr.Dataset:
        ds = self.truth.predict(stimulus)
        ds["response"] = self.change(ds["response"])
        return ds


@pytest.fixture(scope="module")
def truth() -> Cached:
    return Cached()


@pytest.fixture(scope="module")
def itself(truth: Cached) -> dict[str, Any]:
    return ag.probe_agreement(truth, truth)


def test_the_truth_agrees_with_itself(itself: dict[str, Any]) -> None:
    assert json.loads(json.dumps(itself)) == itself  # JSON-serialisable as is
    assert set(itself["stimuli"]) == {"flash", "osr", "moving-bar", "motion-reversal"}
    assert itself["r_min_target"] == 0.8 and itself["peak_error_ms_max"] == 10.0
    for name, s in itself["stimuli"].items():
        assert s["cells"], f"{name}: no responding cell"
        assert s["r_median"] == pytest.approx(1.0) and s["r_min"] == pytest.approx(1.0)
        assert s["peak_error_ms"] == pytest.approx(0.0, abs=1e-9)
        assert s["passed"]
    assert itself["passed"]
    table = ag.format_agreement(itself)
    assert "| motion-reversal |" in table and "PASS" in table


def test_a_response_delayed_by_three_frames_fails(truth: Cached, itself: dict[str, Any]) -> None:
    def delay(r: xr.DataArray) -> xr.DataArray:
        axis = r.dims.index("time")
        first = np.take(r.values, [0, 0, 0], axis=axis)
        return r.copy(data=np.concatenate([first, np.take(r.values, np.arange(r.sizes["time"] - 3), axis=axis)], axis))

    out = ag.probe_agreement(Altered(truth, delay, "delayed"), truth)
    assert not out["passed"]
    for s in out["stimuli"].values():
        assert s["peak_error_ms"] == pytest.approx(30.0, abs=2.0)
        assert not s["passed"]
    # the per-cell table names each responding cell with its r and error on every probe
    table = ag.format_agreement(out, per_cell=True).split("\n")
    header = next(i for i, line in enumerate(table) if line.startswith("| cell |"))
    rows = {line.split(" | ")[0][2:]: line for line in table[header + 2 :]}
    cell = out["stimuli"]["osr"]["cells"][0]
    err = out["stimuli"]["osr"]["peak_error_ms_by_cell"][cell]
    assert f"{out['stimuli']['osr']['r'][cell]:.2f}, {err:.1f}" in rows[cell]
    assert set(rows) == {c for s in out["stimuli"].values() for c in s["cells"]}
    # a gate stored without per-cell numbers still renders
    bare = {**out, "stimuli": {k: {**v, "r": {}, "peak_error_ms_by_cell": {}} for k, v in out["stimuli"].items()}}
    assert "| - |" in ag.format_agreement(bare, per_cell=True)


def test_a_sign_flipped_response_fails(truth: Cached) -> None:
    def flip(r: xr.DataArray) -> xr.DataArray:
        return 2 * float(r.mean()) - r  # one offset for all conditions: r = -1

    out = ag.probe_agreement(Altered(truth, flip, "flipped"), truth)
    assert not out["passed"]
    for s in out["stimuli"].values():
        assert s["r_median"] == pytest.approx(-1.0) and not s["passed"]
    assert "FAIL" in ag.format_agreement(out)


def test_shuffled_cells_fail(truth: Cached) -> None:
    def shuffle(r: xr.DataArray) -> xr.DataArray:
        # reversing the order pairs cells of different kinds (the cells are listed kind by kind)
        return r.copy(data=r.values[..., ::-1])

    out = ag.probe_agreement(Altered(truth, shuffle, "shuffled"), truth)
    assert not out["passed"]
    assert min(s["r_median"] for s in out["stimuli"].values()) < ag.R_TARGET


def test_a_flat_model_and_foreign_cells(truth: Cached) -> None:
    probes = {"flash": ag.probe_stimuli()["flash"]}
    flat = ag.probe_agreement(Altered(truth, lambda r: r * 0 + 5.0, "flat"), truth, probes=probes)
    assert flat["stimuli"]["flash"]["r_median"] == 0.0 and not flat["passed"]
    renamed = Altered(truth, lambda r: r, "renamed")
    renamed.predict = lambda stim: truth.predict(stim).assign_coords(cell=[f"x{i}" for i in range(8)])  # type: ignore[method-assign]
    with pytest.raises(SchemaError, match="share no name"):
        ag.probe_agreement(renamed, truth, probes=probes)
    assert np.isfinite(flat["stimuli"]["flash"]["peak_error_ms"])


def _delayed(frames: int) -> Callable[[xr.DataArray], xr.DataArray]:
    """Shift a response later in time by ``frames`` (the first value repeated at the start)."""

    def delay(r: xr.DataArray) -> xr.DataArray:
        axis = r.dims.index("time")
        first = np.take(r.values, [0] * frames, axis=axis)
        rest = np.take(r.values, np.arange(r.sizes["time"] - frames), axis=axis)
        return r.copy(data=np.concatenate([first, rest], axis))

    return delay


@pytest.mark.parametrize("frames", [0, 1, 2])
def test_timing_offset_finds_a_planted_delay(truth: Cached, frames: int) -> None:
    stimulus = ("natural-scenes", {"duration": 3.0, "image_s": 0.15})
    out = ag.timing_offset(Altered(truth, _delayed(frames), f"delayed {frames}"), truth, stimulus=stimulus)
    assert json.loads(json.dumps(out)) == out
    assert out["lag_frames"], "no responding cell"
    assert set(out["lag_frames"].values()) == {frames}
    assert out["median_lag_frames"] == frames
    for cell in out["lag_frames"]:
        assert out["r_best"][cell] == pytest.approx(1.0, abs=1e-3)
        if frames:
            assert out["r_lag0"][cell] < out["r_best"][cell]


def test_timing_offset_refuses_models_without_common_cells(truth: Cached) -> None:
    renamed = Altered(truth, lambda r: r, "renamed")
    renamed.predict = lambda stim: truth.predict(stim).assign_coords(cell=[f"x{i}" for i in range(8)])  # type: ignore[method-assign]
    with pytest.raises(SchemaError, match="share no name"):
        ag.timing_offset(renamed, truth, stimulus=("natural-scenes", {"duration": 1.0}))


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"recipe": {"simulate": {"model": "synthetic-retina", "model_params": {"circuit": "v3"}}}}, {"circuit": "v3"}),
        ({"recipe": {"simulate": {"model": "synthetic-retina", "model_params": {}}}}, {}),
        ({"recipe": {"simulate": {"model": "synthetic-retina"}}}, {}),
        ({"recipe": {"simulate": {"model": "labs-own-retina", "model_params": {"circuit": "v3"}}}}, None),
        ({}, None),
        ({"recipe": "not a mapping"}, None),
    ],
)
def test_trained_circuit_is_read_from_the_recipe_and_none_without_one(metadata, expected):
    class Trained:
        pass

    model = Trained()
    model.metadata = metadata  # type: ignore[attr-defined]
    assert ag.trained_circuit(model) == expected
    assert ag.trained_circuit(object()) is None
