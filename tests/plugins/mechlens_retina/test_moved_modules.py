"""The retina plugin's former flat module paths still import, as the same modules, with a warning."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from mechlens_retina import moved

PACKAGE = Path(moved.__file__).resolve().parent


@pytest.mark.parametrize("old", sorted(moved.MOVED))
def test_a_former_path_gives_the_module_at_its_new_path_and_warns(old, monkeypatch):
    new = importlib.import_module(moved.MOVED[old])
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=rf"{old} moved to {moved.MOVED[old]}"):
        module = importlib.import_module(old)
    assert module is new


def test_the_former_files_are_gone_and_every_new_path_exists():
    for old, new in moved.MOVED.items():
        assert not (PACKAGE / f"{old.rpartition('.')[2]}.py").exists(), f"{old} is both a file and an alias"
        assert importlib.util.find_spec(new) is not None, new
        assert new not in moved.MOVED


def test_names_outside_the_table_are_left_to_the_import_system():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("mechlens_retina.no_such_module")


def test_the_former_training_module_names_come_from_the_training_package():
    from mechlens_retina.training import fit

    sys.modules["mechlens_retina.training"].__dict__.pop("train", None)
    with pytest.warns(DeprecationWarning, match="mechlens_retina.training.fit.train"):
        from mechlens_retina.training import train
    assert train is fit.train
    with pytest.raises(ImportError):
        from mechlens_retina.training import no_such_name  # noqa: F401


def test_python_dash_m_on_a_former_path_runs_the_new_module():
    out = subprocess.run(
        [sys.executable, "-W", "always::DeprecationWarning", "-m", "mechlens_retina.bundle", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: python -m mechlens_retina.training.bundle")
    assert "mechlens_retina.bundle moved to mechlens_retina.training.bundle" in out.stderr
