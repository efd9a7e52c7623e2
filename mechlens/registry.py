"""Plugin discovery and lookup.

Entry points of group ``mechlens`` are loaded on first use. We iterate them ourselves rather than
calling pluggy's ``load_setuptools_entrypoints``, which lets one plugin's import error stop all of
them and silently skips a second plugin with a taken name. Each hook implementation is likewise
called on its own, so one raising hook does not hide the others and each class stays tied to the
distribution that registered it (for provenance).

Containment: one broken plugin must not take every command down with it. A plugin that fails to
import (an exception, or ``sys.exit``), a hook that raises or returns something other than a list of
classes, and a class of the wrong kind are each skipped with one :class:`PluginWarning` line naming
the distribution (name and version) and what it did; everything else keeps working.

Names: a class is looked up by its kind and its ``name``. When two distributions register the same
``(kind, name)``, the built-in one (distribution ``mechlens``), else the first registered, keeps the
plain name and the other is listed under a qualified name ``<distribution>:<name>``
(``labplug:osr``). Every class is also reachable as ``<entry point>:<name>`` and
``<distribution>:<name>`` (``stimuli:osr``, ``mechlens:osr``), so a name can always be made
unambiguous.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import warnings
from dataclasses import dataclass
from typing import Any, Literal, overload

import pluggy

import mechlens.hookspecs as _hookspecs
from mechlens.errors import PluginNotFoundError
from mechlens.interfaces import KINDS, Attributor, Command, Experiment, Model, Reducer, Stimulus
from mechlens.parameters import suggest

#: The distribution of the built-in plugins: its classes keep their plain names in a clash.
BUILTIN_DISTRIBUTION = "mechlens"

#: Separates the qualifier (distribution or entry-point name) from the plugin name.
QUALIFIER_SEPARATOR = ":"


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
        Registry name: the class's ``name``, or ``<distribution>:<name>`` when another distribution
        registered that name first (or is the built-in one).
    cls : type
        The plugin class.
    distribution : str
        Name of the distribution whose entry point registered it.
    version : str
        That distribution's version.
    source : str
        The entry point's name (for a plugin registered by hand, the name it was given), the other
        accepted qualifier of a qualified name.
    """

    kind: str
    name: str
    cls: type[Any]
    distribution: str
    version: str
    source: str = ""

    @property
    def qualified(self) -> bool:
        """Whether the plain name belongs to another plugin, so this one is listed qualified."""
        return QUALIFIER_SEPARATOR in self.name


def _normalise(dist: str) -> str:
    # PEP 503 normalisation, so "Mechlens" or "mechlens_x" compare as pip does
    return dist.lower().replace("_", "-").replace(".", "-")


def is_builtin(distribution: str) -> bool:
    """Whether ``distribution`` is the one shipping the built-in plugins (they win name clashes)."""
    return _normalise(distribution) == BUILTIN_DISTRIBUTION


def _who(dist: str, version: str) -> str:
    """``"distribution labplug 1.0"``: how warnings name a plugin's origin."""
    return f"distribution {dist} {version}".rstrip() if dist else "an unnamed distribution"


def _what_went_wrong(err: BaseException) -> str:
    """One line saying what a plugin did: ``called sys.exit(3)`` or ``raised ValueError: bad``."""
    if isinstance(err, SystemExit):
        return f"called sys.exit({err.code!r})"
    message = " ".join(str(err).split())  # warnings are one line; exception texts may span several
    return f"raised {type(err).__name__}" + (f": {message}" if message else "")


