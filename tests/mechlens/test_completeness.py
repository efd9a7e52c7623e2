"""Completeness check: an attribution that does not add up to the response warns, or is refused with strict."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import xarray as xr

from mechlens import completeness
from mechlens.errors import UsageError


def result(error_hz: float, span_hz: float = 100.0) -> xr.Dataset:
    t = np.arange(50) * 0.01
    response = np.linspace(0.0, span_hz, 50)[:, None] * np.ones((1, 2))
    err = np.zeros((50, 2))
    err[10, 1] = -error_hz  # the largest |error| counts, whatever its sign
    coords = {"time": t, "cell": ["a", "b"]}
    return xr.Dataset(
        {"response": (("time", "cell"), response), "completeness_error": (("time", "cell"), err)}, coords=coords
    )


def test_a_complete_attribution_passes_silently() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = completeness.check(result(0.05), "attributor 'ig'")  # 5e-4 of a 100 Hz range
    assert ds.attrs["completeness_ok"] == 1
    assert ds.attrs["completeness_error_rel"] == pytest.approx(5e-4)
    assert ds.attrs["completeness_tolerance"] == completeness.DEFAULT_TOLERANCE


def test_an_incomplete_attribution_warns_and_is_flagged() -> None:
    with pytest.warns(
        completeness.CompletenessWarning, match=r"attributor 'deeplift'.*3\.20e-01 of the response range"
    ):
        ds = completeness.check(result(32.0), "attributor 'deeplift'")
    assert ds.attrs["completeness_ok"] == 0 and ds.attrs["completeness_error_rel"] == pytest.approx(0.32)


def test_strict_refuses_it_and_a_larger_tolerance_accepts_it() -> None:
    with pytest.raises(completeness.IncompleteAttributionError, match="--strict") as err:
        completeness.check(result(32.0), "attributor 'deeplift'", strict=True)
    assert err.value.exit_code == 1
    ds = completeness.check(result(32.0), "attributor 'deeplift'", tolerance=0.5, strict=True)
    assert ds.attrs["completeness_ok"] == 1


def test_results_without_an_error_variable_are_left_alone() -> None:
    ds = result(1.0).drop_vars("completeness_error")
    assert completeness.check(ds, "x", strict=True).attrs == {}
    nan = result(1.0)
    nan["completeness_error"][:] = np.nan
    assert math.isnan(completeness.relative_error(nan))
    assert "completeness_ok" not in completeness.check(nan, "x").attrs


def test_a_flat_response_measures_the_error_in_hz() -> None:
    ds = result(2e-4, span_hz=0.0)
    assert completeness.relative_error(ds) == pytest.approx(2e-4)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf"), "lots", None])
def test_a_bad_tolerance_is_a_usage_error(bad: object) -> None:
    with pytest.raises(UsageError, match="completeness tolerance"):
        completeness.check(result(0.0), "x", tolerance=bad)  # type: ignore[arg-type]


def test_cli_warns_on_an_incomplete_attribution_and_strict_refuses_it(toys, tmp_path, capsys) -> None:
    from mechlens import io
    from mechlens.cli import main

    # gradient x activation is a first-order Taylor term: not complete on a ReLU network
    argv = ["run", "--model", "toy-cnn", "--stimulus", "toy-noise", "--attributor", "gradient-x-activation"]
    out = tmp_path / "r.nc"
    with pytest.warns(completeness.CompletenessWarning, match="gradient-x-activation"):
        assert main([*argv, "-o", str(out)]) == 0
    ds = io.load(out)
    assert ds.attrs["completeness_ok"] == 0 and ds.attrs["completeness_error_rel"] > 1e-3
    strict = tmp_path / "strict.nc"
    assert main([*argv, "--strict", "-o", str(strict)]) == 1
    assert "refused: --strict" in capsys.readouterr().err and not strict.exists()
    loose = tmp_path / "loose.nc"
    assert main([*argv, "--strict", "--completeness-tolerance", "1", "-o", str(loose)]) == 0
    assert io.load(loose).attrs["completeness_ok"] == 1
    # an exact method passes the default tolerance
    exact = tmp_path / "exact.nc"
    assert main([*argv[:-1], "integrated-gradients", "-o", str(exact)]) == 0
    assert io.load(exact).attrs["completeness_ok"] == 1
    # the report flags the incomplete one, and only that one
    from mechlens import report

    page = report.build([out, exact], tmp_path / "rep").read_text()
    assert page.count("The attributions do not account for the response") == 1
    assert "(over tolerance)" in page
    # the experiments warn and record it, but do not take the flag
    assert main(["run", "--model", "toy-cnn", "--strict", "-o", str(tmp_path / "exp")]) == 2
    assert "--strict applies to a single pipeline" in capsys.readouterr().err
