"""Memory estimates before allocating: refuse a run that cannot fit, with the figure and what to change.

mechlens allocates its big arrays (a stimulus sweep, a model's weights, a recording's responses)
in one piece. Each caller estimates the bytes from sizes it knows before allocating (the sweep's
frames, the model's architecture, the recording's shape) and calls :func:`check`, which raises
:class:`MemoryBudgetError` (exit status 2, one line) when the estimate exceeds the budget.

The budget (:func:`budget`) is 1 GiB, or half the memory this process can still get (its cgroup's
limit, else the machine's available memory) when that is less. The environment variable
``MECHLENS_MEMORY_BUDGET`` overrides it: a size (``4GiB``, ``512M``, ``2e9``; units K, M, G, T with
or without ``i``/``B``, all powers of 1024) or ``none`` / ``off`` / ``unlimited`` for no check.

A stimulus plugin takes part by defining ``memory_estimate(params) -> Estimate | None`` for one
set of scalar parameters; :func:`check_stimulus` (called by ``Stimulus.generate``) adds up a
sweep's conditions. The core knows nothing of any plugin's data. A streamed run
(:mod:`mechlens.streaming`) holds one chunk of the movie at a time and checks only that
(:func:`check_chunk`), so a long movie is not refused when one chunk fits.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

from mechlens.errors import ParameterError, UsageError

#: the environment variable that overrides :func:`budget`
ENV = "MECHLENS_MEMORY_BUDGET"
#: the default budget, bytes
DEFAULT = 1 << 30
#: the fraction of the available memory the default budget may take at most
FRACTION = 0.5

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_OFF = ("none", "off", "unlimited", "inf")


class MemoryBudgetError(ParameterError):
    """A run would need more memory than the budget: refused before allocating (exit status 2).

    ``name`` is the parameter to change (``stimulus.post_s``, ``--minutes``).
    """


class Estimate(NamedTuple):
    """What one allocation would take, from a plugin.

    Attributes
    ----------
    nbytes : float
        Bytes at the peak (a float: from absurd parameters it can exceed any int64).
    parameter : str
        The parameter that sets the size (the one to change), e.g. ``"post_s"``.
    what : str
        The thing allocated, for the message (``"300080 frames of 50x50 px"``).
    hint : str
        Another way out, appended to the message (``"or stream it with iter_chunks()"``).
    """

    nbytes: float
    parameter: str
    what: str = ""
    hint: str = ""


def parse_size(text: str) -> int | None:
    """Bytes in a size such as ``4GiB``, ``512M``, ``2e9``; None for ``none``/``off``/``unlimited``.

    Raises
    ------
    UsageError
        The text is not a size.
    """
    if text.strip().lower() in _OFF:
        return None
    m = _SIZE.match(text)
    if not m:
        raise UsageError(
            f"{ENV}={text!r} is not a size; give bytes with an optional unit (4GiB, 512M, 2e9) or 'none' for no limit"
        )
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def available() -> int | None:
    """Bytes this process can still allocate: the cgroup's limit less its use, or MemAvailable; None if unknown."""
    found: list[int] = []
    for limit_file, used_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # v1
    ):
        limit = _read_int(limit_file)
        if limit is not None and limit < 1 << 60:  # v1 says "no limit" with a huge number
            found.append(max(0, limit - (_read_int(used_file) or 0)))
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    return min(found) if found else None


def budget() -> int | None:
    """Bytes one allocation may take (None: no limit); see the module doc for the default and the override."""
    env = os.environ.get(ENV)
    if env is not None and env.strip():
        return parse_size(env)
    free = available()
    return DEFAULT if free is None else max(1 << 20, min(DEFAULT, int(free * FRACTION)))


