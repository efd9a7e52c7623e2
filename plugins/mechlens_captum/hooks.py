"""Entry point of the attribution plugin (registered in pyproject.toml, as a third party would)."""

from __future__ import annotations

from mechlens import hookimpl


@hookimpl
def mechlens_attributors() -> list[type]:
    return []
