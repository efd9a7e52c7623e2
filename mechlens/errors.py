"""Exceptions raised by mechlens.

Every error a user can cause is a :class:`MechlensError`; the CLI prints its message (no traceback)
and exits with :attr:`MechlensError.exit_code`.
"""

from __future__ import annotations


class MechlensError(Exception):
    """Base class of every error mechlens raises on purpose."""

    exit_code = 1


class UsageError(MechlensError):
    """The user asked for something malformed (bad flag, bad config, unknown plugin)."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration file or ``--set`` override is invalid."""


class ParameterError(UsageError):
    """A plugin parameter has the wrong type or lies outside its allowed range.

    Parameters
    ----------
    name : str
        The parameter's name (``"period"``), or a dotted path (``"stimulus.period"``).
    message : str
        What is wrong and what is allowed.
    """

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        self.message = message
        super().__init__(f"{name}: {message}")


class PluginNotFoundError(UsageError):
    """No plugin of the requested kind has the requested name."""


class PluginError(MechlensError):
    """A plugin failed to load, clashed with another, or misbehaved while running."""


class SchemaError(MechlensError):
    """A Dataset does not follow the names and dims of docs/contract.md, 'Datasets'."""


class FileFormatError(MechlensError):
    """A file is missing, unreadable, corrupt, or was not written by mechlens."""
