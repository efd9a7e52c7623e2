"""mechlens: from a deep-network model of a neural circuit to a mechanistic account of how it computes.

Import cost is kept low: torch, captum and scikit-learn are imported only when a plugin that needs
them is used.
"""

from __future__ import annotations

from typing import Any

from mechlens.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl", "run"]


def run(*args: Any, **kwargs: Any) -> Any:
    """Run the pipeline; see :func:`mechlens.pipeline.run`.

    On a terminal or in a notebook it shows its progress (each stage, the attribution's bar, the run
    time) unless the program configured logging itself; elsewhere it is silent (:mod:`mechlens.progress`).
    """
    from mechlens.pipeline import run as _run
    from mechlens.progress import reporting

    with reporting("mechlens.run"):
        return _run(*args, **kwargs)
