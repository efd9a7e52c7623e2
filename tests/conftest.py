"""Shared fixtures: fake third-party distributions registered through real entry points."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from mechlens import registry


@pytest.fixture
def make_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Create an installed-looking distribution (``*.dist-info`` with entry_points.txt) on sys.path.

    ``make_dist("toy-dist", {"toy_mod": "source"}, {"toy": "toy_mod"})`` writes the module and
    registers entry point ``toy = toy_mod`` in group ``mechlens``.
    """
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(name: str, modules: dict[str, str], entry_points: dict[str, str], version: str = "1.0") -> Path:
        for mod, source in modules.items():
            (tmp_path / f"{mod}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        eps = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
        (info / "entry_points.txt").write_text(f"[mechlens]\n{eps}\n")
        for mod in modules:
            sys.modules.pop(mod, None)
        return info

    yield make
    registry.reset()
