"""Plugin discovery and lookup.

Entry points of group ``mechlens`` are loaded on first use. We iterate them ourselves rather than
calling pluggy's ``load_setuptools_entrypoints``, which lets one plugin's import error stop all of
them and silently skips a second plugin with a taken name. Each hook implementation is likewise
called on its own, so one raising hook does not hide the others and each class stays tied to the
distribution that registered it (for provenance).
"""

from __future__ import annotations

import importlib.metadata
import warnings
from dataclasses import dataclass
from typing import Any

import pluggy

from mechlens import hookspecs
from mechlens.errors import PluginError, PluginNotFoundError
from mechlens.parameters import suggest


class PluginWarning(UserWarning):
    """A plugin could not be loaded; the others keep working."""


@dataclass(frozen=True)
class Entry:
    """A registered plugin class.

    Attributes
    ----------
    kind : str
        ``"model"``, ``"stimulus"``, ``"attributor"``, ``"reducer"``, ``"experiment"`` or ``"command"``.
    name : str
        Registry name.
    cls : type
        The plugin class.
    distribution : str
        Name of the distribution whose entry point registered it.
    version : str
        That distribution's version.
    """

    kind: str
    name: str
    cls: type
    distribution: str
    version: str


class Registry:
    """The plugins of every kind, discovered from entry points (and any registered by hand).

    Parameters
    ----------
    group : str
        Entry-point group to scan.
    autoload : bool
        Whether to scan entry points on first use.
    """

    def __init__(self, group: str = hookspecs.PROJECT, autoload: bool = True) -> None:
        self.group = group
        self._autoload = autoload
        self._loaded = False
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._entries: dict[tuple[str, str], Entry] = {}
        self._sources: dict[int, tuple[str, str]] = {}
        self.errors: list[str] = []

    # -- loading ---------------------------------------------------------------------------
    def load(self) -> None:
        """Scan the entry points once (later calls do nothing)."""
        if self._loaded:
            return
        self._loaded = True
        if not self._autoload:
            return
        for ep in importlib.metadata.entry_points(group=self.group):
            dist = ep.dist.name if ep.dist is not None else "<unknown distribution>"
            version = ep.dist.version if ep.dist is not None else ""
            try:
                obj = ep.load()
            except Exception as err:  # noqa: BLE001 - any import failure of a third party
                self._warn(f"plugin {ep.name!r} from distribution {dist!r} failed to load: {type(err).__name__}: {err}")
                continue
            self.register(obj, name=f"{dist}:{ep.name}", distribution=dist, version=version)

    def register(self, plugin: Any, name: str | None = None, distribution: str = "", version: str = "") -> None:
        """Register a plugin module or object by hand (tests, notebooks) and collect its classes.

        Raises
        ------
        PluginError
            If a class name clashes with one already registered by another distribution.
        """
        self._loaded = True if not self._autoload else self._loaded
        if self.pm.is_registered(plugin):
            return
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except Exception as err:  # noqa: BLE001 - pluggy validation errors
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            self._warn(f"plugin {name or plugin!r} from distribution {distribution!r} is invalid: {err}")
            return
        dist = distribution or getattr(plugin, "__name__", str(plugin))
        for hook_name, kind in hookspecs.HOOK_KINDS.items():
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                try:
                    classes = impl.function() or []
                except Exception as err:  # noqa: BLE001
                    self._warn(f"{hook_name} of distribution {dist!r} raised {type(err).__name__}: {err}")
                    continue
                for cls in classes:
                    self._add(kind, cls, dist, version)

    def _add(self, kind: str, cls: type, dist: str, version: str) -> None:
        from mechlens.interfaces import KINDS

        base = KINDS[kind]
        if not (isinstance(cls, type) and issubclass(cls, base)):
            self._warn(
                f"distribution {dist!r} returned {cls!r} from its {kind} hook; expected a {base.__name__} subclass"
            )
            return
        name = getattr(cls, "name", "")
        if not name:
            self._warn(f"{kind} class {cls.__qualname__} of distribution {dist!r} has no name; it is skipped")
            return
        key = (kind, name)
        if key in self._entries and self._entries[key].cls is not cls:
            other = self._entries[key]
            raise PluginError(
                f"two plugins register the {kind} name {name!r}: {other.cls.__module__}.{other.cls.__qualname__} "
                f"from distribution {other.distribution!r} and {cls.__module__}.{cls.__qualname__} from "
                f"distribution {dist!r}. Uninstall one, or rename one of them."
            )
        self._entries[key] = Entry(kind, name, cls, dist, version)

    def _warn(self, message: str) -> None:
        self.errors.append(message)
        warnings.warn(message, PluginWarning, stacklevel=3)

    # -- lookup ----------------------------------------------------------------------------
    def entries(self, kind: str | None = None) -> list[Entry]:
        """Registered plugins, sorted by kind and name (of one kind if given)."""
        self.load()
        out = [e for (k, _), e in self._entries.items() if kind is None or k == kind]
        return sorted(out, key=lambda e: (e.kind, e.name))

    def names(self, kind: str) -> list[str]:
        """Registered names of one kind."""
        return [e.name for e in self.entries(kind)]

    def entry(self, kind: str, name: str) -> Entry:
        """The entry of ``kind`` named ``name``.

        Raises
        ------
        PluginNotFoundError
            Listing the known names and the closest match.
        """
        if kind not in hookspecs.HOOK_KINDS.values():
            raise PluginNotFoundError(
                f"unknown plugin kind {kind!r}; kinds are {', '.join(hookspecs.HOOK_KINDS.values())}"
            )
        self.load()
        try:
            return self._entries[(kind, name)]
        except KeyError:
            known = self.names(kind)
            listing = ", ".join(known) if known else "none installed"
            raise PluginNotFoundError(
                f"no {kind} named {name!r}{suggest(name, known) or '.'} Known {kind} plugins: {listing}."
            ) from None

    def get(self, kind: str, name: str) -> type:
        """The plugin class of ``kind`` named ``name`` (see :meth:`entry`)."""
        return self.entry(kind, name).cls

    def provenance(self, cls: type) -> tuple[str, str]:
        """(distribution, version) of a registered class, or ("", "") if not registered."""
        for e in self.entries():
            if e.cls is cls:
                return e.distribution, e.version
        return "", ""


_default: Registry | None = None


def default() -> Registry:
    """The process-wide registry (entry points scanned on first use)."""
    global _default
    if _default is None:
        _default = Registry()
    return _default


def reset() -> None:
    """Forget the process-wide registry (tests; a newly installed plugin)."""
    global _default
    _default = None


def get(kind: str, name: str) -> type:
    """Shorthand for ``default().get(kind, name)``: ``registry.get("model", "retina-cnn")``."""
    return default().get(kind, name)


def entries(kind: str | None = None) -> list[Entry]:
    """Shorthand for ``default().entries(kind)``."""
    return default().entries(kind)
