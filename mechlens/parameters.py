"""Declared plugin parameters: dataclasses with defaults, types, units and documented ranges.

A plugin class sets ``Parameters`` to a dataclass whose fields are made with :func:`param`. The
CLI, config files and ``mechlens list --verbose`` read these declarations, so no plugin-specific
code is needed anywhere else to set, check or show a parameter.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import operator
import reprlib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mechlens.errors import ParameterError

_META = "mechlens"

#: how a user's value is shown in a message: short, one line, whatever its size or nesting
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlong = 24
_REPR.maxlevel = 3

#: the largest seed: seeds are stored as 64-bit integers (netCDF attrs, numpy generators)
MAX_SEED = 2**63 - 1


def show(value: Any) -> str:
    """A user's value for a message: its repr, shortened (long strings and lists, deep nesting, huge ints)."""
    return _REPR.repr(value)


def plain(value: Any) -> Any:
    """A numpy scalar or array as the Python value it holds (``np.float64(0.1)`` -> ``0.1``); others unchanged."""
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist()
    return value


def check_seed(seed: Any, where: str = "seed") -> int:
    """A seed as an int in ``0 .. 2**63 - 1`` (a numpy integer or a whole float is accepted).

    Raises
    ------
    ParameterError
        Not a whole number, negative, or too large to be stored.
    """
    value = plain(seed)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ParameterError(where, f"expected an integer, got {show(value)}")
    if not 0 <= value <= MAX_SEED:
        raise ParameterError(where, f"got {show(value)}; allowed range in [0, 2**63 - 1]")
    return value


