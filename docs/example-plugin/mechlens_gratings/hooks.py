"""mechlens entry point. Import classes inside the hook so discovery stays cheap."""

from __future__ import annotations

from mechlens import hookimpl


@hookimpl
def mechlens_stimuli() -> list[type]:
    from mechlens_gratings.drifting import DriftingGrating

    return [DriftingGrating]