def _describe_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Registry:
    """The plugins of every kind, discovered from entry points (and any registered by hand).

    Parameters
    ----------
    group : str
        Entry-point group to scan.
    autoload : bool
        Whether to scan entry points on first use.
    """

    def __init__(self, group: str = _hookspecs.PROJECT, autoload: bool = True) -> None:
        self.group = group
        self._autoload = autoload
        self._loaded = False
        self.pm = pluggy.PluginManager(_hookspecs.PROJECT)
        self.pm.add_hookspecs(_hookspecs)
        # (kind, listed name) -> entry; the listed name is plain, or qualified after a clash
        self._entries: dict[tuple[str, str], Entry] = {}
        # (kind, "<qualifier>:<plain name>") -> entry, for every entry under both qualifiers
        self._aliases: dict[tuple[str, str], Entry] = {}
        self.errors: list[str] = []
        #: (kind or None for every kind, origin, what went wrong) of each plugin that did not load:
        #: a name that is not found may be one of theirs, and a lookup says so (:meth:`entry`)
        self.failures: list[tuple[str | None, str, str]] = []

    # -- loading ---------------------------------------------------------------------------
    def load(self) -> None:
        """Scan the entry points once (later calls do nothing).

        The built-in distribution is loaded first so that its classes keep their plain names
        whatever order the entry points are found in.
        """
        if self._loaded:
            return
        self._loaded = True
        if not self._autoload:
            return
        found = list(importlib.metadata.entry_points(group=self.group))
        # sorted() is stable: within built-ins and within third parties the discovery order stays
        found.sort(key=lambda ep: not is_builtin(ep.dist.name if ep.dist is not None else ""))
        for ep in found:
            dist = ep.dist.name if ep.dist is not None else ""
            version = ep.dist.version if ep.dist is not None else ""
            try:
                obj = ep.load()
            except (Exception, SystemExit) as err:  # noqa: BLE001 - a third party's import may do anything
                self._warn(
                    f"plugin {ep.name!r} of {_who(dist, version)} is skipped: importing {ep.value} "
                    f"{_what_went_wrong(err)}. The other plugins still work; fix or uninstall {dist or ep.name}."
                )
                self.failures.append((None, _who(dist, version), f"importing {ep.value} {_what_went_wrong(err)}"))
                continue
            self.register(obj, name=f"{dist}:{ep.name}", distribution=dist, version=version, source=ep.name)

    def register(
        self,
        plugin: Any,
        name: str | None = None,
        distribution: str = "",
        version: str = "",
        source: str | None = None,
    ) -> None:
        """Register a plugin module or object by hand (tests, notebooks) and collect its classes.

        A broken hook or class is skipped with a :class:`PluginWarning`; a name another
        distribution holds already is kept under ``<distribution>:<name>`` (see the module docstring).

        Parameters
        ----------
        plugin : module or object
            Implements some hooks of :mod:`mechlens.hookspecs`.
        name : str, optional
            pluggy's name for the plugin.
        distribution, version : str
            Provenance of its classes.
        source : str, optional
            Qualifier accepted in ``<source>:<name>`` lookups (the entry point's name); default
            ``name`` or the distribution.
        """
        self._loaded = True if not self._autoload else self._loaded
        if self.pm.is_registered(plugin):
            return
        dist = distribution or getattr(plugin, "__name__", "") or type(plugin).__name__
        who = _who(dist, version)
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except Exception as err:  # noqa: BLE001 - pluggy validation errors
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            self._warn(f"plugin {name or dist!r} of {who} is invalid and skipped: {' '.join(str(err).split())}")
            self.failures.append((None, who, f"its plugin is invalid: {' '.join(str(err).split())}"))
            return
        qualifier = source or (name.rpartition(QUALIFIER_SEPARATOR)[2] if name else "") or dist
        for hook_name, kind in _hookspecs.HOOK_KINDS.items():
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                for cls in self._call_hook(impl.function, hook_name, kind, who):
                    self._add(kind, cls, dist, version, qualifier)

    def _call_hook(self, function: Any, hook_name: str, kind: str, who: str) -> list[type]:
        """The valid classes a hook returns; everything wrong with it is one warning."""
        try:
            result = function()
        except (Exception, SystemExit) as err:  # noqa: BLE001 - a third party's hook may do anything
            self._warn(f"hook {hook_name} of {who} {_what_went_wrong(err)}; its {kind} plugins are skipped")
            self.failures.append((kind, who, f"hook {hook_name} {_what_went_wrong(err)}"))
            return []
        if not isinstance(result, (list, tuple)):
            self._warn(
                f"hook {hook_name} of {who} returned {_describe_value(result)} ({type(result).__name__}); "
                f"it must return a list of {KINDS[kind].__name__} subclasses, so its {kind} plugins are skipped"
            )
            self.failures.append((kind, who, f"hook {hook_name} returned a {type(result).__name__}, not a list"))
            return []
        base = KINDS[kind]
        good: list[type] = []
        bad: list[str] = []
        for cls in result:
            name = getattr(cls, "name", None)
            if not (isinstance(cls, type) and issubclass(cls, base)):
                bad.append(f"{_describe_value(cls)} (not a {base.__name__} subclass)")
            elif not isinstance(name, str) or not name:
                bad.append(f"{cls.__module__}.{cls.__qualname__} (no name: set the class attribute name)")
            else:
                good.append(cls)
        if bad:
            self._warn(f"hook {hook_name} of {who} returned items that are skipped: {'; '.join(bad)}")
        return good

    def _add(self, kind: str, cls: type, dist: str, version: str, source: str) -> None:
        plain: str = cls.name  # type: ignore[attr-defined]  # _call_hook checked it is a non-empty str
        new = Entry(kind, plain, cls, dist, version, source)
        held = self._entries.get((kind, plain))
        if held is None:
            self._entries[(kind, plain)] = new
            self._alias(new)
            return
        if held.cls is cls:
            return  # the same class returned twice (two hooks, or listed twice): nothing to do
        # a clash must not stop anything: one keeps the plain name, the other gets a qualified one
        if is_builtin(dist) and not is_builtin(held.distribution):
            # built-ins win even when a third party was registered first (by hand, before load())
            winner, loser = new, held
            self._entries[(kind, plain)] = new
            self._alias(new)
        else:
            winner, loser = held, new
        where = f"{_who(winner.distribution, winner.version)} ({winner.cls.__module__}.{winner.cls.__qualname__})"
        other = f"{_who(loser.distribution, loser.version)} ({loser.cls.__module__}.{loser.cls.__qualname__})"
        why = "the built-in" if is_builtin(winner.distribution) else "registered first"
        moved = self._qualify(loser)
        if moved is None:
            self._warn(
                f"{kind} name {plain!r} is registered by {where} and by {other}; {plain!r} stays with "
                f"{winner.distribution} ({why}) and no qualified name is free for the other, so it is skipped. "
                "Rename one of them."
            )
            return
        self._warn(
            f"{kind} name {plain!r} is registered by {where} and by {other}; {plain!r} stays with "
            f"{winner.distribution} ({why}), the other is {moved.name!r}. Rename one of them to give each a plain name."
        )

    def _qualify(self, entry: Entry) -> Entry | None:
        """List a clash loser under its first free qualified name (distribution, then entry point)."""
        plain = entry.cls.name
        for qualifier in dict.fromkeys(q for q in (entry.distribution, entry.source) if q):
            listed = f"{qualifier}{QUALIFIER_SEPARATOR}{plain}"
            taken = self._entries.get((entry.kind, listed)) or self._aliases.get((entry.kind, listed))
            if taken is not None and taken.cls is not entry.cls:
                continue
            moved = dataclasses.replace(entry, name=listed)
            self._entries[(entry.kind, listed)] = moved
            self._repoint(entry, moved)
            self._alias(moved)
            return moved
        self._repoint(entry, None)
        return None

    def _repoint(self, old: Entry, new: Entry | None) -> None:
        """Aliases of ``old`` now lead to ``new`` (or nowhere)."""
        for key, value in list(self._aliases.items()):
            if value is old:
                if new is None:
                    del self._aliases[key]
                else:
                    self._aliases[key] = new

    def _alias(self, entry: Entry) -> None:
        """Make ``entry`` reachable as ``<distribution>:<name>`` and ``<entry point>:<name>``."""
        plain = entry.cls.name
        for qualifier in (entry.source, entry.distribution):
            if qualifier:
                # first come keeps an alias: a later plugin cannot redirect a qualified name in use
                self._aliases.setdefault((entry.kind, f"{qualifier}{QUALIFIER_SEPARATOR}{plain}"), entry)

    def _warn(self, message: str) -> None:
        self.errors.append(message)
        warnings.warn(message, PluginWarning, stacklevel=3)

    # -- lookup ----------------------------------------------------------------------------
    def entries(self, kind: str | None = None) -> list[Entry]:
        """Registered plugins, sorted by kind and name (of one kind if given); clash losers qualified."""
        self.load()
        out = [e for (k, _), e in self._entries.items() if kind is None or k == kind]
        return sorted(out, key=lambda e: (e.kind, e.name))

    def names(self, kind: str) -> list[str]:
        """Registered names of one kind (as listed: plain, or qualified after a clash)."""
        return [e.name for e in self.entries(kind)]

    def entry(self, kind: str, name: str) -> Entry:
        """The entry of ``kind`` named ``name``: a listed name, or ``<distribution-or-entry-point>:<name>``.

        Raises
        ------
        PluginNotFoundError
            Listing the known names and the closest match.
        """
        if kind not in _hookspecs.HOOK_KINDS.values():
            raise PluginNotFoundError(
                f"unknown plugin kind {kind!r}; kinds are {', '.join(_hookspecs.HOOK_KINDS.values())}"
            )
        self.load()
        found = self._entries.get((kind, name)) or self._aliases.get((kind, name))
        if found is not None:
            return found
        known = self.names(kind)
        listing = ", ".join(known) if known else "none installed"
        failed = [(who, what) for k, who, what in self.failures if k in (None, kind)]
        if failed:
            # a name that is not found may belong to a package that failed to load: say so rather than
            # suggest a different plugin that happens to be spelled alike
            why = "; ".join(f"{who} ({what})" for who, what in failed)
            raise PluginNotFoundError(
                f"no {kind} named {name!r} is registered, and {len(failed)} plugin package(s) failed to load, so it "
                f"may be theirs: {why}. Fix or uninstall that package (its warning above says how). Known {kind} "
                f"plugins: {listing}."
            )
        raise PluginNotFoundError(
            f"no {kind} named {name!r}{suggest(name, known) or '.'} Known {kind} plugins: {listing}."
        )

    @overload
    def get(self, kind: Literal["model"], name: str) -> type[Model]: ...
    @overload
    def get(self, kind: Literal["stimulus"], name: str) -> type[Stimulus]: ...
    @overload
    def get(self, kind: Literal["attributor"], name: str) -> type[Attributor]: ...
    @overload
    def get(self, kind: Literal["reducer"], name: str) -> type[Reducer]: ...
    @overload
    def get(self, kind: Literal["experiment"], name: str) -> type[Experiment]: ...
    @overload
    def get(self, kind: Literal["command"], name: str) -> type[Command]: ...
    @overload
    def get(self, kind: str, name: str) -> type[Any]: ...
    def get(self, kind: str, name: str) -> type[Any]:
        """The plugin class of ``kind`` named ``name`` (see :meth:`entry`)."""
        return self.entry(kind, name).cls

    def provenance(self, cls: type) -> tuple[str, str]:
        """(distribution, version) of a registered class, or ("", "") if not registered."""
        found = self.find(cls)
        return (found.distribution, found.version) if found is not None else ("", "")

    def find(self, cls: type) -> Entry | None:
        """The entry of a registered class (its listed name says how to look it up again), or None."""
        for e in self.entries():
            if e.cls is cls:
                return e
        return None


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


@overload
def get(kind: Literal["model"], name: str) -> type[Model]: ...
@overload
def get(kind: Literal["stimulus"], name: str) -> type[Stimulus]: ...
@overload
def get(kind: Literal["attributor"], name: str) -> type[Attributor]: ...
@overload
def get(kind: Literal["reducer"], name: str) -> type[Reducer]: ...
@overload
def get(kind: Literal["experiment"], name: str) -> type[Experiment]: ...
@overload
def get(kind: Literal["command"], name: str) -> type[Command]: ...
@overload
def get(kind: str, name: str) -> type[Any]: ...
def get(kind: str, name: str) -> type[Any]:
    """Shorthand for ``default().get(kind, name)``: ``registry.get("model", "my-cnn")``."""
    return default().get(kind, name)


def entries(kind: str | None = None) -> list[Entry]:
    """Shorthand for ``default().entries(kind)``."""
    return default().entries(kind)
