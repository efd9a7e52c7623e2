"""Natural scenes: bundled images (offline), a new crop per image period, the jitter's statistics."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import xarray as xr
from mechlens_stimuli import natural
from mechlens_stimuli.natural import NaturalScenes

from mechlens.errors import ParameterError
from mechlens.testing import parametrize_with_checks


@parametrize_with_checks([NaturalScenes])
def test_conformance(check: Callable[[], None]) -> None:
    check()


def test_default_movie_sizes() -> None:
    ds = NaturalScenes().generate(0)
    assert ds.sizes["time"] == 540 and ds.sizes["image"] == 6  # image -1 fills the 0.4 s history
    assert ds["jitter_x"].attrs["units"] == "um"


def test_images_are_the_bundled_ones_and_load_offline() -> None:
    from matplotlib import cbook
    from PIL import Image
    from sklearn.datasets import load_sample_images

    sk = load_sample_images()
    for name, rgb in zip(["china", "flower"], sk.images):
        with Image.open(natural.image_path(name)) as im:
            np.testing.assert_array_equal(np.asarray(im.convert("RGB")), rgb)
        assert natural.image_shape(name) == rgb.shape[:2]
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        assert natural.image_path("grace_hopper").samefile(f.name)
    lib = natural.library()
    pooled = np.concatenate([g.ravel() for g in lib.values()])
    assert abs(pooled.mean()) < 1e-4 and pooled.std() == pytest.approx(1.0, rel=1e-4)  # pooled z-score


def test_jitter_has_the_stated_step_statistics() -> None:
    ds = NaturalScenes(duration=8.0, jitter_um=[2.0, 10.0], size_px=16, pre_s=0.0).generate(3)
    assert list(ds["condition"].values) == [2.0, 10.0]
    index = ds["image_index"].isel(condition=0).values
    same_image = index[1:] == index[:-1]
    for i, std in enumerate([2.0, 10.0]):
        for axis in ("jitter_y", "jitter_x"):
            path = ds[axis].isel(condition=i).values
            steps = np.diff(path)[same_image]
            assert len(steps) == 8 * 99
            assert steps.std() == pytest.approx(std, rel=0.1)
            assert abs(steps.mean()) < 4 * std / np.sqrt(len(steps))
            # each image starts a new fixation: the walk restarts at 0
            onsets = np.r_[True, ~same_image]
            np.testing.assert_array_equal(path[onsets], 0.0)
    # the same seed draws the same images and the same (scaled) path for every jitter
    np.testing.assert_allclose(ds["jitter_x"].isel(condition=1), 5 * ds["jitter_x"].isel(condition=0))


def test_a_new_image_every_image_s() -> None:
    ds = NaturalScenes(duration=3.0, image_s=0.5, size_px=16).generate(0)
    t = ds["time"].values
    np.testing.assert_array_equal(ds["image_index"].values, np.floor(t / 0.5 + 1e-9).astype(int))
    np.testing.assert_allclose(ds["image_onset"].values, ds["image"].values * 0.5)
    assert set(ds["image_name"].values) <= set(natural.IMAGES)
    # frames change at the image onsets much more than between jittered frames of one image
    v = ds["stimulus"].values
    change = np.abs(np.diff(v, axis=0)).mean(axis=(1, 2))
    onset = np.diff(ds["image_index"].values) != 0
    assert change[onset].min() > 3 * np.median(change[~onset])


def test_the_image_moves_with_the_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a ramp image the frame mean reads off the displacement: it must equal the stored jitter."""
    rows, cols = np.mgrid[0:427, 0:640].astype(np.float32)
    monkeypatch.setattr(natural, "smoothed", lambda name, zoom: cols if name != "rows" else rows)
    params = {"duration": 2.0, "jitter_um": 20.0, "size_px": 20, "zoom": 3, "pre_s": 0.0}
    stim = NaturalScenes(**params)
    ds = stim.generate(1)
    crop = ds["crop_col"].sel(image=ds["image_index"]).values
    est = (crop - ds["stimulus"].values.mean(axis=(1, 2))) * 55.0 / 3
    np.testing.assert_allclose(est, ds["jitter_x"].values, atol=0.01)  # um; float32 frames
    # sample_image directly, along y: the image moves down (+y) by the jitter
    p = stim.parameters_on(None)
    jit = np.array([[0.0, 0.0], [55.0 / 3 * 2.5, 0.0]])
    out = natural.sample_image(rows, (100.0, 200.0), jit, p)
    assert out[0].mean() - out[1].mean() == pytest.approx(2.5, abs=1e-4)
    np.testing.assert_allclose(np.diff(out[0], axis=0), 3.0, atol=1e-4)  # zoom image px per grid px


