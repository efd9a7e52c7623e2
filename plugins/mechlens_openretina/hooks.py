"""Entry point of the openretina plugin (registered in pyproject.toml, as a third party would).

The class is imported inside the hook, and it imports torch and openretina only when a model is
made, so discovery stays cheap and works without openretina installed (making the model then says
how to install it).
"""

from __future__ import annotations

from mechlens import hookimpl


@hookimpl
def mechlens_models() -> list[type]:
    from mechlens_openretina.model import OpenRetinaCoreReadout

    return [OpenRetinaCoreReadout]
