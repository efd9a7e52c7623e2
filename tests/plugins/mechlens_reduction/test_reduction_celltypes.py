"""The cell-types reducer keeps exactly the planted contributors, in the planted window, with their signs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import xarray as xr
from mechlens_reduction.celltypes import CellTypes
from mechlens_reduction.sentence import mechanism_sentence
from reduction_test_helpers import exact_attribution, synthetic_attribution

from mechlens.errors import ParameterError
from mechlens.testing import check_reducer, parametrize_with_checks
from mechlens.toymodels import ToyCNN


def bump(t: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - centre) / width) ** 2)


def planted(n_t: int = 200, n_cell: int = 3, n_ch: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Types 5 (excitatory), 2 (inhibitory) and 6 (excitatory) drive every cell; the rest are weak noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_t) * 0.01
    a = rng.standard_normal((n_t, n_cell, n_ch)) * 0.01
    a[:, :, 5] += 3.0 * bump(t, 0.5, 0.1)[:, None]
    a[:, :, 2] -= 2.0 * bump(t, 0.85, 0.08)[:, None]
    a[:, :, 6] += 1.5 * bump(t, 1.3, 0.1)[:, None]
    return a, t


@parametrize_with_checks([CellTypes], attribution=lambda: synthetic_attribution(planted()[0]))
def test_conforms_without_a_model(check: Callable[[], None]) -> None:
    check()


def test_conforms_with_a_model_and_labels_types() -> None:
    model = ToyCNN(channels=4, n_cells=2)
    ds = exact_attribution(model, n_times=16, steps=16)
    out = check_reducer(CellTypes, ds, model, {"sta_windows": 4})
    assert "unit_type" in out.coords
    assert all(str(v).split("-")[0] in ("ON", "OFF") for v in out["unit_type"].values)
    assert out["reduced_response"].dims == ("time", "cell")


def test_keeps_exactly_the_planted_contributors_in_rank_order() -> None:
    a, _ = planted()
    out = CellTypes().reduce(synthetic_attribution(a))
    assert list(np.flatnonzero(out["kept"].values)) == [2, 5, 6]
    assert list(out["component_channel"].values) == [5, 2, 6]
    np.testing.assert_array_equal(out["components"].values.argmax(axis=1), [5, 2, 6])
    assert out.attrs["criterion_met"] == 1
    assert (out["explained_fraction"].values >= 0.9).all()
    # fewer types would not have been enough
    assert out["explained_by_rank"].values[1] < 0.9 <= out["explained_by_rank"].values[2]
    # weights are the kept types' time courses
    np.testing.assert_allclose(out["weights"].sel(component=1).values, a[:, :, 2], rtol=1e-5, atol=1e-6)


def test_signs_are_the_net_excitation_or_inhibition() -> None:
    a, _ = planted()
    out = CellTypes().reduce(synthetic_attribution(a))
    assert (out["sign"].sel(unit_channel=5).values == 1).all()
    assert (out["sign"].sel(unit_channel=2).values == -1).all()


def test_additive_response_is_baseline_plus_kept_attributions() -> None:
    a, _ = planted()
    ds = synthetic_attribution(a, baseline=4.0)
    out = CellTypes().reduce(ds)
    expected = 4.0 + a[:, :, [2, 5, 6]].sum(axis=2)
    np.testing.assert_allclose(out["additive_response"].values, expected, rtol=1e-5, atol=1e-5)


def test_a_stricter_criterion_keeps_more_types() -> None:
    a, _ = planted()
    ds = synthetic_attribution(a)
    loose = CellTypes(explained=0.5).reduce(ds)
    strict = CellTypes(explained=1.0).reduce(ds)
    assert loose["kept"].sum() < 3 <= int(strict["kept"].sum())
    assert strict["kept"].sum() == 8  # noise types are needed for an exact reconstruction


def test_the_window_selects_the_types_active_in_it() -> None:
    a, _ = planted()
    ds = synthetic_attribution(a)
    early = CellTypes(window_start=0.3, window_stop=0.65).reduce(ds)
    late = CellTypes(window_start=1.1, window_stop=1.5).reduce(ds)
    assert list(np.flatnonzero(early["kept"].values)) == [5]
    assert list(np.flatnonzero(late["kept"].values)) == [6]
    assert early["reduction_window"].sum() == 36
    assert early.attrs["window"] == "0.3..0.65 s"


def test_window_relative_to_an_event_per_condition() -> None:
    rng = np.random.default_rng(1)
    n_t, t = 150, np.arange(150) * 0.01
    a = rng.standard_normal((2, n_t, 2, 4)) * 0.01
    events = np.array([0.4, 0.9])
    for c, ev in enumerate(events):
        a[c, :, :, 1] += 2.0 * bump(t, ev + 0.1, 0.03)[:, None]  # type 1 right after the event
        a[c, :, :, 3] += 2.0 * bump(t, ev - 0.2, 0.03)[:, None]  # type 3 well before it
    ds = synthetic_attribution(a)
    ds["omitted_time"] = xr.DataArray(events, dims="condition", attrs={"units": "s"})
    params = {"window_event": "omitted_time", "window_start": 0.0, "window_stop": 0.2}
    out = check_reducer(CellTypes, ds, params=params)
    assert list(np.flatnonzero(out["kept"].values)) == [1]
    w = out["reduction_window"]
    assert w.dims == ("condition", "time")
    np.testing.assert_allclose(ds["time"].values[w.values[0].astype(bool)][[0, -1]], [0.4, 0.6])
    np.testing.assert_allclose(ds["time"].values[w.values[1].astype(bool)][[0, -1]], [0.9, 1.1])
    assert out["weights"].dims == ("condition", "time", "cell", "component")


def test_spatial_attributions_are_summed_or_kept_along_the_axis_of_motion() -> None:
    rng = np.random.default_rng(2)
    a = rng.standard_normal((30, 2, 3, 4, 5))
    coords = {"unit_channel": np.arange(3), "unit_y": np.arange(4), "unit_x": np.arange(5)}
    base = synthetic_attribution(a.sum(axis=(3, 4)))
    ds = base.drop_vars("attribution")
    ds["attribution"] = xr.DataArray(
        a, dims=("time", "cell", "unit_channel", "unit_y", "unit_x"), coords={**coords, "time": base["time"]}
    )
    summed = CellTypes().reduce(ds)
    np.testing.assert_allclose(summed["type_attribution"].values, a.sum(axis=(3, 4)), rtol=1e-4, atol=1e-4)
    along_x = CellTypes(keep_axis="x").reduce(ds)
    assert along_x["type_attribution"].dims == ("time", "cell", "unit_channel", "unit_x")
    np.testing.assert_allclose(along_x["type_attribution"].values, a.sum(axis=3), rtol=1e-4, atol=1e-4)
    with pytest.raises(ParameterError, match="keep_axis"):
        CellTypes(keep_axis="x").reduce(base)


def test_bad_parameters_are_refused_with_the_allowed_range() -> None:
    with pytest.raises(ParameterError, match="window_stop"):
        CellTypes(window_start=0.5, window_stop=0.2)
    with pytest.raises(ParameterError, match="explained"):
        CellTypes(explained=1.5)
    with pytest.raises(ParameterError, match="keep_axis"):
        CellTypes(keep_axis="z")
    a, _ = planted()
    ds = synthetic_attribution(a)
    with pytest.raises(ParameterError, match="no event variable 'reversal_time'"):
        CellTypes(window_event="reversal_time").reduce(ds)
    with pytest.raises(ParameterError, match="contains no attributed time point"):
        CellTypes(window_start=5.0, window_stop=6.0).reduce(ds)


# -- whole types, the few that matter, the check that can fail ----------------------------------------
def cancelling(n_t: int = 120, n_cell: int = 2, seed: int = 3) -> np.ndarray:
    """Channel 1 excites, channel 4 inhibits; channels 0 and 3 are large but cancel each other exactly."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_t) * 0.01
    a = rng.standard_normal((n_t, n_cell, 6)) * 0.01
    a[:, :, 1] += 2.0 * bump(t, 0.3, 0.05)[:, None]
    a[:, :, 4] -= 1.5 * bump(t, 0.6, 0.05)[:, None]
    big = 6.0 * bump(t, 0.45, 0.2)[:, None]
    a[:, :, 0] += big
    a[:, :, 3] -= big
    return a


