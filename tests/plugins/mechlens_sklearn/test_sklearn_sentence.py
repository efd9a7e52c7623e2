"""The mechanism sentence is filled from the reduction Dataset only."""

from __future__ import annotations

import numpy as np
import pytest
from mechlens_sklearn.celltypes import CellTypes
from mechlens_sklearn.sentence import mechanism_sentence
from sklearn_reduction_helpers import synthetic_attribution

from mechlens.errors import UsageError


def reduction() -> object:
    t = np.arange(100) * 0.01
    a = np.random.default_rng(0).standard_normal((100, 2, 4)) * 0.01
    a[:, :, 3] += np.exp(-0.5 * ((t - 0.3) / 0.05) ** 2)[:, None] * [2.0, 1.0]
    a[:, :, 1] -= np.exp(-0.5 * ((t - 0.5) / 0.05) ** 2)[:, None] * [1.0, 1.5]
    return CellTypes(window_start=0.1, window_stop=0.7).reduce(synthetic_attribution(a))


def test_without_types_channels_are_named_and_ordered_by_contribution() -> None:
    out = reduction()
    lines = mechanism_sentence(out).splitlines()
    assert len(lines) == 2
    frac = float(out["explained_fraction"].sel(cell="gc00"))
    assert lines[0] == (
        "gc00: channel 3 (excitatory) and channel 1 (inhibitory) types drive the response; together they explain "
        f"{frac:.0%} of the response deviation over 0.1..0.7 s."
    )
    assert lines[1].startswith("gc01: channel 1 (inhibitory) and channel 3 (excitatory) types drive")
    assert mechanism_sentence(out, "gc01") == lines[1]


def test_types_label_channels_and_duplicates_keep_their_channel() -> None:
    out = reduction().assign_coords(unit_type=("unit_channel", ["ON-fast", "OFF-slow", "ON-fast", "OFF-slow"]))
    assert mechanism_sentence(out, "gc00").startswith(
        "gc00: OFF-slow [channel 3] (excitatory) and OFF-slow [channel 1] (inhibitory) types drive the response"
    )
    out = out.assign_coords(unit_type=("unit_channel", ["a", "ON-slow", "b", "OFF-fast"]))
    assert "OFF-fast (excitatory) and ON-slow (inhibitory) types drive" in mechanism_sentence(out, "gc00")


def test_one_type_reads_in_the_singular_and_fidelity_is_quoted() -> None:
    out = reduction()
    out["kept"][:] = [0, 0, 0, 1]
    out["reduced_r"] = ("cell", [0.934, 0.5])
    out["peak_time_error"] = ("cell", [-0.012, 0.0])
    text = mechanism_sentence(out, "gc00")
    assert text.startswith("gc00: channel 3 (excitatory) type drives the response;")
    assert text.endswith("follows the full model with r = 0.93 and a peak-time error of 12 ms.")


def test_a_dataset_without_the_measures_is_refused() -> None:
    with pytest.raises(UsageError, match="lacks"):
        mechanism_sentence(reduction().drop_vars("sign"))
    with pytest.raises(UsageError, match="no cell 'gc09'"):
        mechanism_sentence(reduction(), "gc09")
