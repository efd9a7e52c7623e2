"""The third-party example package in docs/ works as documented: discovered through its entry point,
conformant, and its own tests pass."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from mechlens import registry
from mechlens.testing import check_stimulus

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "example-plugin"


def test_example_plugin_is_discovered_and_conforms(make_dist, tmp_path):
    shutil.copytree(EXAMPLE / "mechlens_gratings", tmp_path / "mechlens_gratings")
    make_dist("mechlens-gratings", {}, {"gratings": "mechlens_gratings.hooks"}, version="0.1.0")
    for mod in [m for m in sys.modules if m.startswith("mechlens_gratings")]:
        del sys.modules[mod]
    registry.reset()
    entry = registry.default().entry("stimulus", "drifting-grating")
    assert entry.distribution == "mechlens-gratings"
    check_stimulus(entry.cls)


def test_example_plugin_own_tests_pass(tmp_path):
    shutil.copytree(EXAMPLE, tmp_path / "example")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path / "example",
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path / "example"), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
