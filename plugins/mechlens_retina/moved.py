"""The retina plugin's former module paths, kept importable with a DeprecationWarning.

The plugin was split into packages by role (``models``, ``training``, ``phenomena``,
``experiments``). Code written against the flat layout (``from mechlens_retina.cnn import
RetinaCNN``, ``python -m mechlens_retina.bundle``) keeps working: :func:`install` puts a finder on
``sys.meta_path`` that answers for exactly the names in :data:`MOVED` and hands back the module at
its new path (the same module object, so ``isinstance`` and monkeypatching see one class). Other
names are left to the normal import system. ``mechlens_retina.training`` is now the package of that
role; the names of the former module of that name are forwarded by the package itself (see
:mod:`mechlens_retina.training`). Remove in the release after next.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import CodeType, ModuleType

#: former module path -> its path now
MOVED: dict[str, str] = {
    f"mechlens_retina.{old}": f"mechlens_retina.{new}"
    for old, new in {
        "cnn": "models.cnn",
        "layers": "models.layers",
        "checkpoint": "models.checkpoint",
        "synthetic": "models.synthetic",
        "circuit_cnn": "models.circuit_cnn",
        "simulate": "training.simulate",
        "data": "training.recordings",
        "train_state": "training.state",
        "train_windows": "training.windows",
        "bundle": "training.bundle",
        "measure_common": "phenomena.common",
        "measure_targets": "phenomena.targets",
        "measure_latency": "phenomena.latency",
        "measure_osr": "phenomena.osr",
        "measure_anticipation": "phenomena.anticipation",
        "measure_reversal": "phenomena.reversal",
        "agreement": "phenomena.agreement",
        "ground_truth": "phenomena.ground_truth",
        "recovery": "experiments.recovery",
        "reporting": "experiments.report",
    }.items()
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finder and loader of the former paths: the module is the one at the new path."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        _warn(spec.name)
        return importlib.import_module(MOVED[spec.name])

    def get_code(self, fullname: str) -> CodeType | None:
        # `python -m mechlens_retina.bundle`: runpy asks for the code and runs it as __main__
        _warn(fullname)
        spec = importlib.util.find_spec(MOVED[fullname])
        loader = spec.loader if spec is not None else None
        return loader.get_code(MOVED[fullname]) if isinstance(loader, importlib.abc.InspectLoader) else None

    def exec_module(self, module: ModuleType) -> None:
        # the module was executed under its new name; nothing left to run
        return None


def _warn(old: str) -> None:
    warnings.warn(
        f"{old} moved to {MOVED[old]} (the retina plugin is split into packages by role, see "
        "CONTRIBUTING.md, 'Layout'); import it from there, the old path goes in a later release",
        DeprecationWarning,
        stacklevel=3,
    )


def install() -> None:
    """Put the former-path finder first on ``sys.meta_path`` (once per process)."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.insert(0, _Alias())
