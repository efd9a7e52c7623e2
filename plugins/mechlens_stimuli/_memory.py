"""How much memory a stimulus of the library takes, from its parameters alone (nothing is rendered).

:meth:`mechlens_stimuli._render.LibraryStimulus.memory_estimate` answers with :func:`estimate`;
:func:`mechlens.memory.check_stimulus` adds a sweep's conditions and refuses a movie over the budget
before anything is rendered. Each stimulus's frame count is the one its ``render`` makes (tested
against it in tests/plugins/mechlens_stimuli/test_stimuli_memory.py); the arithmetic is in floats,
so an absurd parameter (a speed of 1e-300 um/s) gives an absurd estimate rather than an overflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from mechlens.memory import Estimate

#: full movies alive at once while a stimulus renders (its own intermediates), beyond the result
_COPIES = {"object-motion": 4.0, "flashed-bar": 2.0}


def _n(seconds: float, dt: float) -> float:
    """Frames in ``seconds`` (as ``n_frames``, but a float for any size)."""
    x = seconds / dt
    return float(round(x)) if math.isfinite(x) and abs(x) < 1e15 else x


def _moving(distance_um: float, speed: float, dt: float) -> float:
    x = distance_um / speed / dt
    return float(math.floor(x + 1e-9) + 1) if math.isfinite(x) and abs(x) < 1e15 else x


def _flash(p: Any, dt: float) -> dict[str, float]:
    return {"duration": _n(p.duration, dt), "post_s": _n(p.post_s, dt)}


def _osr(p: Any, dt: float) -> dict[str, float]:
    return {"n_flashes": p.n_flashes * _n(p.period, dt), "post_s": max(_n(p.post_s, dt), 1.0)}


def _paired(p: Any, dt: float) -> dict[str, float]:
    return {"duration": 2 * _n(p.duration, dt), "interval": _n(p.interval, dt), "post_s": _n(p.post_s, dt)}


def _moving_bar(p: Any, dt: float) -> dict[str, float]:
    return {"speed": _moving(p.stop_um - p.start_um, p.speed, dt), "post_s": _n(p.post_s, dt)}


def _reversal(p: Any, dt: float) -> dict[str, float]:
    return {"speed": _moving(2 * (p.reversal_um - p.start_um), p.speed, dt)}


def _duration(p: Any, dt: float) -> dict[str, float]:
    return {"duration": _n(p.duration, dt)}


#: stimulus name -> frames from time 0 on, by the parameter that sets them
FRAMES: dict[str, Callable[[Any, float], dict[str, float]]] = {
    "flash": _flash,
    "osr": _osr,
    "paired-flash": _paired,
    "moving-bar": _moving_bar,
    "flashed-bar": _flash,
    "motion-reversal": _reversal,
    "reversing-grating": _duration,
    "object-motion": _duration,
}


def frames(stimulus: Any, params: Any) -> dict[str, float]:
    """The movie's frames by the parameter that sets them (``pre_s`` for the history); {} if unknown."""
    dt = params.frame_period_s
    span = getattr(stimulus, "span", None)
    if span is not None:  # a ChunkedStimulus knows its own
        n_pre, n_after = span(params)
        return {"pre_s": float(n_pre), str(stimulus.length_parameter): float(n_after)}
    after = FRAMES.get(stimulus.name)
    if after is None:
        return {}
    return {"pre_s": _n(params.pre_s, dt), **after(params, dt)}


def estimate(stimulus: Any, params: Any, shape: tuple[int, int]) -> Estimate | None:
    """The bytes of ``render(params)`` on a ``shape`` (y, x) grid at its peak, and the parameter that sets them.

    None when unknown (a stimulus not in :data:`FRAMES`, or parameters not yet fitted to a grid).
    """
    if params.frame_period_s is None:  # not fitted to a grid yet
        return None
    parts = frames(stimulus, params)
    if not parts:
        return None
    total = sum(parts.values())
    ny, nx = shape
    nbytes = total * ny * nx * 4 * (1.0 + _COPIES.get(stimulus.name, 0.0))
    parameter = max(parts, key=lambda k: parts[k])
    shown = f"{total:.0f}" if total < 1e15 else f"{total:.3g}"
    hint = ""
    if getattr(stimulus, "span", None) is not None:
        hint = f"or stream it with {type(stimulus).__name__}(...).iter_chunks(seed, chunk_frames)"
    return Estimate(nbytes, parameter, f"{shown} frames of {ny}x{nx} px", hint)