def test_a_planted_two_type_mechanism_is_recovered_with_its_types_and_signs() -> None:
    out = CellTypes().reduce(synthetic_attribution(cancelling()))
    assert list(np.flatnonzero(out["kept"].values)) == [1, 4]
    assert out.attrs["n_kept_types"] == 2 and out.attrs["all_kept"] == 0
    assert list(out["component_channel"].values) == [1, 4]  # the larger first
    assert (out["component_sign"].sel(component=0).values == 1).all()
    assert (out["component_sign"].sel(component=1).values == -1).all()
    assert out.attrs["reduction_check"] == "pass"
    # ranked by |A| the two large cancelling channels come first and explain nothing together
    by_size = CellTypes(ranking="magnitude").reduce(synthetic_attribution(cancelling()))
    assert by_size.attrs["n_kept_types"] > 2


def test_a_type_whose_direct_and_delayed_channels_cancel_is_dropped_whole() -> None:
    t = np.arange(150) * 0.01
    a = np.random.default_rng(4).standard_normal((150, 2, 6)) * 0.01
    a[:, :, 0] += 3.0 * bump(t, 0.5, 0.1)[:, None]  # type A direct ...
    a[:, :, 3] -= 3.0 * bump(t, 0.5, 0.1)[:, None]  # ... and its delayed copy: A is net zero
    a[:, :, 1] += 2.0 * bump(t, 0.4, 0.08)[:, None]  # type B direct ...
    a[:, :, 4] -= 0.8 * bump(t, 0.7, 0.08)[:, None]  # ... and delayed: B is kept whole, both channels
    a[:, :, 2] += 0.05 * bump(t, 0.9, 0.05)[:, None]  # type C: weak
    ds = synthetic_attribution(a)
    out = CellTypes(groups="A,B,C,A,B,C").reduce(ds)
    assert list(np.flatnonzero(out["kept"].values)) == [1, 4]
    assert list(out["component_label"].values) == ["B"]
    np.testing.assert_array_equal(out["components"].values, [[0, 1, 0, 0, 1, 0]])
    np.testing.assert_allclose(out["weights"].sel(component=0).values, a[:, :, 1] + a[:, :, 4], rtol=1e-5, atol=1e-5)
    assert list(out["rank"].values[[1, 4]]) == [0, 0]
    # the same grouping given as a coord on unit_channel
    coord = CellTypes().reduce(ds.assign_coords(unit_group=("unit_channel", list("ABCABC"))))
    np.testing.assert_array_equal(coord["kept"].values, out["kept"].values)
    with pytest.raises(ParameterError, match="one non-empty type label per channel"):
        CellTypes(groups="A,B").reduce(ds)


