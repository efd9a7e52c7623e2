"""Deprecated alias of :mod:`mechlens_attribution` (renamed by its role in 0.1; removed in 0.2).

``import mechlens_captum`` and ``import mechlens_captum.<module>`` keep working for one release: each
name resolves to the very same module object of ``mechlens_attribution`` (so classes, ``isinstance``
and module state are shared, nothing is loaded twice), and the first import warns with a
:class:`DeprecationWarning`. This package is not a plugin: it registers no entry point, and it holds
only this alias code (tests/test_structure.py checks both).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from typing import Any

_OLD, _NEW = "mechlens_captum", "mechlens_attribution"

warnings.warn(
    f"the package {_OLD} was renamed {_NEW} (named by its role); import {_NEW} instead: "
    f"{_OLD} will be removed in mechlens 0.2",
    DeprecationWarning,
    stacklevel=2,
)


class _AliasLoader(importlib.abc.Loader):
    """Load ``_OLD.<x>`` as the already importable ``_NEW.<x>`` (one module object under two names)."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None  # a throw-away module: the successor's own attributes (``__spec__``) stay untouched

    def exec_module(self, module: types.ModuleType) -> None:
        # the import system returns whatever sys.modules holds under the name after exec_module
        sys.modules[module.__name__] = importlib.import_module(_NEW + module.__name__[len(_OLD) :])


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Find the submodules of this alias package (and only those) by their successor's name."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(_OLD + "."):
            return None
        if importlib.util.find_spec(_NEW + fullname[len(_OLD) :]) is None:
            return None  # an unknown submodule fails as it would have: ModuleNotFoundError naming it
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader())


# one finder per alias, also when this package is imported afresh (a test drops it from sys.modules)
sys.meta_path[:] = [f for f in sys.meta_path if getattr(f, "alias_of", None) != _OLD]
_finder = _AliasFinder()
_finder.alias_of = _OLD  # type: ignore[attr-defined]
sys.meta_path.insert(0, _finder)


def __getattr__(name: str) -> Any:
    # ``mechlens_captum.X`` after a plain ``import mechlens_captum``: the successor's attribute or submodule
    successor = importlib.import_module(_NEW)
    if hasattr(successor, name):
        return getattr(successor, name)
    try:
        return importlib.import_module(f"{_NEW}.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"{_NEW}.{name}":
            raise  # the submodule exists but a dependency of it is missing: say that, not "no attribute"
        raise AttributeError(f"module {_OLD!r} (now {_NEW!r}) has no attribute {name!r}") from None
