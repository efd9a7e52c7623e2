"""The `movie` stimulus: a user's movie from .npy, netCDF or a deep-retina HDF5 test split, on the model's grid."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr
from mechlens_stimuli.movie import Movie

from mechlens import schema
from mechlens.errors import ParameterError
from mechlens.interfaces import Grid
from mechlens.testing import CHECK_GRID, parametrize_with_checks

RNG = np.random.default_rng(0)
#: a raw-intensity movie on the conformance kit's grid (14 x 12 px), 40 frames
RAW = RNG.uniform(0, 255, (40, *CHECK_GRID.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("movies")
    np.save(d / "movie.npy", RAW)
    # any netCDF with a (time, y, x) variable; the time step (s) and x step (um) state the grid
    coords = {"time": schema.time_coord(len(RAW), CHECK_GRID.frame_period_s)}
    coords.update(schema.grid_coords(*CHECK_GRID.shape, 55.0))
    xr.Dataset({"stimulus": (("time", "y", "x"), RAW)}, coords=coords).to_netcdf(d / "movie.nc")
    with h5py.File(d / "naturalscene.h5", "w") as f:  # the published layout's test split
        f["test/stimulus"] = RAW
        f["test/time"] = np.arange(len(RAW)) * 0.01
        f["test/response/firing_rate_10ms"] = np.zeros((3, len(RAW)), np.float32)
    (d / "movie.txt").write_text("not a movie")
    np.save(d / "flat.npy", RAW[0])
    return {p.name: p for p in d.iterdir()}


# the conformance kit makes the stimulus from its parameters: a file that exists from collection on
_KIT_DIR = Path(tempfile.mkdtemp(prefix="mechlens-movie-kit-"))
_KIT = _KIT_DIR / "movie.npy"
np.save(_KIT, RAW)


@pytest.fixture(scope="module", autouse=True)
def _remove_kit_file() -> Iterator[None]:
    yield
    shutil.rmtree(_KIT_DIR, ignore_errors=True)


@parametrize_with_checks([Movie(path=str(_KIT)), Movie(path=str(_KIT), start_s=0.1, duration=0.1)])
def test_conforms(check: object) -> None:
    check()  # type: ignore[operator]


def test_npy_plays_the_file_z_scored_from_start_s_with_its_own_history(files: dict[str, Path]) -> None:
    grid = Grid(CHECK_GRID.shape, 0.01, 5, 50.0)
    ds = Movie(path=str(files["movie.npy"]), start_s=0.1).generate(0, grid)
    assert ds.sizes["y"] == 14 and ds.sizes["x"] == 12 and ds.attrs["frame_period_s"] == 0.01
    index = ds["file_frame"].values
    assert index[0] == 10 - 5 and index[np.argmin(np.abs(ds["time"].values))] == 10  # history = the file's frames
    assert index[-1] == len(RAW) - 1
    played = RAW[5:]
    expected = (played - played.mean(dtype=np.float64)) / played.std(dtype=np.float64)
    np.testing.assert_allclose(ds["stimulus"].values, expected, atol=1e-5)


def test_grey_pads_the_history_the_file_does_not_have(files: dict[str, Path]) -> None:
    ds = Movie(path=str(files["movie.npy"]), duration=0.05, normalize="none").generate(
        0, Grid(CHECK_GRID.shape, 0.01, 5)
    )
    index = ds["file_frame"].values
    assert list(index) == [-1] * 5 + [0, 1, 2, 3, 4]
    assert not ds["stimulus"].values[:5].any()
    np.testing.assert_array_equal(ds["stimulus"].values[5:], RAW[:5])


def test_netcdf_states_its_frame_period_and_pixels(files: dict[str, Path]) -> None:
    ds = Movie(path=str(files["movie.nc"]), normalize="none").generate(0)
    assert ds.attrs["frame_period_s"] == pytest.approx(CHECK_GRID.frame_period_s)
    assert ds.attrs["pixel_um"] == pytest.approx(55.0)
    np.testing.assert_allclose(ds["stimulus"].values[-len(RAW) :], RAW, rtol=1e-6)
    with pytest.raises(ParameterError, match=r"^stimulus\.path: .*0\.0333333 s frames, but the model takes 0\.01 s"):
        Movie(path=str(files["movie.nc"])).generate(0, Grid(CHECK_GRID.shape, 0.01, 5))
    with pytest.raises(ParameterError, match=r"^stimulus\.frame_period_s: got 0\.01, but the movie"):
        Movie(path=str(files["movie.nc"]), frame_period_s=0.01).generate(0)
    with pytest.raises(ParameterError, match=r"^stimulus\.variable: got 'movie'; .* has stimulus"):
        Movie(path=str(files["movie.nc"]), variable="movie").generate(0)


def test_hdf5_test_split_through_the_deep_retina_backend(files: dict[str, Path]) -> None:
    ds = Movie(path=str(files["naturalscene.h5"]), normalize="none").generate(0, Grid(CHECK_GRID.shape, 0.01, 5))
    np.testing.assert_allclose(ds["stimulus"].values[5:], RAW)
    with pytest.raises(ParameterError, match=r"^stimulus\.path: .*has no 'train' group"):
        Movie(path=str(files["naturalscene.h5"]), split="train").generate(0)


@pytest.mark.parametrize(
    ("params", "grid", "match"),
    [
        ({}, Grid((10, 10), 0.01, 5), r"^stimulus\.path: the movie in .* is 14x12 px .* model's grid is 10x10 px"),
        ({"size_px": 12}, None, r"^stimulus\.size_px: got 12 px, but the movie in .* is 14x12 px"),
        ({"duration": 1.0}, None, r"^stimulus\.duration: got 1 s, but the movie .* has 0\.4 s from start_s on"),
        ({"start_s": 0.4}, None, r"^stimulus\.start_s: got 0\.4 s, but the movie .* lasts 0\.4 s \(40 frames\)"),
        ({"path": "flat.npy"}, None, r"^stimulus\.path: .*flat\.npy: the movie has shape \(14, 12\); expected \(time"),
        ({"path": "movie.txt"}, None, r"^stimulus\.path: .*movie\.txt: unknown movie format '\.txt'"),
        ({"path": "missing.npy"}, None, r"^stimulus\.path: .*missing\.npy does not exist"),
        ({"path": ""}, None, r"^stimulus\.path: no movie file given"),
    ],
)
def test_what_does_not_fit_is_refused_naming_the_parameter(
    files: dict[str, Path], params: dict[str, object], grid: Grid | None, match: str
) -> None:
    values: dict[str, object] = {"path": str(files["movie.npy"]), **params}
    if params.get("path"):
        values["path"] = str(files["movie.npy"].with_name(str(params["path"])))
    with pytest.raises(ParameterError, match=match) as err:
        Movie(**values).generate(0, grid)
    assert err.value.exit_code == 2 and "\n" not in str(err.value)


def test_a_constant_movie_cannot_be_z_scored(tmp_path: Path) -> None:
    np.save(tmp_path / "grey.npy", np.full((20, 4, 4), 3.0, np.float32))
    with pytest.raises(ParameterError, match=r"^stimulus\.normalize: .* are constant"):
        Movie(path=str(tmp_path / "grey.npy")).generate(0)
