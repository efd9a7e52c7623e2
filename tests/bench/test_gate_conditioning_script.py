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
