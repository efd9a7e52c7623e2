"""pluggy hook specifications of the ``mechlens`` project.

A plugin is a module (or object) registered under the entry-point group ``mechlens`` that
implements some of these hooks with ``@mechlens.hookimpl``. Each hook returns a list of classes;
import the classes inside the hook body so that discovery stays cheap (no torch at import time).
"""

# Hook specifications are signatures only: pluggy never calls their bodies (each plugin's
# @hookimpl supplies the result), so a docstring-only body returning a list is intended.
# mypy: disable-error-code="empty-body"

from __future__ import annotations

import pluggy

PROJECT = "mechlens"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def mechlens_models() -> list[type]:
    """Model classes (subclasses of :class:`mechlens.interfaces.Model`)."""


@hookspec
def mechlens_stimuli() -> list[type]:
    """Stimulus classes (subclasses of :class:`mechlens.interfaces.Stimulus`)."""


@hookspec
def mechlens_attributors() -> list[type]:
    """Attributor classes (subclasses of :class:`mechlens.interfaces.Attributor`)."""


@hookspec
def mechlens_reducers() -> list[type]:
    """Reducer classes (subclasses of :class:`mechlens.interfaces.Reducer`)."""


@hookspec
def mechlens_experiments() -> list[type]:
    """Experiment classes (subclasses of :class:`mechlens.interfaces.Experiment`)."""


@hookspec
def mechlens_commands() -> list[type]:
    """CLI subcommand classes (subclasses of :class:`mechlens.interfaces.Command`)."""


#: hook name -> plugin kind
HOOK_KINDS = {
    "mechlens_models": "model",
    "mechlens_stimuli": "stimulus",
    "mechlens_attributors": "attributor",
    "mechlens_reducers": "reducer",
    "mechlens_experiments": "experiment",
    "mechlens_commands": "command",
}
