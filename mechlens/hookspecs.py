"""pluggy hook specifications of the ``mechlens`` project.

A plugin is a module (or object) registered under the entry-point group ``mechlens`` that
implements some of these hooks with ``@mechlens.hookimpl``. Each plugin-kind hook (:data:`HOOK_KINDS`)
takes no argument and returns a list of classes; import the classes inside the hook body so that
discovery stays cheap (no torch at import time). :func:`mechlens_report_sections` is the one hook
called with data: the report asks it for the domain's prose about the result files.
"""

# Hook specifications are signatures only: pluggy never calls their bodies (each plugin's
# @hookimpl supplies the result), so a docstring-only body returning a list is intended.
# mypy: disable-error-code="empty-body"

from __future__ import annotations

from typing import Any

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


@hookspec
def mechlens_report_sections(results: list[Any]) -> list[Any]:
    """Sections a plugin adds to ``mechlens report`` (the domain's prose: what a model was trained on,
    the paper's finding beside the model's, what a failed measure means, a known ground truth).

    Called once per report, after every file is loaded; each implementation is called on its own,
    so one that raises or returns something else is named on the page and the others still count.

    Parameters
    ----------
    results : list of mechlens.report.ReportResult
        Every result file of the report, in page order: ``path``, ``key`` (its section's anchor),
        ``dataset`` (the loaded result, read only) and ``experiment`` (its ``experiment`` attr).

    Returns
    -------
    list of mechlens.report.Section
        Text sections (plain text, escaped by the report): with ``result=key`` inside that result's
        section, else on the page (``topic="model"``: under "Model and data"). Return ``[]`` for
        results the plugin knows nothing about.
    """


#: hook name -> plugin kind (the class-returning hooks; mechlens_report_sections is not one)
HOOK_KINDS = {
    "mechlens_models": "model",
    "mechlens_stimuli": "stimulus",
    "mechlens_attributors": "attributor",
    "mechlens_reducers": "reducer",
    "mechlens_experiments": "experiment",
    "mechlens_commands": "command",
}
