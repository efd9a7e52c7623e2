"""A long movie streamed through the pipeline in time chunks (mechlens.streaming, mechlens.streamwrite; issue 22.11)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import xarray as xr

import mechlens
from mechlens import io, streaming, streamwrite
from mechlens.completeness import IncompleteAttributionError
from mechlens.errors import UsageError
from mechlens.interfaces import Reducer
from mechlens.memory import MemoryBudgetError
from mechlens.reduced import attributed_times, reduced_model
from mechlens.toymodels import ToyCNN, ToyNoise

#: 105 frames (5 of history): 2 chunks of 37 output times and a shorter last one
NOISE = {"duration": 1.0}
CHUNK = 37


def _close(a: xr.DataArray, b: xr.DataArray, scale: float | None = None) -> None:
    """Equal within float32 rounding of numbers of size ``scale``: the model runs on other batches when streamed."""
    x, y = np.asarray(a.values, dtype=np.float64), np.asarray(b.values, dtype=np.float64)
    assert x.shape == y.shape
    assert np.array_equal(np.isnan(x), np.isnan(y))
    scale = scale or float(np.nanmax(np.abs(x))) or 1.0
    np.testing.assert_allclose(np.nan_to_num(y), np.nan_to_num(x), rtol=0, atol=4 * np.finfo(np.float32).eps * scale)


def _both(tmp_path, suffix=".nc", **kw):
    whole = mechlens.run(ToyCNN(), "white-noise", stimulus_params=NOISE, seed=4, **kw)
    sink = streamwrite.open_sink(tmp_path / f"streamed{suffix}", {"history": "test"})
    got = mechlens.run(ToyCNN(), "white-noise", stimulus_params=NOISE, seed=4, sink=sink, chunk_time=CHUNK, **kw)
    assert sink.written
    return whole, got.load()


@pytest.mark.parametrize(
    ("suffix", "attributor"),
    [(".nc", None), (".zarr", "exact-integrated-gradients")],
)
def test_streamed_run_equals_the_run_in_memory(tmp_path, suffix, attributor):
    whole, got = _both(tmp_path, suffix, attributor=attributor)
    assert set(got.data_vars) == set(whole.data_vars)
    np.testing.assert_array_equal(got["stimulus"].values, whole["stimulus"].values)  # seeded: bit-identical
    np.testing.assert_array_equal(got["time"].values, whole["time"].values)
    rate = float(np.nanmax(np.abs(whole["response"].values)))
    for name in whole.data_vars:
        # the completeness error is itself rounding: compare it on the scale of the rates it is the error of
        _close(whole[name], got[name], rate if name == "completeness_error" else None)
    if attributor:  # per time point exact: the attributions are those of one call
        np.testing.assert_array_equal(got["attribution"].values, whole["attribution"].values)
        assert got.attrs["completeness_ok"] == whole.attrs["completeness_ok"] == 1
        assert got.attrs["completeness_error_rel"] == pytest.approx(whole.attrs["completeness_error_rel"], rel=1e-3)
    for key in ("model", "stimulus", "stimulus_parameters", "seed", "attributor_parameters", "layer", "title"):
        assert str(got.attrs.get(key)) == str(whole.attrs.get(key)), key
    assert got.attrs["streamed_chunk_time"] == CHUNK and str(got.attrs["history"]).endswith("test")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary file was left"


#: the reducers' numbers from a streamed run agree with a run in memory within this (relative to each
#: variable's largest value): the model's float32 rounding on other batches, and the attribution read back
#: as float32 from the file
REDUCE_RTOL = 1e-5


@pytest.mark.parametrize(("suffix", "reducer"), [(".nc", "cell-types"), (".zarr", "pca")])
def test_a_streamed_reduction_of_the_whole_movie_equals_the_run_in_memory(tmp_path, suffix, reducer):
    whole, got = _both(tmp_path, suffix, attributor="exact-integrated-gradients", reducer=reducer)
    assert set(got.data_vars) == set(whole.data_vars)
    assert set(got.coords) == set(whole.coords)  # unit_type too: the reducer was given the model
    assert "reduced_response" in got and "reduction_sample_s" not in got.attrs
    rate = float(np.nanmax(np.abs(whole["response"].values)))
    for name in whole.data_vars:
        a, b = np.asarray(whole[name].values, float), np.asarray(got[name].values, float)
        assert a.shape == b.shape and np.array_equal(np.isnan(a), np.isnan(b)), name
        scale = float(np.nanmax(np.abs(a))) if np.isfinite(a).any() else 1.0
        scale = rate if name == "completeness_error" else scale  # itself rounding: on the scale of the rates
        np.testing.assert_allclose(np.nan_to_num(b), np.nan_to_num(a), rtol=0, atol=REDUCE_RTOL * (scale or 1.0))
    np.testing.assert_array_equal(got["kept"].values, whole["kept"].values)
    for key in ("check_kept", "check_complement", "check_fraction", "all_kept"):
        assert got.attrs[key] == pytest.approx(whole.attrs[key], rel=REDUCE_RTOL, abs=1e-9), key
    assert got.attrs["reduction_check"] == whole.attrs["reduction_check"]
    # the per-time outputs cover the whole movie: NaN only over the history frames, where no output exists
    outputs = got["response"].notnull().all("cell")
    for name in ("reduced_response", "complement_response", "additive_response", "weights"):
        inside = got[name].where(outputs, drop=True)
        assert np.isfinite(inside.values).all(), name
        assert inside.sizes["time"] == 101 > 2 * CHUNK, name


class _TopChannel(Reducer):
    """A third party's reducer: keeps the largest channel and calls the core's reduced model."""

    name = "top-channel"

    def reduce(self, attribution, model=None):
        a = attribution["attribution"].sel(time=attributed_times(attribution))
        kept = abs(a).sum(["time", "cell"]) == abs(a).sum(["time", "cell"]).max()
        out = xr.Dataset({"weights": a.sel(unit_channel=kept).sum("unit_channel").expand_dims(component=[0], axis=-1)})
        out["components"] = kept.astype(float).expand_dims(component=[0])
        if model is not None:
            red = reduced_model(model, attribution, kept)
            out = out.merge(red).assign_attrs(red.attrs)
        return out


def test_a_third_party_reducer_through_the_core_reduced_model_is_streamed_too(tmp_path):
    whole, got = _both(tmp_path, attributor="exact-integrated-gradients", reducer=_TopChannel())
    assert set(got.data_vars) == set(whole.data_vars) and "complement_r" in got
    _close(whole["reduced_response"], got["reduced_response"])
    assert got.attrs["check_kept"] == pytest.approx(whole.attrs["check_kept"], rel=REDUCE_RTOL)
    assert "reduced_model_deferred" not in got.attrs


def test_a_reducer_on_an_attribution_that_keeps_space_is_not_streamed(tmp_path):
    sink = streamwrite.open_sink(tmp_path / "k.nc")
    with pytest.raises(UsageError, match=r"keeps space \(unit_y, unit_x\).*--chunk-time 0"):
        mechlens.run(
            ToyCNN(), "white-noise", "exact-integrated-gradients", "cell-types",
            attributor_params={"keep_space": True}, stimulus_params=NOISE, sink=sink, chunk_time=CHUNK,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_a_long_movie_is_streamed_within_a_budget_its_whole_would_exceed(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHLENS_MEMORY_BUDGET", "300K")
    long = {"duration": 10.0}  # 1005 frames: 576 KB
    with pytest.raises(MemoryBudgetError, match=r"stimulus\.duration"):
        mechlens.run(ToyCNN(), "white-noise", stimulus_params=long)
    sink = streamwrite.open_sink(tmp_path / "long.nc")
    mechlens.run(ToyCNN(), "white-noise", stimulus_params=long, sink=sink, chunk_time=100)
    assert io.load(tmp_path / "long.nc").sizes["time"] == 1005
    with pytest.raises(MemoryBudgetError, match=r"run.chunk_time: one chunk of the streamed white-noise movie"):
        mechlens.run(ToyCNN(), "white-noise", stimulus_params=long, sink=streamwrite.open_sink(tmp_path / "x.nc"),
                     chunk_time=1000)  # fmt: skip
    assert not (tmp_path / "x.nc").exists()


def test_strict_refusal_of_a_streamed_run_leaves_no_file(tmp_path):
    sink = streamwrite.open_sink(tmp_path / "s.nc")
    with warnings.catch_warnings(), pytest.raises(IncompleteAttributionError, match="refused: --strict"):
        mechlens.run(
            ToyCNN(), "white-noise", "integrated-gradients", attributor_params={"n_steps": 2},
            stimulus_params=NOISE, sink=sink, chunk_time=CHUNK, strict=True,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_what_is_not_streamed_runs_in_memory(tmp_path):
    sink = streamwrite.open_sink(tmp_path / "n.nc")
    # a short movie, a sweep, and a stimulus that cannot render ranges run whole; nothing is written
    assert mechlens.run(ToyCNN(), "white-noise", stimulus_params=NOISE, sink=sink, chunk_time=500).sizes["time"] == 105
    swept = mechlens.run(ToyCNN(), "white-noise", stimulus_params={**NOISE, "contrast": [0.5, 1.0]}, sink=sink,
                         chunk_time=CHUNK)  # fmt: skip
    assert swept.sizes["condition"] == 2
    assert mechlens.run(ToyCNN(), ToyNoise(frames=300), sink=sink, chunk_time=CHUNK).sizes["time"] == 304
    assert not sink.written and not (tmp_path / "n.nc").exists()
    with pytest.raises(UsageError, match="cannot render a range of frames"):
        ToyNoise().render_range(ToyNoise().params, 0, 0, 10)
    with pytest.raises(UsageError, match="baseline=mean averages the whole movie"):
        mechlens.run(ToyCNN(), "white-noise", "exact-integrated-gradients", attributor_params={"baseline": "mean"},
                     stimulus_params=NOISE, sink=sink, chunk_time=CHUNK)  # fmt: skip
    with pytest.raises(UsageError, match=r"run\.chunk_time=-1"):
        streaming.check_chunk_time(-1)


def test_chunks_overlap_by_history_minus_one_and_cover_the_movie():
    plan = streaming.Plan(first=-4, stop=100, history=5, chunk_time=30)
    chunks = plan.chunks()
    assert chunks[0] == (-4, -4, 30)
    assert [own for _, own, _ in chunks] == [-4, 30, 60, 90] and chunks[-1][2] == 100
    assert all(render == own - 4 for render, own, _ in chunks[1:])


# -- memory is flat in the movie's length --------------------------------------------------------------
_CHILD = textwrap.dedent(
    """
    import resource, sys, warnings
    warnings.simplefilter("ignore")
    import mechlens
    from mechlens import streamwrite
    from mechlens.toymodels import ToyCNN

    n = int(sys.argv[1])
    sink = streamwrite.open_sink(sys.argv[2])
    mechlens.run(ToyCNN(size=40), "white-noise", stimulus_params={"duration": n * 0.01}, sink=sink, chunk_time=2000)
    assert sink.written
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def _peak_rss_kib(n: int, path) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MECHLENS_MEMORY_BUDGET": "1GiB"}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(n), str(path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


@pytest.mark.slow
def test_memory_of_a_streamed_run_stays_flat_as_the_movie_grows(tmp_path):
    # 40 x 40 px: the 20,000-frame movie is 128 MB; run in memory (chunk_time=0) the 20,000-point run
    # peaked at 1.55x the 2,000-point one (667 vs 431 MiB), streamed at 1.06x (457 vs 427 MiB)
    small = _peak_rss_kib(2_000, tmp_path / "small.nc")
    large = _peak_rss_kib(20_000, tmp_path / "large.nc")
    assert io.load(tmp_path / "large.nc", chunks={}).sizes["time"] == 20_005
    assert large < 1.3 * small, f"peak RSS {large / 1024:.0f} MiB at 20,000 time points vs {small / 1024:.0f} MiB"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--experiment", "osr"], "streams a single pipeline's movie"),
        (["--model", "retina-cnn", "--stimulus", "white-noise", "--workers", "2"], "streams a run in this process"),
    ],
)
def test_cli_refuses_a_chunk_time_it_would_not_use(tmp_path, capsys, argv, message):
    from mechlens.cli import main

    assert main(["run", "--chunk-time", "100", *argv, "-o", str(tmp_path / "out.nc")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out.nc").exists()