def test_a_reduction_that_keeps_every_type_is_flagged_not_called_a_mechanism() -> None:
    a, _ = planted()
    out = CellTypes(explained=1.0).reduce(synthetic_attribution(a))
    assert out.attrs["all_kept"] == 1
    assert out.attrs["reduction_check"] == "all kept"
    assert "no reduction, not a mechanism" in mechanism_sentence(out, "gc00")


def test_the_complement_check_fails_when_the_other_types_reproduce_the_response() -> None:
    t = np.arange(100) * 0.01
    a = np.random.default_rng(5).standard_normal((100, 1, 3)) * 0.001
    # two redundant types, each carrying half of the response: either one "explains" half
    a[:, :, 0] += bump(t, 0.5, 0.1)[:, None]
    a[:, :, 1] += bump(t, 0.5, 0.1)[:, None]
    out = CellTypes(explained=0.45, check=0.45).reduce(synthetic_attribution(a))
    assert out.attrs["n_kept_types"] == 1
    assert out.attrs["reduction_check"] == "complement sufficient"
    assert float(out["complement_explained_fraction"].squeeze()) > 0.45
    # one type carrying the response: the complement explains nothing and the check passes
    b = a.copy()
    b[:, :, 1] -= bump(t, 0.5, 0.1)[:, None]
    ok = CellTypes(explained=0.45, check=0.45).reduce(synthetic_attribution(b))
    assert ok.attrs["reduction_check"] == "pass"
    assert float(ok["complement_explained_fraction"].squeeze()) < 0.05
