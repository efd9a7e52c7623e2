"""Recording readers: the published deep-retina HDF5 layout and the mechlens netCDF layout, read lazily."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr
from mechlens_retina.training import recordings as data
from mechlens_retina.training.recordings import from_datasets, open_recording, open_split, write_h5, write_netcdf

from mechlens.errors import FileFormatError, UsageError

N_CELLS, N_REP = 4, 5


def write_published(
    path: Path, n_train: int = 240, n_test: int = 90, first_repeat: int = 1, seed: int = 0
) -> dict[str, np.ndarray]:
    """A small file in exactly the published layout (Maheswaranathan et al. 2023); returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_stim": rng.integers(0, 256, (n_train, 50, 50), dtype=np.uint8),
        "train_rate": rng.gamma(2.0, 5.0, (N_CELLS, n_train)),
        "test_stim": rng.integers(0, 256, (n_test, 50, 50), dtype=np.uint8),
        "test_rate": rng.gamma(2.0, 5.0, (N_CELLS, n_test)),
        "repeats": rng.poisson(3.0, (N_CELLS, N_REP, n_test)).astype(np.float64),
    }
    with h5py.File(path, "w") as f:
        for split in ("train", "test"):
            n = n_train if split == "train" else n_test
            g = f.create_group(split)
            g["stimulus"] = arrays[f"{split}_stim"]
            g["time"] = 12.5 + np.arange(n) * 0.01
            r = g.create_group("response")
            r["firing_rate_10ms"] = arrays[f"{split}_rate"]
            r["firing_rate_20ms"] = arrays[f"{split}_rate"][:, ::2]
            r["binned"] = rng.poisson(0.1, (N_CELLS, n))
        f["train/stas/cell01"] = np.zeros((40, 50, 50))
        for c in range(N_CELLS):
            f[f"test/repeats/cell{c + first_repeat:02d}"] = arrays["repeats"][c]
    return arrays


@pytest.fixture
def published(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    expt = tmp_path / "15-10-07"
    expt.mkdir()
    arrays = write_published(expt / "naturalscene.h5")
    return expt / "naturalscene.h5", arrays


def test_published_layout_reads_as_a_labeled_dataset(published):
    path, arrays = published
    with open_recording(path) as rec:
        train, test = rec.train, rec.test
        assert train["stimulus"].dims == ("time", "y", "x") and train["stimulus"].shape == (240, 50, 50)
        assert train["response"].dims == ("time", "cell") and train["response"].attrs["units"] == "Hz"
        assert rec.cells == ["gc00", "gc01", "gc02", "gc03"] and list(train["cell_index"].values) == [0, 1, 2, 3]
        assert train.attrs["frame_period_s"] == 0.01 and rec.frame_period_s == 0.01
        assert train["time"].attrs["units"] == "s" and train["time"].values[0] == 12.5
        assert train["x"].attrs["units"] == "um" and np.allclose(np.diff(train["x"].values), 55.0)
        np.testing.assert_array_equal(train["stimulus"].values, arrays["train_stim"])
        np.testing.assert_allclose(train["response"].values, arrays["train_rate"].T)
        assert "repeats" not in train
        assert test["repeats"].dims == ("repeat", "time", "cell") and test["repeats"].shape == (N_REP, 90, N_CELLS)
        # cell01 is the first response row in the 2015 files
        np.testing.assert_allclose(test["repeats"].values[:, :, 2], arrays["repeats"][2])
        np.testing.assert_allclose(test["response"].values, arrays["test_rate"].T)


def test_zero_based_repeat_names_are_read_too(tmp_path):
    arrays = write_published(tmp_path / "r.h5", first_repeat=0)
    test = open_split(tmp_path / "r.h5", "test")
    np.testing.assert_allclose(test["repeats"].values[:, :, 0], arrays["repeats"][0])


def test_reading_is_lazy_and_slices_only_what_is_asked(published, monkeypatch):
    path, arrays = published
    reads: list[tuple] = []
    original = data._H5Array._read

    def spy(self, key):
        reads.append((self.shape, key))
        return original(self, key)

    monkeypatch.setattr(data._H5Array, "_read", spy)
    ds = open_split(path, "train")
    assert reads == []  # opening reads nothing
    block = ds["stimulus"][100:130].values
    np.testing.assert_array_equal(block, arrays["train_stim"][100:130])
    frame_reads = [key for shape, key in reads if shape == (240, 50, 50)]
    assert frame_reads == [(slice(100, 130, 1), slice(None), slice(None))]
    ds.close()


def test_cell_selection_keeps_ids_and_rows(published):
    path, arrays = published
    rec = open_recording(path, cells=[3, 1])
    assert rec.cells == ["gc03", "gc01"] and list(rec.train["cell_index"].values) == [3, 1]
    np.testing.assert_allclose(rec.train["response"].values, arrays["train_rate"][[3, 1]].T)
    np.testing.assert_allclose(rec.test["repeats"].values[:, :, 0], arrays["repeats"][3])
    rec.close()
    with pytest.raises(UsageError, match=r"cells \[7\] out of range.*4 cells"):
        open_recording(path, cells=[0, 7])


def test_experiment_directory_and_stimulus_type(published):
    path, _ = published
    rec = open_recording(path.parent, stimulus_type="naturalscene")
    assert rec.source == str(path)
    rec.close()
    with pytest.raises(FileFormatError, match=r"no whitenoise\.h5 \(it has naturalscene\.h5\)"):
        open_recording(path.parent, stimulus_type="whitenoise")


def test_other_bin_widths_and_missing_keys_are_explained(published):
    path, _ = published
    with pytest.raises(FileFormatError, match=r"firing_rate_20ms' has shape \(4, 120\).*240 stimulus frames"):
        open_split(path, "train", response="firing_rate_20ms")
    with h5py.File(path, "a") as f:
        del f["train/response/firing_rate_10ms"]
    with pytest.raises(FileFormatError, match=r"firing_rate_10ms' is missing \(found: binned, firing_rate_20ms\)"):
        open_split(path, "train")


def test_netcdf_recording_round_trip(published, tmp_path):
    path, arrays = published
    rec = open_recording(path)
    out = write_netcdf(tmp_path / "rec.nc", rec.train, rec.test)
    back = open_recording(out)
    assert back.format == data.FORMAT_NC and back.cells == rec.cells
    # lazily backed, and not cached: reading a slice leaves the whole movie on disk
    block = back.train["stimulus"][5:10].values
    np.testing.assert_allclose(block, arrays["train_stim"][5:10])
    assert not back.train["stimulus"].variable._in_memory
    np.testing.assert_allclose(back.train["stimulus"].values, arrays["train_stim"])
    np.testing.assert_allclose(back.test["repeats"].values, rec.test["repeats"].values)
    assert back.frame_period_s == 0.01 and back.pixel_um == 55.0
    back.close()
    rec.close()


def test_netcdf_with_only_a_root_group_is_a_train_split(tmp_path):
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {
            "stimulus": (("time", "y", "x"), rng.standard_normal((30, 6, 6)).astype(np.float32)),
            "response": (("time", "cell"), rng.random((30, 2)).astype(np.float32)),
        },
        coords={"time": np.arange(30) * 0.02, "cell": ["a", "b"], "x": np.arange(6) * 50.0},
    )
    ds.to_netcdf(tmp_path / "root.nc")
    rec = open_recording(tmp_path / "root.nc")
    assert rec.test is None and rec.frame_period_s == 0.02 and rec.pixel_um == 50.0 and rec.cells == ["a", "b"]
    rec.close()


