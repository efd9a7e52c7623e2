"""The documentation site builds with `mkdocs build --strict` (as `make lint` does): every page in the
nav, every link and anchor resolves, and the API reference renders from the docstrings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_docs_site_builds_strictly(tmp_path):
    site = tmp_path / "site"
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    api = (site / "api" / "interfaces" / "index.html").read_text(encoding="utf-8")
    assert "Stimulus" in api and "Parameters" in api  # rendered from the docstrings
    assert not any("fonts.googleapis" in p.read_text(encoding="utf-8") for p in site.rglob("*.html"))
