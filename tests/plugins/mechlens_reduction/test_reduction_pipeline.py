"""The reducers inside mechlens.run: merged input, schema checks, netCDF round trip."""

from __future__ import annotations

import numpy as np
import pytest
from mechlens_reduction.celltypes import CellTypes
from mechlens_reduction.factorise import NMFReducer, PCAReducer
from mechlens_reduction.sentence import mechanism_sentence
from reduction_test_helpers import LinearPathAttributor

import mechlens
from mechlens import io
from mechlens.toymodels import ToyCNN, ToyNoise


@pytest.mark.parametrize("reducer", [CellTypes, NMFReducer, PCAReducer])
def test_reducers_run_in_the_pipeline_and_round_trip(reducer: type, tmp_path: object) -> None:
    ds = mechlens.run(
        ToyCNN,
        ToyNoise,
        LinearPathAttributor,
        reducer,
        model_params={"n_cells": 2},
        stimulus_params={"frames": 15, "contrast": [0.5, 1.0]},
        attributor_params={"steps": 4},
        reducer_params={"sta_windows": 2},
    )
    assert ds["reduced_response"].dims == ("condition", "time", "cell")
    # history frames are NaN after the merge; the attributed ones are finite and match the additive check in size
    assert np.isfinite(ds["reduced_response"].dropna("time", how="all").values).all()
    assert "unit_type" in ds.coords
    path = io.save(ds, tmp_path / "run.nc")  # type: ignore[operator]
    back = io.load(path)
    assert mechanism_sentence(back).startswith("gc00: ")