def test_h5_writer_produces_the_published_layout(published, tmp_path):
    path, _ = published
    rec = open_recording(path)
    out = write_h5(tmp_path / "copy.h5", rec.train, rec.test, chunk_frames=50)
    with h5py.File(out) as f:
        assert f["train/stimulus"].shape == (240, 50, 50) and f["train/response/firing_rate_10ms"].shape == (4, 240)
        assert sorted(f["test/repeats"]) == ["cell01", "cell02", "cell03", "cell04"]
    again = open_recording(out)
    np.testing.assert_allclose(again.train["stimulus"].values, rec.train["stimulus"].values)
    np.testing.assert_allclose(again.test["repeats"].values, rec.test["repeats"].values)
    again.close()
    rec.close()


def test_fingerprints_identify_the_data(published):
    path, _ = published
    rec = open_recording(path)
    assert len(rec.fingerprint()) == 64
    mem = from_datasets(rec.train.load(), rec.test.load())
    changed = mem.train.copy(deep=True)
    changed["stimulus"][0, 0, 0] = 1
    assert mem.fingerprint() == from_datasets(mem.train, mem.test).fingerprint()
    assert from_datasets(changed, mem.test).fingerprint() != mem.fingerprint()
    rec.close()


def test_malformed_in_memory_splits_are_refused():
    with pytest.raises(FileFormatError, match=r"missing variable 'response'.*frame_period_s"):
        from_datasets(xr.Dataset({"stimulus": (("time", "y", "x"), np.zeros((3, 2, 2)))}))


def test_xarray_backend_reads_a_split_like_open_split(published):
    path, arrays = published
    assert "deep-retina" in xr.backends.list_engines()  # registered through the xarray.backends entry point
    with (
        xr.open_dataset(path, engine="deep-retina", group="test", pixel_um=50.0) as ds,
        open_split(path, "test", pixel_um=50.0) as ref,
    ):
        xr.testing.assert_identical(ds, ref)
        assert ds.attrs["format"] == data.FORMAT_H5 and np.allclose(np.diff(ds["x"].values), 50.0)
        np.testing.assert_allclose(ds["repeats"].values[:, :, 1], arrays["repeats"][1])
    with xr.open_dataset(path, engine="deep-retina", drop_variables="stimulus") as ds:
        assert "stimulus" not in ds and ds.attrs["split"] == "train"


def test_xarray_backend_guesses_only_deep_retina_files(published, tmp_path):
    path, _ = published
    backend = data.DeepRetinaBackend()
    assert backend.guess_can_open(path) and backend.guess_can_open(str(path))
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    nc = tmp_path / "rec.nc"
    with open_recording(path) as rec:
        write_netcdf(nc, rec.train.isel(time=slice(0, 50)).load())
    assert not backend.guess_can_open(other)
    assert not backend.guess_can_open(nc)
    assert not backend.guess_can_open(tmp_path / "missing.h5")
    with pytest.raises(FileFormatError, match="not a deep-retina HDF5"):
        xr.open_dataset(nc, engine="deep-retina")
    with pytest.raises(UsageError, match="group 'validation'"):
        xr.open_dataset(path, engine="deep-retina", group="validation")
    with pytest.raises(FileFormatError, match="has no 'train' group"):
        xr.open_dataset(other, engine="deep-retina")
