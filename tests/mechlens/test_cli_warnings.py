"""CLI warnings are one line; a third party's say where they come from."""

from __future__ import annotations

import mechlens.pipeline
from mechlens.cli import format_warning


def test_mechlens_own_warnings_are_plain_one_liners() -> None:
    line = format_warning(
        UserWarning("the attributions miss\n  the response"), UserWarning, mechlens.pipeline.__file__, 3
    )
    assert line == "mechlens: warning: the attributions miss the response\n"


def test_a_third_party_warning_names_its_file_line_and_category(tmp_path) -> None:
    source = tmp_path / "labplug" / "hooks.py"
    line = format_warning(RuntimeWarning("calibration is old"), RuntimeWarning, str(source), 42)
    assert line == f"mechlens: warning: calibration is old (RuntimeWarning from {source}:42)\n"
