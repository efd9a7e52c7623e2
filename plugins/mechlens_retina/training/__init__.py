"""From a model retina to a trained CNN: record responses (``simulate``), read recordings in the published
HDF5 layout (``recordings``), train (``fit``, with its ``windows`` and resumable ``state``), and the
bundled checkpoint's recipe (``bundle``, ``make train-default``).

``mechlens_retina.training`` was a module (now ``fit``); its names, e.g.
``from mechlens_retina.training import train``, are still served from here with a DeprecationWarning.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any


def __getattr__(name: str) -> Any:
    # PEP 562: called only for names the package does not have, so submodules and real attributes
    # are untouched; the former module's public names are looked up lazily (no torch import here)
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    fit = importlib.import_module("mechlens_retina.training.fit")
    if not hasattr(fit, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"mechlens_retina.training.{name} moved to mechlens_retina.training.fit.{name} (the retina plugin is "
        "split into packages by role, see CONTRIBUTING.md, 'Layout'); the old path goes in a later release",
        DeprecationWarning,
        stacklevel=2,
    )
    value = getattr(fit, name)
    globals()[name] = value  # warn once per name, like the import system's own deprecations
    return value