def test_drift_is_a_constant_velocity_per_image_within_the_stated_speed() -> None:
    still = NaturalScenes(duration=4.0, jitter_um=0.0, size_px=12, image_s=0.2, pre_s=0.0).generate(2)
    ds = NaturalScenes(duration=4.0, jitter_um=0.0, drift_um_s=2000.0, size_px=12, image_s=0.2, pre_s=0.0).generate(2)
    np.testing.assert_array_equal(still["jitter_x"].values, 0.0)
    index = ds["image_index"].values
    same = index[1:] == index[:-1]
    dt = 0.01
    vy = np.diff(ds["jitter_y"].values) / dt
    vx = np.diff(ds["jitter_x"].values) / dt
    speeds = []
    for k in np.unique(index):
        sel = same & (index[:-1] == k)
        # one velocity per image: every step of one image is the same
        np.testing.assert_allclose(vy[sel], vy[sel][0], atol=1e-6)
        np.testing.assert_allclose(vx[sel], vx[sel][0], atol=1e-6)
        speeds.append(np.hypot(vy[sel][0], vx[sel][0]))
    speeds = np.asarray(speeds)
    assert speeds.max() <= 2000.0 and speeds.max() > 1000.0 and len(np.unique(speeds.round(3))) == len(speeds)
    # drawn after everything else: the same images and crops as without drift
    np.testing.assert_array_equal(ds["crop_row"].values, still["crop_row"].values)


def test_chunks_equal_the_whole_movie() -> None:
    stim = NaturalScenes(duration=2.5, size_px=10, image_s=0.3)
    whole = stim.generate(5)
    joined = xr.concat([c[["stimulus", "jitter_x", "image_index"]] for c in stim.iter_chunks(5, 70)], "time")
    for name in ("stimulus", "jitter_x", "image_index"):
        np.testing.assert_array_equal(joined[name].values, whole[name].values)


def test_flicker_adds_a_full_field_white_noise_offset_of_the_stated_std_and_chunks_agree() -> None:
    kw = dict(duration=6.0, size_px=10, image_s=0.15, pre_s=0.0)
    plain = NaturalScenes(**kw).generate(3)["stimulus"].transpose("time", "y", "x").values
    stim = NaturalScenes(**kw, flicker=0.7)
    movie = stim.generate(3)["stimulus"].transpose("time", "y", "x").values
    offset = movie - plain
    # full field: one offset per frame, the same at every pixel
    np.testing.assert_allclose(offset, offset[:, :1, :1] * np.ones_like(offset), atol=1e-5)
    per_frame = offset[:, 0, 0]
    assert abs(per_frame.std() - 0.7) < 0.05 and abs(per_frame.mean()) < 0.05  # 600 frames
    # white: consecutive frames uncorrelated
    assert abs(np.corrcoef(per_frame[1:], per_frame[:-1])[0, 1]) < 0.12
    joined = xr.concat([c["stimulus"] for c in stim.iter_chunks(3, 70)], "time").transpose("time", "y", "x")
    np.testing.assert_array_equal(joined.values, movie)
    assert "flicker of std 0.7" in stim.generate(3).attrs["description"]


