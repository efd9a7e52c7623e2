from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mechlens import io, registry
from mechlens.cli import main


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


# -- issue 18 item 2, issue 20: every flag of `run` takes effect or is refused -----------------------
@pytest.fixture
def experiments_registry(monkeypatch):
    """The toy experiments (quick) as the process-wide registry, as `mechlens run` with no stimulus sees it."""
    from experiment_toys import ToyNoiseExperiment, toy_registry

    monkeypatch.setattr(registry, "_default", toy_registry(ToyNoiseExperiment))
    yield
    registry.reset()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--attributor", "toy-share"], "--attributor is ignored by experiments, which choose their own attributor"),
        (["--reducer", "toy-keep"], "--reducer is ignored by experiments, which choose their own reducer"),
        (["--layer", "conv1"], "--layer is ignored by experiments, which attribute their own layer"),
        (["--set", "attributor.steps=3"], "--set attributor.steps=3 is ignored by experiments"),
        (["--set", "stimulus.contrast=2"], "--set stimulus.contrast=2: no stimulus named, so the experiments run"),
    ],
)
def test_flags_experiments_ignore_are_refused(experiments_registry, tmp_path, capsys, flags, message):
    assert main(["run", *flags, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "give --stimulus NAME to run a single pipeline" in err
    assert not (tmp_path / "out").exists()


def test_experiment_with_a_stimulus_is_refused(experiments_registry, tmp_path, capsys):
    argv = ["run", "--stimulus", "toy-noise", "--model", "toy-cnn", "--experiment", "toy-noise-run"]
    assert main([*argv, "-o", str(tmp_path / "x.nc")]) == 2
    assert "--experiment runs experiments, which choose their own stimulus; drop --stimulus" in capsys.readouterr().err


def test_cells_take_effect_in_experiments(experiments_registry, tmp_path, capsys):
    assert main(["run", "--experiment", "toy-noise-run", "--cells", "gc02,gc00", "-o", str(tmp_path)]) == 0
    ds = io.load(tmp_path / "toy-noise-run.nc")
    assert json.loads(ds.attrs["analysed_cells"]) == ["gc02", "gc00"]
    assert main(["run", "--cells", "gc00", "--cells", "gc99", "-o", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "cells gc99: model 'toy-cnn'" in err and "its cells are gc00, gc01, gc02" in err


def test_list_options_do_not_eat_the_config_file(toys, tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text('[model]\nname = "toy-cnn"\n[stimulus]\nname = "toy-noise"\n')
    for argv in (["--cells", "gc00,gc02", str(cfg)], ["--cells", "gc00", "--cells", "gc02", str(cfg)]):
        out = tmp_path / "z.nc"
        assert main(["run", *argv, "-o", str(out)]) == 0, capsys.readouterr().err
        assert out.exists()
        out.unlink()
    # the old form `--cells a b` now reads b as the config file: say how to list cells
    assert main(["run", "--cells", "gc00", "gc02", "-o", str(tmp_path / "z.nc")]) == 2
    assert "separate them with commas (--cells gc00,gc01)" in capsys.readouterr().err
    assert main(["run", "--cells", "gc00,,gc02", str(cfg)]) == 2
    assert "has an empty item" in capsys.readouterr().err


def test_model_parameters_reach_the_experiments_default_model(experiments_registry, tmp_path, capsys):
    assert main(["run", "--set", "model.n_cells=2", "-o", str(tmp_path)]) == 0
    ds = io.load(tmp_path / "toy-noise-run.nc")
    assert json.loads(ds.attrs["model_parameters"])["n_cells"] == 2
    assert main(["run", "--set", "model.n_cels=2", "-o", str(tmp_path / "bad")]) == 2
    assert "did you mean n_cells" in capsys.readouterr().err
    # a pipeline names its model: the message says how, in flags
    assert main(["run", "--stimulus", "toy-noise", "--set", "model.n_cells=2"]) == 2
    err = capsys.readouterr().err
    assert "--set model.n_cells=2: no model named; give --model NAME (or --set model.name=NAME)" in err
    assert "[model]" not in err


def test_checkpoint_takes_only_runtime_parameters(toys, tmp_path, capsys):
    argv = ["run", "--model", "toy-cnn", "--stimulus", "toy-noise", "--model-checkpoint", str(tmp_path / "m.pt")]
    assert main([*argv, "--set", "model.n_cells=2"]) == 2
    err = capsys.readouterr().err
    assert "--set model.n_cells=2: --model-checkpoint fixes n_cells of model 'toy-cnn'" in err


def test_checkpoint_with_a_device(tmp_path, capsys):
    """retina-cnn loads a checkpoint with ``device`` (runtime only); its architecture stays the checkpoint's."""
    pytest.importorskip("torch")
    from mechlens_retina.models.cnn import RetinaCNN

    small = {"checkpoint": "random", "history": 5, "image_size": 12, "kernel1": 5, "kernel2": 3, "n_cells": 2}
    path = tmp_path / "m.safetensors"
    RetinaCNN(**small, device="cpu").save(path)
    base = ["run", "--model", "retina-cnn", "--stimulus", "white-noise", "--model-checkpoint", str(path)]
    assert main([*base, "--set", "model.history=6"]) == 2
    err = capsys.readouterr().err
    assert "fixes history of model 'retina-cnn'" in err and "only model.device can be set" in err
    from mechlens.pipeline import load_model

    model = load_model("retina-cnn", {"device": "cpu"}, path)
    assert model.history == 5 and next(model.torch_module().parameters()).device.type == "cpu"
