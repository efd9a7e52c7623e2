from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from mechlens import io
from mechlens.errors import FileFormatError
from mechlens.testing import noise_stimulus
from mechlens.toymodels import ToyCNN


@pytest.fixture
def ds():
    out = noise_stimulus(ToyCNN(), n_times=5)
    out.attrs.update({"params": {"a": 1}, "flag": True, "nothing": None, "path": Path("/x")})
    return out


def test_round_trip_makes_attrs_safe_and_stores_float32(ds, tmp_path):
    path = io.save(ds, tmp_path / "sub" / "a.nc")
    back = io.load(path)
    assert back.attrs["params"] == '{"a": 1}'
    assert back.attrs["flag"] == 1 and back.attrs["nothing"] == "" and back.attrs["path"] == "/x"
    assert back.attrs["mechlens_version"] and back.attrs["Conventions"] == "CF-1.11, ACDD-1.3"
    np.testing.assert_allclose(back["stimulus"].values, ds["stimulus"].values)
    assert back["time"].attrs["units"] == "s" and back["time"].dtype == np.float64
    assert not list(tmp_path.joinpath("sub").glob("*.tmp"))


def test_interrupted_save_leaves_the_previous_file_intact(ds, tmp_path, monkeypatch):
    path = io.save(ds, tmp_path / "a.nc")
    before = path.read_bytes()

    def crash(self, target, *args, **kwargs):
        Path(target).write_bytes(b"CDF partial")  # half-written temporary file
        raise KeyboardInterrupt

    monkeypatch.setattr(xr.Dataset, "to_netcdf", crash)
    with pytest.raises(KeyboardInterrupt):
        io.save(ds.assign(stimulus=ds["stimulus"] * 2), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.nc"]


def test_missing_file(tmp_path):
    with pytest.raises(FileFormatError, match="no such file"):
        io.load(tmp_path / "nope.nc")


def test_not_netcdf(tmp_path):
    p = tmp_path / "x.nc"
    p.write_text("hello, I am text")
    with pytest.raises(FileFormatError, match="cannot be read as netCDF"):
        io.load(p)


def test_truncated_file(ds, tmp_path):
    p = io.save(ds, tmp_path / "x.nc")
    p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(FileFormatError, match="corrupt, truncated"):
        io.load(p)


def test_foreign_netcdf(tmp_path):
    p = tmp_path / "foreign.nc"
    xr.Dataset({"a": ("t", [1.0, 2.0])}).to_netcdf(p)
    with pytest.raises(FileFormatError, match="not written by mechlens"):
        io.load(p)


def test_malformed_mechlens_file(ds, tmp_path):
    p = tmp_path / "bad.nc"
    bad = ds.copy()
    bad["time"].attrs["units"] = "ms"
    io.save(bad, p)
    with pytest.raises(FileFormatError, match="units"):
        io.load(p)
