"""The mechanism sentence is filled from the reduction Dataset only: the kept few types, sign and timing."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from mechlens_reduction.celltypes import CellTypes
from mechlens_reduction.sentence import mechanism_details, mechanism_sentence
from reduction_test_helpers import synthetic_attribution

from mechlens.errors import UsageError


def reduction(**params: object) -> xr.Dataset:
    t = np.arange(100) * 0.01
    a = np.random.default_rng(0).standard_normal((100, 2, 4)) * 0.01
    a[:, :, 3] += np.exp(-0.5 * ((t - 0.3) / 0.05) ** 2)[:, None] * [2.0, 1.0]
    a[:, :, 1] -= np.exp(-0.5 * ((t - 0.5) / 0.05) ** 2)[:, None] * [1.0, 1.5]
    return CellTypes(window_start=0.1, window_stop=0.7, **params).reduce(synthetic_attribution(a))


def test_names_the_kept_types_with_sign_and_timing_in_one_sentence() -> None:
    out = reduction()
    lines = mechanism_sentence(out).splitlines()
    assert len(lines) == 2
    frac = float(out["explained_fraction"].sel(cell="gc00"))
    # half-max spans of the planted bumps (sd 50 ms: +-59 ms) from the window's start at 0.1 s
    assert lines[0] == (
        "gc00: c3 (excitatory, 150-250 ms) and c1 (inhibitory, 350-450 ms) generate "
        f"{frac:.0%} of the response deviation over 0.1..0.7 s (times from its start)."
    )
    assert lines[1].startswith("gc01: c1 (inhibitory, 350-450 ms) and c3 (excitatory, 150-250 ms) generate")
    assert mechanism_sentence(out, "gc01") == lines[1]


def test_types_are_named_by_their_label_and_the_details_list_every_kept_type() -> None:
    out = reduction().assign_coords(unit_type=("unit_channel", ["a", "ON-slow", "b", "OFF-fast"]))
    assert mechanism_sentence(out, "gc00").startswith("gc00: OFF-fast (excitatory, 150-250 ms) and ON-slow (inhibitory")
    same = out.assign_coords(unit_type=("unit_channel", ["x", "OFF-slow", "y", "OFF-slow"]))
    assert "OFF-slow [channel 3] (excitatory" in mechanism_sentence(same, "gc00")
    details = mechanism_details(out, "gc00").splitlines()
    assert details[0].startswith("gc00: OFF-fast: excitatory, net +")
    assert details[-1].startswith("gc00: check: ")


def test_grouped_types_are_named_by_their_group() -> None:
    out = reduction(groups="A,B,C,D")
    assert mechanism_sentence(out, "gc00").startswith("gc00: D (excitatory, 150-250 ms) and B (inhibitory")


def test_a_dataset_without_a_reduction_is_refused() -> None:
    with pytest.raises(UsageError, match="lacks"):
        mechanism_sentence(reduction().drop_vars("weights"))
    with pytest.raises(UsageError, match="no cell 'gc09'"):
        mechanism_sentence(reduction(), "gc09")
