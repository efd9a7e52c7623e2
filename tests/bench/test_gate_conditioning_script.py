"""bench/gate_conditioning.py: the circuit scored against changed copies of itself with the agreement gate."""

from __future__ import annotations

import pytest
from bench_scripts import load_script


@pytest.fixture(scope="module")
def conditioning():
    return load_script("gate_conditioning")


def test_the_unchanged_circuit_passes_its_own_gate_and_a_changed_balance_moves_the_off_cells(conditioning, monkeypatch):
    name = "OFF cells' self_inhibition"
    monkeypatch.setattr(conditioning, "CONSTANTS", {name: conditioning.CONSTANTS[name]})
    same, shifted = conditioning.conditioning("v5", [1.0, 1.05])
    assert all(ok and r == pytest.approx(1.0) and err == 0.0 for r, err, ok in same["probes"].values())
    assert set(same["off_bar"]) == {"gc00", "gc01", "gc02"}
    # the balance moved by 5 %: the OFF cells' moving-bar peak moves by about one comb period (125 ms)
    assert all(err > 100.0 for _, err in shifted["off_bar"].values())
    assert not shifted["probes"]["moving-bar"][2] and shifted["probes"]["flash"][2]


def test_an_unknown_circuit_version_is_refused(conditioning):
    with pytest.raises(SystemExit, match="choose one of"):
        conditioning.conditioning("v9", [1.0])


def test_a_variant_keeps_the_resting_drive_of_version_5(conditioning):
    # linear OFF-fast subunits (threshold below the bar's dip) would add a resting drive: the offsets take it back
    spec = conditioning.variant_spec({"self_inhibition": 0.9}, {"threshold": -0.7})
    base = conditioning.sy.burst_spec()
    assert conditioning._rest_drive(spec) == pytest.approx(conditioning._rest_drive(base), abs=1e-5)
    assert next(t for t in spec.types if t.name == "OFF-fast").threshold == -0.7
    assert {c.self_inhibition for c in spec.cells if c.kind == "OFF"} == {0.9}
    assert [c.offset for c in spec.cells if c.kind == "ON"] == [c.offset for c in base.cells if c.kind == "ON"]
    assert all(a.offset != b.offset for a, b in zip(spec.cells, base.cells, strict=True) if a.kind == "OFF")


def test_weaker_slower_self_inhibition_gives_a_stable_peak_and_loses_anticipation(conditioning):
    row = conditioning.variant_row(conditioning.variant_spec({"self_inhibition": 0.7}, {"tau_s": 0.1}))
    # the slow bar's response is one smooth bump now: +-5 % of the balance moves its peak by a frame or less
    assert row["peak_error_ms"] <= 10.0 and row["off_swing_hz"] > 50.0
    # ... but at 2200 um/s the OFF cells lag by more than half their latency: anticipation fails
    assert not row["verdicts"]["motion_anticipation"] and row["leads_um"][2] < -76.0
