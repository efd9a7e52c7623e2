"""Entry point of the built-in stimuli (registered in pyproject.toml, as a third party would)."""

from __future__ import annotations

from mechlens import hookimpl


@hookimpl
def mechlens_stimuli() -> list[type]:
    return []
