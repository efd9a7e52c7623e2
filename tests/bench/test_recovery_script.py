"""bench/recovery.py's bookkeeping: which test-A checkpoints belong to which circuit, and the lesion
check read on the cells the score is computed on (the scoring itself is tested in
tests/plugins/mechlens_retina/experiments/test_retina_recovery.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "recovery.py"


@pytest.fixture(scope="module")
def recovery():
    spec = importlib.util.spec_from_file_location("bench_recovery", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_circuit_version_has_its_own_test_a_checkpoints(recovery):
    fixed, other = recovery.test_a_paths({})
    assert (fixed.name, other.name) == ("recovery-fixed.safetensors", "recovery-other.safetensors")
    fixed3, other3 = recovery.test_a_paths({"circuit": "v3"})
    assert (fixed3.name, other3.name) == ("recovery-fixed-v3.safetensors", "recovery-other-v3.safetensors")
    assert recovery.other_circuit({"circuit": "v3"}) == {"circuit": "v3", "silence": ["OFF-fast"]}
    assert recovery._toml(recovery.other_circuit({"circuit": "v3"})) == '{circuit="v3", silence=["OFF-fast"]}'


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
