"""Entry point of the reduction plugin (registered in pyproject.toml, as a third party would)."""

from __future__ import annotations

from mechlens import hookimpl


@hookimpl
def mechlens_reducers() -> list[type]:
    return []