def size_text(nbytes: float) -> str:
    """``"2.8 GiB"``, ``"512.0 MiB"``: a size for messages."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{int(nbytes)} B"


def check(nbytes: float, parameter: str, what: str, fix: str, hint: str = "") -> None:
    """Refuse an allocation of ``nbytes`` over :func:`budget`, before making it.

    Parameters
    ----------
    nbytes : float
        The estimate, bytes (may be a float: a length from user input can be astronomical).
    parameter : str
        The parameter to change, as the user gives it (``stimulus.post_s``, ``--minutes``).
    what : str
        What would be allocated (``"the stimulus (300080 frames of 50x50 px)"``).
    fix : str
        How to make it smaller (``"shorten post_s"``).
    hint : str
        Another way out (``"or stream it in chunks with iter_chunks()"``).

    Raises
    ------
    MemoryBudgetError
        ``<parameter>: <what> would take 2.8 GiB in memory, over the budget of 1.0 GiB; <fix>
        <hint>, or raise the budget with MECHLENS_MEMORY_BUDGET=4GiB``.
    """
    limit = budget()
    if limit is None or not nbytes > limit:
        return
    more = max(limit * 2, math.ceil(nbytes * 1.1 / (1 << 30)) << 30) if math.isfinite(nbytes) else None
    raise_to = f", or raise the budget with {ENV}={size_text(more).replace(' ', '').replace('.0', '')}" if more else ""
    size = size_text(nbytes) if math.isfinite(nbytes) and nbytes < 1 << 60 else "more than any machine has"
    raise MemoryBudgetError(
        parameter,
        f"{what} would take {size} in memory, over the budget of {size_text(limit)}; {fix}"
        + (f" {hint}" if hint else "")
        + raise_to,
    )


def check_stimulus(stimulus: Any, params: Any) -> None:
    """Refuse a stimulus (a whole sweep) whose movie would not fit, before rendering any condition.

    Calls ``stimulus.memory_estimate(p)`` (when the plugin defines it) for each condition ``p``;
    a sweep holds every condition once rendered and once stacked, each padded to the longest.
    """
    import mechlens.parameters as _params

    estimate = getattr(stimulus, "memory_estimate", None)
    if estimate is None:
        return
    sweep = _params.swept(params)
    if sweep is None:
        one = estimate(params)
        if one is not None:
            check(
                one.nbytes,
                f"stimulus.{one.parameter}",
                f"the {stimulus.name} movie ({one.what})" if one.what else f"the {stimulus.name} movie",
                f"make it shorter (change {one.parameter})",
                one.hint,
            )
        return
    name, values = sweep
    found = [estimate(dataclasses.replace(params, **{name: v})) for v in values]
    parts = [e for e in found if e is not None]
    if not parts:
        return
    biggest = max(parts, key=lambda e: e.nbytes)
    total = sum(e.nbytes for e in parts) + len(values) * biggest.nbytes
    longest = f", the longest {biggest.what}" if biggest.what else ""
    fix = f"sweep fewer values of {name}" + (
        f" or make the movies shorter (change {biggest.parameter})" if biggest.parameter != name else ""
    )
    check(
        total,
        f"stimulus.{biggest.parameter}",
        f"the {stimulus.name} sweep over {name} ({len(values)} conditions{longest}, rendered and stacked)",
        fix,
    )


def check_chunk(stimulus_name: str, frames: int, shape: tuple[int, int], history: int, parameter: str) -> float:
    """Refuse a streamed run whose one chunk would not fit, before rendering any of it; the bytes per chunk.

    A streamed run (:mod:`mechlens.streaming`) holds one chunk at a time, so its memory does not
    depend on the movie's length and the whole movie is never checked against the budget: only one
    chunk's frames (with the ``history - 1`` frames it shares with the previous one) are, counted
    :data:`CHUNK_COPIES` times (the rendered frames, their float32 copy for the model's windows and
    the merged piece that is written).

    Parameters
    ----------
    stimulus_name : str
        For the message.
    frames : int
        Time points per chunk.
    shape : (int, int)
        Pixels (y, x).
    history : int
        The model's frames per window.
    parameter : str
        The option that sets the chunk (``--chunk-time``), named in the message.

    Raises
    ------
    MemoryBudgetError
        One chunk does not fit the budget.
    """
    ny, nx = shape
    n = float(frames) + max(0, int(history) - 1)
    nbytes = CHUNK_COPIES * n * ny * nx * 4
    check(
        nbytes,
        parameter,
        f"one chunk of the streamed {stimulus_name} movie ({n:.0f} frames of {ny}x{nx} px)",
        f"give a smaller {parameter}",
    )
    return nbytes


#: movies of one chunk alive at once in a streamed run (see :func:`check_chunk`)
CHUNK_COPIES = 3.0