def test_image_contrast_min_scales_each_image_by_one_contrast_from_the_range_and_chunks_agree() -> None:
    kw = dict(duration=6.0, size_px=10, image_s=0.15, pre_s=0.0)
    full = NaturalScenes(**kw).generate(3)
    stim = NaturalScenes(**kw, image_contrast_min=0.2)
    scaled = stim.generate(3)
    a = full["stimulus"].transpose("time", "y", "x").values
    b = scaled["stimulus"].transpose("time", "y", "x").values
    k_of = full["image_index"].values
    factors = []
    for k in np.unique(k_of):
        sel = k_of == k
        f = np.linalg.lstsq(a[sel].reshape(-1, 1), b[sel].reshape(-1), rcond=None)[0][0]
        # one factor per image, the image itself otherwise unchanged
        np.testing.assert_allclose(b[sel], f * a[sel], atol=1e-5)
        factors.append(f)
    factors = np.array(factors)  # 40 images
    assert factors.min() >= 0.2 - 1e-6 and factors.max() <= 1.0 + 1e-6
    assert factors.min() < 0.4 and factors.max() > 0.8 and np.ptp(factors) > 0.5  # spread over the range
    joined = xr.concat([c["stimulus"] for c in stim.iter_chunks(3, 70)], "time").transpose("time", "y", "x")
    np.testing.assert_array_equal(joined.values, b)
    assert "contrast drawn from [0.2, 1]" in scaled.attrs["description"]
    # the default draws nothing: the movie of before
    np.testing.assert_array_equal(
        NaturalScenes(**kw, image_contrast_min=1.0).generate(3)["stimulus"].values, full["stimulus"].values
    )


def test_flicker_scale_image_scales_each_images_flicker_by_its_contrast_draw() -> None:
    kw = dict(duration=6.0, size_px=10, image_s=0.15, pre_s=0.0, image_contrast_min=0.0)
    images = NaturalScenes(**kw).generate(3)
    fixed = NaturalScenes(**kw, flicker=0.7).generate(3)
    stim = NaturalScenes(**kw, flicker=0.7, flicker_scale="image")
    scaled = stim.generate(3)
    a, f, s = (d["stimulus"].transpose("time", "y", "x").values for d in (images, fixed, scaled))
    k_of = images["image_index"].values
    full = NaturalScenes(**{**kw, "image_contrast_min": 1.0}).generate(3)["stimulus"].transpose("time", "y", "x")
    ratios = []
    for k in np.unique(k_of):
        sel = k_of == k
        contrast = np.linalg.lstsq(full.values[sel].reshape(-1, 1), a[sel].reshape(-1), rcond=None)[0][0]
        # the same white-noise draw as flicker_scale="fixed", times this image's contrast
        np.testing.assert_allclose(s[sel] - a[sel], contrast * (f[sel] - a[sel]), atol=1e-4)
        ratios.append(contrast)
    assert min(ratios) < 0.3 and max(ratios) > 0.7  # the images' contrasts, hence their flicker, spread
    joined = xr.concat([c["stimulus"] for c in stim.iter_chunks(3, 70)], "time").transpose("time", "y", "x")
    np.testing.assert_array_equal(joined.values, s)
    assert "flicker of std 0.7 times the image's contrast" in scaled.attrs["description"]
    with pytest.raises(ParameterError, match="flicker_scale"):
        NaturalScenes(**kw, flicker_scale="frame")


