"""Entry point of the reduction plugin (registered in pyproject.toml, as a third party would).

The reducer classes are imported inside the hook so that plugin discovery never imports torch or
scikit-learn.
"""

from __future__ import annotations

from mechlens import hookimpl


@hookimpl
def mechlens_reducers() -> list[type]:
    """The reducers: ``cell-types`` (the paper's reduction), ``nmf`` and ``pca``."""
    from mechlens_reduction.celltypes import CellTypes
    from mechlens_reduction.factorise import NMFReducer, PCAReducer

    return [CellTypes, NMFReducer, PCAReducer]
