"""Phenomenon measures: their logic on hand-made responses, and the four phenomena on the synthetic retina."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from mechlens_retina import phenomena as ph
from mechlens_retina.synthetic import SyntheticRetina

from mechlens import registry
from mechlens.errors import SchemaError
from mechlens.toymodels import ToyCNN

DT = 0.01


def stimulus(name: str, **params: object) -> xr.Dataset:
    return registry.get("stimulus", name)(**params).generate(0)


def responses(data: np.ndarray, t0: float, condition: np.ndarray | None = None) -> xr.Dataset:
    """A response Dataset from (condition, time, cell) or (time, cell) rates, time from t0."""
    n_t = data.shape[-2]
    coords: dict[str, object] = {
        "time": ("time", t0 + np.arange(n_t) * DT, {"units": "s"}),
        "cell": [f"gc{i:02d}" for i in range(data.shape[-1])],
    }
    dims = ("time", "cell")
    if condition is not None:
        coords["condition"] = condition
        dims = ("condition", "time", "cell")
    return xr.Dataset({"response": (dims, data, {"units": "Hz"})}, coords=coords)


def bump(t: np.ndarray, centre: float, width: float = 0.015, height: float = 50.0) -> np.ndarray:
    return height * np.exp(-0.5 * ((t - centre) / width) ** 2)


# -- the measures' logic on hand-made responses ---------------------------------------------------
def test_latency_coding_detects_a_latency_that_shortens_with_intensity() -> None:
    intensities = np.array([-0.5, -1.0, -1.5, -2.0, -2.5, -3.0])
    t = -0.1 + np.arange(50) * DT
    shortening = np.stack([2 + bump(t, 0.12 - 0.01 * k, height=10 + 10 * k) for k in range(6)])
    constant = np.stack([2 + bump(t, 0.1, height=10 + 10 * k) for k in range(6)])
    data = np.stack([shortening, constant], axis=-1)  # (condition, time, cell)
    out = ph.latency_coding(responses(data, -0.1, intensities))
    np.testing.assert_allclose(out["latency"].values[:, 0], 0.12 - 0.01 * np.arange(6), atol=2e-3)
    assert out["rho"].values[0] == pytest.approx(-1.0)
    assert list(out["passed"].values) == [1, 0]
    assert out.attrs["passed"] == 1 and json.loads(out.attrs["passed_cells"]) == ["gc00"]


def test_latency_coding_needs_enough_responsive_intensities() -> None:
    t = -0.1 + np.arange(50) * DT
    weak = np.stack([2 + bump(t, 0.12 - 0.01 * k, height=0.5 if k < 3 else 20) for k in range(6)])
    out = ph.latency_coding(responses(weak[..., None], -0.1, np.linspace(-0.5, -3, 6)))
    assert out["n_intensities"].values[0] == 3 and out["passed"].values[0] == 0
    with pytest.raises(SchemaError, match="condition"):
        ph.latency_coding(responses(weak[0][:, None], -0.1))


def osr_like(periods: np.ndarray, locked_to_expected: bool) -> tuple[xr.Dataset, np.ndarray]:
    t = -0.3 + np.arange(250) * DT
    omitted = 9 * periods
    rows = []
    for p, om in zip(periods, omitted):
        r = np.full_like(t, 3.0)
        for k in range(9):
            r += bump(t, k * p + 0.05, height=10.0)  # the per-flash response
        centre = om + 0.06 if locked_to_expected else om - p + 0.15
        rows.append(r + bump(t, centre, width=0.02, height=40.0))
    return responses(np.stack(rows)[..., None], -0.3, periods), omitted


def test_osr_passes_a_response_locked_to_the_expected_flash() -> None:
    periods = np.array([0.06, 0.08, 0.1, 0.12, 0.15])
    resp, omitted = osr_like(periods, locked_to_expected=True)
    out = ph.omitted_stimulus_response(resp, omitted_s=omitted)
    np.testing.assert_allclose(out["latency"].values[:, 0], 0.06, atol=5e-3)
    assert np.all(out["ratio"].values[:, 0] > 3)
    assert out["passed"].values[0] == 1


def test_osr_fails_a_response_locked_to_the_last_flash() -> None:
    periods = np.array([0.06, 0.08, 0.1, 0.12, 0.15])
    resp, omitted = osr_like(periods, locked_to_expected=False)
    out = ph.omitted_stimulus_response(resp, omitted_s=omitted)
    assert out["latency_spread"].values[0] > 0.03 and out["passed"].values[0] == 0


def test_osr_needs_the_period_range() -> None:
    periods = np.array([0.08, 0.1, 0.12])
    resp, omitted = osr_like(periods, locked_to_expected=True)
    assert ph.omitted_stimulus_response(resp, omitted_s=omitted)["passed"].values[0] == 0


def test_motion_anticipation_measures_the_lead() -> None:
    speed = 440.0  # um/s
    t = -0.4 + np.arange(700) * DT
    pos = np.where(t < 0, -1500.0, -1500.0 + speed * np.clip(t, 0, None))
    moving_stim = xr.Dataset({"bar_center": ("time", pos, {"units": "um"})}, coords={"time": t})
    rf = np.array([0.0, 110.0])
    # cell 0 peaks 30 ms before the bar reaches its centre; cell 1 lags by 60 ms
    peak_t = np.array([(rf[0] + 1500) / speed - 0.03, (rf[1] + 1500) / speed + 0.06])
    moving = np.stack([2 + bump(t, tp, width=0.08) for tp in peak_t], -1)
    positions = np.arange(-330.0, 331.0, 55.0)
    tf = -0.1 + np.arange(40) * DT
    flashed = np.stack(
        [
            np.stack([2 + bump(tf, 0.06, height=40 * np.exp(-0.5 * ((x - c) / 80) ** 2)) for c in rf], -1)
            for x in positions
        ]
    )
    flashed_stim = xr.Dataset({"bar_center": ("condition", positions)})
    out = ph.motion_anticipation(
        responses(moving, -0.4), moving_stim, responses(flashed, -0.1, positions), flashed_stim
    )
    np.testing.assert_allclose(out["rf_center"].values, rf, atol=3.0)
    np.testing.assert_allclose(out["lead"].values, [0.03 * speed, -0.06 * speed], atol=4.0)
    np.testing.assert_allclose(out["expected_lag"].values, 0.06 * speed, atol=2.0)
    assert list(out["passed"].values) == [1, 0]


def test_motion_reversal_compares_the_burst_with_the_response_before() -> None:
    t = -0.4 + np.arange(300) * DT
    reversal = np.array([1.0, 1.2])
    rows = []
    for rev in reversal:
        burst = np.full((len(t), 2), 2.0)
        burst[:, 0] += bump(t, rev - 0.3, height=10) + bump(t, rev + 0.1, height=30)  # a reversal burst
        burst[:, 1] += bump(t, rev - 0.3, height=30) + bump(t, rev + 0.1, height=20)  # none
        rows.append(burst)
    out = ph.motion_reversal(responses(np.stack(rows), -0.4, reversal), reversal_s=reversal)
    np.testing.assert_allclose(out["ratio"].values, [32 / 12, 22 / 32], rtol=0.02)
    assert list(out["passed"].values) == [1, 0]
    assert out.attrs["population_ratio"] == pytest.approx(27 / 22, rel=0.02)
    with pytest.raises(SchemaError, match="does not cover"):
        ph.motion_reversal(responses(np.stack(rows), -0.4, reversal), reversal_s=[0.1, 0.1])


def test_timing_estimators() -> None:
    t = np.arange(30) * DT
    r = bump(t, 0.123, width=0.02)
    assert ph.peak_time(t, r)[0] == pytest.approx(0.123, abs=1e-3)
    assert ph.centroid_time(t, r)[0] == pytest.approx(0.123, abs=2e-3)
    flat = np.where((t > 0.1) & (t < 0.2), 10.0, 0.0)
    assert ph.centroid_time(t, flat)[0] == pytest.approx(0.15, abs=1e-9)


def test_measures_run_on_any_model() -> None:
    """A model without cell kinds or a fast path (the toy CNN on the retina grid) is measured too."""
    toy = ToyCNN(history=40, size=50, kernel=5, kernel2=3, n_cells=2)
    flash = stimulus("flash", **ph.STIMULI["latency_coding"]["flash"])
    out = ph.latency_coding(toy.predict(flash), flash)
    assert out.sizes == {"condition": 6, "cell": 2}
    assert out.attrs["passed"] in (0, 1)


# -- the four phenomena on the synthetic retina ---------------------------------------------------
@pytest.fixture(scope="module")
def retina() -> SyntheticRetina:
    return SyntheticRetina()


@pytest.fixture(scope="module")
def measured(retina: SyntheticRetina) -> dict[str, xr.Dataset]:
    def run(name: str, **params: object) -> tuple[xr.Dataset, xr.Dataset]:
        stim = stimulus(name, **params)
        return retina.predict(stim), stim

    out = {"latency_coding": ph.latency_coding(*run("flash", **ph.STIMULI["latency_coding"]["flash"]))}
    out["omitted_stimulus_response"] = ph.omitted_stimulus_response(
        *run("osr", **ph.STIMULI["omitted_stimulus_response"]["osr"])
    )
    moving = run("moving-bar", **ph.STIMULI["motion_anticipation"]["moving-bar"])
    # the cells lie within 220 um of the centre: flash the bar there only (the report uses all positions)
    flashed = run("flashed-bar", position=[float(x) for x in np.arange(-440.0, 441.0, 110.0)])
    out["motion_anticipation"] = ph.motion_anticipation(*moving, *flashed)
    out["motion_reversal"] = ph.motion_reversal(*run("motion-reversal", reversal_um=[-495.0, -220.0, 0.0, 110.0]))
    return out


def cells_of(retina: SyntheticRetina, kind: str) -> list[int]:
    return [i for i, k in enumerate(retina.cell_kind) if k == kind]


def test_latency_coding_in_off_and_on_off_cells(measured: dict[str, xr.Dataset], retina: SyntheticRetina) -> None:
    out = measured["latency_coding"]
    for i in cells_of(retina, "OFF") + cells_of(retina, "ON-OFF"):
        assert out["passed"].values[i] == 1
        lat = out["latency"].values[:, i]
        assert np.nanmax(lat) - np.nanmin(lat) > 0.01  # a shift of more than one frame, not rounding
    assert out.attrs["passed"] == 1


def test_omitted_stimulus_response_in_on_off_cells(measured: dict[str, xr.Dataset], retina: SyntheticRetina) -> None:
    out = measured["omitted_stimulus_response"]
    for i in cells_of(retina, "ON-OFF"):
        assert out["passed"].values[i] == 1
        assert out["latency_spread"].values[i] <= 0.02
        assert np.all(out["ratio"].values[:, i] >= 1.5)
    for i in cells_of(retina, "OFF"):
        assert out["passed"].values[i] == 0  # OFF cells only follow the flashes


def test_motion_anticipation_in_off_cells(measured: dict[str, xr.Dataset], retina: SyntheticRetina) -> None:
    out = measured["motion_anticipation"]
    for i in cells_of(retina, "OFF"):
        assert out["passed"].values[i] == 1
        assert out["lead"].values[i] > 0 > -out["expected_lag"].values[i]
        assert out["rf_center"].values[i] == pytest.approx(retina.cell_position_um[i, 1], abs=10)


def test_motion_reversal_in_on_off_cells(measured: dict[str, xr.Dataset], retina: SyntheticRetina) -> None:
    out = measured["motion_reversal"]
    for i in cells_of(retina, "ON-OFF"):
        assert out["passed"].values[i] == 1
    assert out.attrs["passed"] == 1


def test_report_prints_every_measure(
    measured: dict[str, xr.Dataset],
    retina: SyntheticRetina,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(ph, "measure_all", lambda model, registry=None: measured)
    assert ph.main(["--model", "synthetic-retina"]) == 0
    text = capsys.readouterr().out
    for name in measured:
        assert f"== {name}: PASS" in text
    assert "gc05 ON-OFF" in text
