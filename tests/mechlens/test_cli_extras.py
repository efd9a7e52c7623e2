"""Issue 20: `mechlens --version` (`-VV`: plugin distributions), `run --dry-run`, completion, help examples."""

from __future__ import annotations

import sys

import pytest

from mechlens import __version__, registry
from mechlens.cli import main

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_version_once_prints_the_version_only(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"mechlens {__version__}\n"


@pytest.mark.parametrize("flags", [["-VV"], ["--version", "--version"], ["-V", "--version"]])
def test_version_twice_lists_every_plugin_distribution(toys, capsys, flags):
    assert main(flags) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"mechlens {__version__}\nPython ")
    assert "plugin distributions:" in out
    assert f"  mechlens {__version__}  (" in out  # the built-in plugins' distribution
    assert "  toy-models 0.3  (" in out and "1 model" in out  # a third party's, with what it registers


def _toy_pipeline(tmp_path, *extra):
    out = tmp_path / "r.nc"
    argv = ["run", "--model", "toy-cnn", "--stimulus", "toy-noise", "--set", "stimulus.contrast=[0.5,1]"]
    return out, [*argv, "--seed", "2", "-o", str(out), *extra]


def test_dry_run_prints_every_stage_and_parameter_and_runs_nothing(toys, tmp_path, capsys):
    out, argv = _toy_pipeline(tmp_path, "--dry-run")
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    cfg = tomllib.loads(text)
    assert cfg["model"]["name"] == "toy-cnn" and cfg["stimulus"]["name"] == "toy-noise"
    assert cfg["stimulus"]["contrast"] == [0.5, 1.0] and cfg["run"] == {
        "seed": 2,
        "layer": "",
        "cells": [],
        "model_checkpoint": "",
        "output": str(out),
    }
    assert 'name = "toy-cnn"  # model plugin, distribution toy-models 0.3' in text
    assert "# [attributor]: no attributor" in text
    for stage in ("model", "stimulus"):
        cls = registry.get(stage, cfg[stage]["name"])
        for spec in cls.parameter_specs():  # every parameter, with the value it runs with
            assert spec.name in cfg[stage] or f"# {spec.name}: unset" in text, (stage, spec.name)


def test_dry_run_output_is_a_run_file_that_runs_the_same(toys, tmp_path, capsys):
    out, argv = _toy_pipeline(tmp_path, "--dry-run")
    assert main(argv) == 0
    resolved = tmp_path / "run.toml"
    resolved.write_text(capsys.readouterr().out)
    assert main(["run", str(resolved), "--dry-run"]) == 0
    again = capsys.readouterr().out
    assert tomllib.loads(again) == tomllib.loads(resolved.read_text())
    assert main(["run", str(resolved)]) == 0 and out.exists()


def test_dry_run_refuses_what_the_run_would_refuse(toys, tmp_path, capsys):
    _, argv = _toy_pipeline(tmp_path, "--dry-run", "--set", "stimulus.contrst=1")
    assert main(argv) == 2
    assert "stimulus.contrst: unknown parameter; did you mean contrast?" in capsys.readouterr().err


def test_dry_run_of_experiments_shows_each_experiment_and_its_stages(monkeypatch, tmp_path, capsys):
    from experiment_toys import toy_registry

    monkeypatch.setattr(registry, "_default", toy_registry())
    try:
        assert main(["run", "--dry-run", "-o", str(tmp_path / "out")]) == 0
    finally:
        registry.reset()
    cfg = tomllib.loads(capsys.readouterr().out)
    assert cfg["run"]["output"] == str(tmp_path / "out")
    assert set(cfg["experiment"]) == {"toy-flash-sweep", "toy-noise-run"}
    noise = cfg["experiment"]["toy-noise-run"]
    assert noise["output"] == str(tmp_path / "out" / "toy-noise-run.nc")
    assert noise["model"]["name"] == "toy-cnn" and noise["attributor"]["name"] == "toy-share"
    assert "reducer" not in noise  # the experiment has none: a comment says so
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_script_covers_commands_and_options(capsys, shell):
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for word in ("mechlens", "run", "report", "--dry-run", "--experiment", "train"):
        assert word in script, word


def test_bash_completion_offers_the_installed_plugins_names(capsys, tmp_path):
    """In a real bash: `mechlens run --attributor <TAB>` lists the attributors, and a wrong name
    still gets mechlens's own did-you-mean when the command runs (the choices live only in the
    completion script)."""
    import shutil
    import subprocess

    from mechlens import registry

    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    assert main(["completion", "bash"]) == 0
    script = tmp_path / "mechlens.bash"
    script.write_text(capsys.readouterr().out)
    line = "mechlens run --attributor "
    probe = (
        f"source {script}; COMP_WORDS=(mechlens run --attributor ''); COMP_CWORD=3; "
        f"COMP_LINE='{line}'; COMP_POINT={len(line)}; _shtab_mechlens; echo \"${{COMPREPLY[@]}}\""
    )
    offered = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert sorted(offered) == sorted(registry.default().names("attributor"))
    assert main(["run", "--attributor", "integrated-gradient", "--stimulus", "flash", "--dry-run"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_completion_of_an_unknown_shell_is_a_usage_error(capsys):
    assert main(["completion", "fish"]) == 2
    assert "invalid choice: 'fish'" in capsys.readouterr().err


def test_run_help_ends_with_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    examples = text.split("\nexamples (`mechlens list` shows the plugin names):\n")[1]
    assert examples.startswith("  mechlens run ") and "--dry-run" in examples