@dataclass(frozen=True)
class ParamSpec:
    """What a parameter is, as declared by its plugin.

    Attributes
    ----------
    name : str
        Field name.
    type : Any
        The annotated type (e.g. ``float``, ``float | list[float]``).
    default : Any
        Default value (``dataclasses.MISSING`` when required).
    doc : str
        One-line description.
    units : str or None
        Physical units (``"s"``, ``"um"``, ``"px/frame"``), or None for dimensionless.
    min, max : float or None
        Inclusive bounds, checked for every number (each element of a list).
    choices : tuple or None
        Allowed values.
    sweepable : bool
        A list value sweeps the parameter (one ``condition`` per value).
    """

    name: str
    type: Any
    default: Any
    doc: str
    units: str | None = None
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    sweepable: bool = False
    exclusive_min: bool = False

    def range_text(self) -> str:
        """Human-readable allowed range, e.g. ``"> 0"`` or ``"in [0, 1]"``."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        lo = self.min
        hi = self.max
        if lo is not None and hi is not None:
            return f"in {'(' if self.exclusive_min else '['}{lo:g}, {hi:g}]"
        if lo is not None:
            return f"{'>' if self.exclusive_min else '>='} {lo:g}"
        if hi is not None:
            return f"<= {hi:g}"
        return ""


def param(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    units: str | None = None,
    min: float | None = None,
    max: float | None = None,
    gt: float | None = None,
    choices: Sequence[Any] | None = None,
    sweepable: bool = False,
) -> Any:
    """Declare a parameter field.

    Parameters
    ----------
    default
        Default value. Lists are copied per instance.
    doc : str
        One-line description shown by ``mechlens list --verbose``.
    units : str, optional
        Units of the value.
    min, max : float, optional
        Inclusive bounds.
    gt : float, optional
        Exclusive lower bound (use instead of ``min`` for "strictly positive").
    choices : sequence, optional
        The allowed values.
    sweepable : bool
        Whether a list value sweeps the parameter over conditions.

    Returns
    -------
    dataclasses.Field
    """
    meta = {
        _META: {
            "doc": doc,
            "units": units,
            "min": gt if gt is not None else min,
            "max": max,
            "exclusive_min": gt is not None,
            "choices": tuple(choices) if choices is not None else None,
            "sweepable": sweepable,
        }
    }
    if isinstance(default, list):
        items: list[Any] = default
        return field(default_factory=lambda: list(items), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class NoParameters:
    """A plugin without parameters."""


def specs(params_cls: type) -> list[ParamSpec]:
    """The declared parameters of a Parameters dataclass, in declaration order."""
    hints = typing.get_type_hints(params_cls)
    out = []
    for f in dataclasses.fields(params_cls):
        meta = dict(f.metadata.get(_META, {}))
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        out.append(
            ParamSpec(
                name=f.name,
                type=hints.get(f.name, Any),
                default=default,
                doc=meta.get("doc", ""),
                units=meta.get("units"),
                min=meta.get("min"),
                max=meta.get("max"),
                choices=meta.get("choices"),
                sweepable=meta.get("sweepable", False),
                exclusive_min=meta.get("exclusive_min", False),
            )
        )
    return out


def type_name(tp: Any) -> str:
    """A short readable name for a type hint (``float | list[float]``)."""
    if tp is type(None):
        return "None"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple, Sequence):
        args = typing.get_args(tp)
        inner = type_name(args[0]) if args else "Any"
        return f"list[{inner}]"
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the type hint ``tp``, converting where it is lossless.

    ints become floats where a float is expected, strings become paths, tuples become lists.

    Raises
    ------
    ParameterError
        When the value does not fit the type.
    """
    value = plain(value)
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for alt in typing.get_args(tp):
            try:
                return coerce(value, alt, where)
            except ParameterError as err:
                errors.append(err)
        raise ParameterError(where, f"expected {type_name(tp)}, got {show(value)}")
    if tp is type(None):
        if value is None:
            return None
        raise ParameterError(where, f"expected None, got {show(value)}")
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise ParameterError(where, f"expected one of {typing.get_args(tp)}, got {show(value)}")
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if isinstance(value, (list, tuple)):
            args = typing.get_args(tp)
            inner = args[0] if args else Any
            return [coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        raise ParameterError(where, f"expected {type_name(tp)}, got {show(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ParameterError(where, f"expected true or false, got {show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ParameterError(where, f"expected an integer, got {show(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ParameterError(where, f"expected a number, got {show(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ParameterError(where, f"expected a string, got {show(value)}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ParameterError(where, f"expected a path, got {show(value)}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ParameterError(where, f"expected {type_name(tp)}, got {show(value)}")


def _scalar_type(tp: Any) -> Any:
    """``float | list[float]`` -> ``float``: the type one value of a sweep must have."""
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return tp
    alts = [
        a for a in typing.get_args(tp) if typing.get_origin(a) not in (list, tuple, Sequence) and a not in (list, tuple)
    ]
    if not alts:
        return tp
    return functools.reduce(operator.or_, alts)


def _check_bounds(spec: ParamSpec, value: Any, where: str) -> None:
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_bounds(spec, v, f"{where}[{i}]")
        return
    if spec.choices is not None and value not in spec.choices:
        raise ParameterError(where, f"got {show(value)}; allowed: {spec.range_text()}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and math.isnan(value):
            raise ParameterError(where, "got NaN; give a number")
        if isinstance(value, float) and math.isinf(value):
            # no parameter means "unbounded" by inf: an infinite size or duration only fails later,
            # deep inside a stage (infinite coordinates, an overflow), with a worse message
            raise ParameterError(where, f"got {value}; give a finite number (allowed range {spec.range_text()})")
        lo, hi = spec.min, spec.max
        bad = (lo is not None and (value <= lo if spec.exclusive_min else value < lo)) or (
            hi is not None and value > hi
        )
        if bad:
            unit = f" {spec.units}" if spec.units else ""
            raise ParameterError(where, f"got {show(value)}{unit}; allowed range {spec.range_text()}{unit}")


def suggest(name: str, known: Sequence[str]) -> str:
    """``"; did you mean X?"`` for the closest known name, or ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


#: a Parameters dataclass
_P = TypeVar("_P")


def build(params_cls: type[_P], values: Mapping[str, Any], where: str = "") -> _P:
    """Make a Parameters instance from user values, checking names, types and ranges.

    Parameters
    ----------
    params_cls : type
        The plugin's Parameters dataclass.
    values : mapping
        User-supplied values; missing ones take their defaults.
    where : str
        Prefix for error messages, e.g. ``"stimulus"`` gives ``"stimulus.period: ..."``.

    Raises
    ------
    ParameterError
        Unknown name (with the closest match), wrong type, or out of range.
    """
    declared = {s.name: s for s in specs(params_cls)}
    prefix = f"{where}." if where else ""
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in declared:
            shown = key if isinstance(key, str) and key.isprintable() else show(key)
            raise ParameterError(f"{prefix}{shown}", "unknown parameter" + suggest(str(key), list(declared)))
        spec = declared[key]
        tp = spec.type
        value = plain(value)
        if spec.sweepable and isinstance(value, (list, tuple)) and typing.get_origin(tp) not in (list,):
            # a sweep: each element must fit the scalar type (a list inside a sweep is no value)
            scalar = _scalar_type(tp)
            value = [coerce(v, scalar, f"{prefix}{key}[{i}]") for i, v in enumerate(value)]
            if not value:
                raise ParameterError(f"{prefix}{key}", "an empty sweep; give at least one value")
        else:
            value = coerce(value, tp, f"{prefix}{key}")
        _check_bounds(spec, value, f"{prefix}{key}")
        kwargs[key] = value
    for name, spec in declared.items():
        if name not in kwargs:
            if spec.default is dataclasses.MISSING:
                raise ParameterError(f"{prefix}{name}", "required parameter is missing")
            _check_bounds(spec, spec.default, f"{prefix}{name}")
    try:
        return params_cls(**kwargs)
    except ParameterError as err:
        if prefix and not err.name.startswith(prefix):
            raise ParameterError(f"{prefix}{err.name}", err.message) from None
        raise
    except (ArithmeticError, ValueError, TypeError) as err:
        # a plugin's cross-parameter check failed on extreme values (an overflow, a division by a
        # vanishing number): still the user's values, so a usage error naming them
        given = ", ".join(f"{k}={show(v)}" for k, v in values.items()) or "the defaults"
        raise ParameterError(
            where or params_cls.__name__,
            f"these values cannot be used together ({given}): {type(err).__name__}: {' '.join(str(err).split())}; "
            "use less extreme values",
        ) from None


def to_json(params: Any) -> str:
    """Serialise a Parameters instance to a JSON string (netCDF-safe attr)."""

    def default(o: Any) -> Any:
        if isinstance(o, Path):
            return str(o)
        if dataclasses.is_dataclass(o):
            return dataclasses.asdict(o)  # type: ignore[arg-type]
        if hasattr(o, "tolist"):
            return o.tolist()
        return str(o)

    # is_dataclass() is also true of a dataclass *type*, which asdict() rejects (as dict() does)
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        data = dataclasses.asdict(params)
    else:
        data = dict(params)
    return json.dumps(data, default=default, sort_keys=True)


def swept(params: Any) -> tuple[str, list[Any]] | None:
    """The swept parameter of a Parameters instance, as ``(name, values)``, or None.

    Raises
    ------
    ParameterError
        If more than one parameter is swept.
    """
    found = [
        (s.name, getattr(params, s.name))
        for s in specs(type(params))
        if s.sweepable and isinstance(getattr(params, s.name), list)
    ]
    if len(found) > 1:
        names = ", ".join(n for n, _ in found)
        raise ParameterError(found[1][0], f"only one parameter can be swept at a time (got lists for {names})")
    return found[0] if found else None