def test_blank_p_replaces_whole_slots_by_exact_grey_and_leaves_the_others_unchanged() -> None:
    kw = dict(duration=6.0, size_px=10, image_s=0.15, pre_s=0.0, flicker=0.7)
    plain = NaturalScenes(**kw).generate(3)
    stim = NaturalScenes(**kw, blank_p=0.5)
    blanked = stim.generate(3)
    a, b = (d["stimulus"].transpose("time", "y", "x").values for d in (plain, blanked))
    k_of = plain["image_index"].values
    flags = blanked["image_blank"].values
    assert 0.2 < flags.mean() < 0.8  # about half of the 40 slots
    for k, flag in zip(blanked["image"].values, flags):
        sel = k_of == k
        if flag:
            assert np.all(b[sel] == 0.0)  # grey, flicker included
        else:
            np.testing.assert_array_equal(b[sel], a[sel])
    joined = xr.concat([c["stimulus"] for c in stim.iter_chunks(3, 70)], "time").transpose("time", "y", "x")
    np.testing.assert_array_equal(joined.values, b)
    assert "blank (grey) with probability 0.5" in blanked.attrs["description"]
    assert not plain["image_blank"].values.any()
    with pytest.raises(ParameterError, match="blank_p"):
        NaturalScenes(**kw, blank_p=1.5)


def test_checker_p_shows_moving_pixel_checkerboards_in_whole_slots_and_leaves_the_others_unchanged() -> None:
    kw = dict(duration=6.0, size_px=12, image_s=0.15, pre_s=0.0, drift_um_s=1000.0, jitter_um=0.0)
    plain = NaturalScenes(**kw).generate(3)
    stim = NaturalScenes(**kw, checker_p=0.5)
    mixed = stim.generate(3)
    a, b = (d["stimulus"].transpose("time", "y", "x").values for d in (plain, mixed))
    k_of = plain["image_index"].values
    flags = mixed["image_checker"].values
    assert 0.2 < flags.mean() < 0.8  # about half of the 40 slots
    names = mixed["image_name"].values
    for k, flag, name in zip(mixed["image"].values, flags, names):
        sel = k_of == k
        if not flag:
            np.testing.assert_array_equal(b[sel], a[sel])
            continue
        assert name == "checkerboard"
        first = b[sel][0]
        # binary checks of one pixel: values near +-1 (box-filtered edges and a sub-pixel drift blend
        # neighbours), standard deviation near 1, and little correlation between neighbouring pixels
        assert 0.6 < first.std() < 1.3
        assert abs(np.corrcoef(first[:, :-1].ravel(), first[:, 1:].ravel())[0, 1]) < 0.4
        # the pattern moves with the slot's drift: later frames differ from the first
        assert not np.array_equal(b[sel][-1], first)
    joined = xr.concat([c["stimulus"] for c in stim.iter_chunks(3, 70)], "time").transpose("time", "y", "x")
    np.testing.assert_array_equal(joined.values, b)
    assert "checkerboard with probability 0.5" in mixed.attrs["description"]
    assert not plain["image_checker"].values.any()
    coarse = NaturalScenes(**kw, checker_p=1.0, checker_px=4).generate(3)["stimulus"].transpose("time", "y", "x")
    frame = coarse.values[0]
    # 4 px checks: neighbouring pixels mostly agree
    assert np.corrcoef(frame[:, :-1].ravel(), frame[:, 1:].ravel())[0, 1] > 0.5
    with pytest.raises(ParameterError, match="checker_p"):
        NaturalScenes(**kw, checker_p=1.5)


def test_seeds_choose_different_crops() -> None:
    a = NaturalScenes(duration=1.0, size_px=10).generate(0)
    b = NaturalScenes(duration=1.0, size_px=10).generate(1)
    assert not np.array_equal(a["crop_row"].values, b["crop_row"].values)


def test_bad_parameters() -> None:
    with pytest.raises(ParameterError, match=r"zoom.*allowed range \[1, 8\]"):
        NaturalScenes(zoom=9).generate(0)
    with pytest.raises(ParameterError, match=r"jitter_um.*>= 0"):
        NaturalScenes(jitter_um=-1.0)
    with pytest.raises(ParameterError, match=r"images.*'china'"):
        NaturalScenes(images="lena")
    with pytest.raises(ParameterError, match=r"image_s.*whole number of frames"):
        NaturalScenes(image_s=0.555).generate(0)
