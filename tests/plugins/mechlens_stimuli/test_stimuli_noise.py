"""White noise and contrast steps: statistics, independence of checkers, seeds, chunked generation."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
import xarray as xr
from mechlens_stimuli.noise import ContrastSteps, WhiteNoise

from mechlens.errors import ParameterError, UsageError
from mechlens.interfaces import Grid
from mechlens.testing import check_stimulus, parametrize_with_checks

SMALL = {"size_px": 20, "duration": 20.0}


@parametrize_with_checks([WhiteNoise, ContrastSteps])
def test_conformance(check: Callable[[], None]) -> None:
    check()


def test_binary_noise_has_the_stated_contrast() -> None:
    ds = check_stimulus(WhiteNoise, {**SMALL, "contrast": [0.5, 2.0]})
    assert list(ds["condition"].values) == [0.5, 2.0]
    for i, c in enumerate([0.5, 2.0]):
        v = ds["stimulus"].isel(condition=i).values
        assert set(np.unique(v)) == {np.float32(-c), np.float32(c)}
        assert abs(v.mean()) < 0.01 * c
        assert v.std() == pytest.approx(c, rel=1e-3)


def test_gaussian_noise_has_the_stated_contrast() -> None:
    v = WhiteNoise(**SMALL, distribution="gaussian", contrast=0.35).generate(3)["stimulus"].values
    assert abs(v.mean()) < 0.01 and v.std() == pytest.approx(0.35, rel=0.01)
    kurt = ((v / v.std()) ** 4).mean()
    assert kurt == pytest.approx(3.0, abs=0.05)  # Gaussian, not binary (kurtosis 1)


def test_checkers_are_uniform_inside_and_uncorrelated_between() -> None:
    ds = WhiteNoise(**SMALL, checker_px=2).generate(0)
    v = ds["stimulus"].values
    n_t = v.shape[0]
    blocks = v.reshape(n_t, 10, 2, 10, 2)
    assert np.all(blocks == blocks[:, :, :1, :, :1]), "each 2x2 checker holds one value"
    checks = blocks[:, :, 0, :, 0].reshape(n_t, 100)
    r = np.corrcoef(checks.T)
    off = r[~np.eye(100, dtype=bool)]
    bound = 5 / np.sqrt(n_t)  # 5 standard errors of a correlation coefficient
    assert np.abs(off).max() < bound
    assert abs(off.mean()) < 1 / np.sqrt(n_t)
    lag1 = np.mean([np.corrcoef(checks[1:, k], checks[:-1, k])[0, 1] for k in range(100)])
    assert abs(lag1) < bound / 5  # frames are independent too


def test_frames_per_sample_holds_values() -> None:
    v = WhiteNoise(size_px=8, duration=3.0, frames_per_sample=3, pre_s=0.0).generate(0)["stimulus"].values
    held = v[: (len(v) // 3) * 3].reshape(-1, 3, 8, 8)
    assert np.all(held == held[:, :1])
    assert not np.all(held[1:, 0] == held[:-1, 0])


def test_full_field_noise() -> None:
    v = WhiteNoise(size_px=6, duration=1.0, checker_px=0).generate(0)["stimulus"].values
    assert np.all(v == v[:, :1, :1])


def test_seeds() -> None:
    a = WhiteNoise(size_px=10, duration=1.0).generate(1)["stimulus"].values
    b = WhiteNoise(size_px=10, duration=1.0).generate(1)["stimulus"].values
    c = WhiteNoise(size_px=10, duration=1.0).generate(2)["stimulus"].values
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.4


def test_chunks_equal_the_whole_movie_and_pre_does_not_change_it() -> None:
    stim = WhiteNoise(size_px=12, duration=2.0, frames_per_sample=2, checker_px=3)
    whole = stim.generate(7)
    parts = list(stim.iter_chunks(7, chunk_frames=37))
    assert len(parts) == -(-whole.sizes["time"] // 37)
    joined = xr.concat(parts, dim="time")
    np.testing.assert_array_equal(joined["stimulus"].values, whole["stimulus"].values)
    np.testing.assert_allclose(joined["time"].values, whole["time"].values)
    piece = stim.frames(50, 90, seed=7)
    np.testing.assert_array_equal(piece["stimulus"].values, whole["stimulus"].sel(time=slice(0.495, 0.895)).values)
    longer = WhiteNoise(size_px=12, duration=2.0, frames_per_sample=2, checker_px=3, pre_s=1.0).generate(7)
    np.testing.assert_array_equal(
        longer["stimulus"].sel(time=slice(-0.001, None)).values, whole["stimulus"].sel(time=slice(-0.001, None)).values
    )
    with pytest.raises(UsageError, match=r"outside the movie"):
        stim.frames(-100, 10)


def test_an_hour_of_noise_streams_in_chunks_within_memory() -> None:
    hour = WhiteNoise(duration=3600.0)
    with pytest.raises(ParameterError, match=r"duration.*GiB.*iter_chunks"):
        hour.generate(0)
    tracemalloc.start()
    try:
        chunks = hour.iter_chunks(0, chunk_frames=3000)
        first = next(chunks)
        second = next(chunks)
        last = hour.frames(360000 - 10, 360000, seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first.sizes["time"] == 3000 and first["time"].values[0] == pytest.approx(-0.4)
    assert second["time"].values[0] == pytest.approx(29.6)
    assert last["time"].values[-1] == pytest.approx(3599.99)
    assert peak < 200 * 2**20, f"streaming two chunks peaked at {peak / 2**20:.0f} MiB"
    # the second chunk holds frames 2960 .. 5959 (counted from time 0)
    np.testing.assert_array_equal(hour.frames(2990, 3010, seed=0)["stimulus"].values, second["stimulus"].values[30:50])


def test_contrast_steps_levels_and_step_times() -> None:
    ds = check_stimulus(ContrastSteps, {"cycles": 2, "low_s": 0.6, "high_s": 0.9, "size_px": 10})
    np.testing.assert_allclose(ds["step_time"].values, [0.6, 2.1], atol=1e-9)
    np.testing.assert_allclose(ds["step_down_time"].values, [1.5, 3.0], atol=1e-9)
    t = ds["time"].values
    contrast = ds["contrast"].values
    high = ((t >= 0.6 - 1e-9) & (t < 1.5 - 1e-9)) | ((t >= 2.1 - 1e-9) & (t < 3.0 - 1e-9))
    np.testing.assert_allclose(contrast[high], 1.561, rtol=1e-6)
    np.testing.assert_allclose(contrast[~high], 0.223, rtol=1e-6)
    v = ds["stimulus"].values
    assert np.all(v == v[:, :1, :1]), "full field by default"
    assert t[-1] == pytest.approx(2 * 1.5 + 0.6 - 0.01)
    # the noise is unit noise times the contrast: the ratio is the same held noise at both levels
    unit = v[:, 0, 0] / contrast
    assert unit[high].std() == pytest.approx(1.0, rel=0.25) and unit[~high].std() == pytest.approx(1.0, rel=0.25)


def test_contrast_steps_statistics_over_many_cycles() -> None:
    ds = ContrastSteps(cycles=40, size_px=4, checker_px=1, distribution="binary").generate(0)
    v, c = ds["stimulus"].values, ds["contrast"].values
    for level in (0.223, 1.561):
        sel = np.isclose(c, level)
        assert np.abs(v[sel]).max() == pytest.approx(level, rel=1e-6)
        assert v[sel].std() == pytest.approx(level, rel=0.02)


def test_noise_parameter_errors() -> None:
    with pytest.raises(ParameterError, match=r"checker_px.*\[0, 20\]"):
        WhiteNoise(size_px=20, checker_px=21)
    with pytest.raises(ParameterError, match=r"checker_px.*\[0, 18\]"):
        WhiteNoise(checker_px=21).generate(0, Grid((18, 16), 0.01, 5, 55.0))
    with pytest.raises(ParameterError, match=r"contrast.*\[0, 10\]"):
        WhiteNoise(contrast=-1.0)
    with pytest.raises(ParameterError, match=r"distribution.*'binary', 'gaussian'"):
        WhiteNoise(distribution="uniform")
    with pytest.raises(ParameterError, match=r"low_s.*> 0"):
        ContrastSteps(low_s=-0.5)
