from __future__ import annotations

import subprocess
import sys

import pytest
from toy_plugins import TOYS

from mechlens import io, registry
from mechlens.cli import main


@pytest.fixture
def toys(make_dist):
    make_dist("toy-models", {"toy_models_plugin": TOYS}, {"toys": "toy_models_plugin"}, version="0.3")
    registry.reset()
    yield
    registry.reset()


def test_version():
    out = subprocess.run([sys.executable, "-m", "mechlens.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("mechlens ")


def test_list_shows_third_party_plugins_with_distribution(toys, capsys):
    assert main(["list", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "toy-cnn" in out and "toy-models 0.3" in out
    assert "contrast = 1.0  float | list[float] (>= 0) sweepable" in out


def test_run_writes_a_valid_file_and_info_reads_it(toys, tmp_path, capsys):
    out = tmp_path / "r.nc"
    code = main(
        [
            "run",
            "--model",
            "toy-cnn",
            "--stimulus",
            "toy-noise",
            "--set",
            "stimulus.contrast=[0.5,1]",
            "--seed",
            "2",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    ds = io.load(out)
    assert ds.sizes["condition"] == 2 and ds.attrs["seed"] == 2
    assert ds.attrs["model_distribution"] == "toy-models"
    assert "--set" in ds.attrs["history"]
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "stimulus    toy-noise (toy-models)" in text and "condition   contrast = 0.5, 1" in text


def test_config_file_run(toys, tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        f'[model]\nname = "toy-cnn"\n[stimulus]\nname = "toy-noise"\n[run]\noutput = "{tmp_path / "c.nc"}"\n'
    )
    assert main(["run", str(cfg)]) == 0
    assert (tmp_path / "c.nc").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["run", "--model", "toy-cnn", "--stimulus", "toy-noise", "--set", "stimulus.contrats=1"],
            "did you mean contrast",
        ),
        (["run", "--model", "toy-cn", "--stimulus", "toy-noise"], "did you mean toy-cnn"),
        (["run", "--stimulus", "toy-noise"], "name a model"),
        (["run", "--model", "toy-cnn", "--stimulus", "toy-noise", "--set", "nonsense"], "stage.param=value"),
        (["frobnicate"], "invalid choice"),
        (["list", "widgets"], "unknown kind"),
    ],
)
def test_user_errors_exit_2_with_one_message(toys, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_failures_while_running_exit_1(toys, tmp_path, capsys):
    bad = tmp_path / "bad.nc"
    bad.write_text("not netcdf")
    assert main(["info", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "cannot be read as netCDF" in err and "Traceback" not in err


def test_grid_mismatch_is_a_failure_with_a_clear_message(toys, tmp_path, capsys):
    code = main(
        [
            "run",
            "--model",
            "toy-cnn",
            "--stimulus",
            "toy-noise",
            "--set",
            "stimulus.size=8",
            "-o",
            str(tmp_path / "x.nc"),
        ]
    )
    assert code == 1
    assert "12x12 pixel movies; the stimulus is 8x8" in capsys.readouterr().err
    assert not (tmp_path / "x.nc").exists()


def test_debug_shows_the_traceback(toys, tmp_path, capsys):
    bad = tmp_path / "bad.nc"
    bad.write_text("x")
    assert main(["--debug", "info", str(bad)]) == 1
    assert "Traceback" in capsys.readouterr().err
