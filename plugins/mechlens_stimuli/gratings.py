"""Gratings: a square-wave grating that reverses polarity, and a grating disk moving against its background.

Gratings are vertical square waves (bars of ``bar_um``, contrast +-``contrast``), rendered
area-weighted (:func:`mechlens_stimuli._render.square_wave`), so any bar width and any sub-pixel
displacement is drawn faithfully.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from mechlens.errors import ParameterError
from mechlens.parameters import param
from mechlens_stimuli._render import (
    LibraryStimulus,
    assemble,
    check_width,
    chunk_rng,
    disk_coverage,
    event,
    from_profile,
    grid_shape,
    known_screen,
    n_frames,
    pixel_centres,
    square_wave,
    stimulus_parameters,
)

#: random stream of the object-motion jitter
_STREAM = 3


class ReversingGrating(LibraryStimulus):
    """Square-wave grating whose polarity reverses periodically (frequency doubling, polarity reversal)."""

    name = "reversing-grating"

    @stimulus_parameters
    class Parameters:
        bar_um: float = param(275.0, "width of one bar (half the spatial period; 5 px)", units="um", gt=0)
        half_period: float = param(0.5, "time between reversals", units="s", gt=0)
        duration: float = param(3.0, "movie length after time 0", units="s", gt=0)
        contrast: float = param(1.0, "bar contrast (+-contrast)", min=0, max=10)
        phase_um: float | list[float] = param(
            0.0, "grating offset: a bright bar starts at x = phase_um", units="um", sweepable=True
        )

        def __post_init__(self) -> None:
            check_width("bar_um", self.bar_um, self)

    def render(self, params: Any, seed: int) -> xr.Dataset:
        dt = params.frame_period_s
        n_pre, n_half, n_after = (n_frames(s, dt) for s in (params.pre_s, params.half_period, params.duration))
        i = np.arange(-n_pre, n_after)
        # the grating's own background in the history; the first reversal is at time 0
        polarity = np.where((np.clip(i, -1, None) // n_half) % 2 == 0, -1.0, 1.0)
        profile = square_wave(pixel_centres(params), params.pixel_um, params.bar_um, np.array([params.phase_um]))
        movie = from_profile(params.contrast * polarity[:, None] * profile, grid_shape(params))
        reversals = np.arange(0, n_after, n_half) * dt
        return assemble(
            params,
            movie,
            n_pre,
            events={
                "polarity": (("time",), polarity.astype(np.int8), {"long_name": "grating polarity (+-1)"}),
                "reversal_time": event(reversals, "s", "polarity reversals", dims=("reversal",)),
            },
            coords={"reversal": ("reversal", np.arange(len(reversals)), {"long_name": "reversal index"})},
            description=(
                f"square-wave grating of {params.bar_um:g} um bars, contrast {params.contrast:g}, reversing "
                f"every {params.half_period:g} s"
            ),
            reference="Hochstein & Shapley 1976, J. Physiol. 262:265; torchdeepretina reversing_grating",
            bar_um=float(params.bar_um),
            contrast=float(params.contrast),
        )


class ObjectMotion(LibraryStimulus):
    """A grating disk (the object) moving differentially from, or globally with, a grating background."""

    name = "object-motion"

    @stimulus_parameters
    class Parameters:
        mode: str | list[str] = param(
            "differential",
            "'differential': background moves at other times (periodic) or on its own path (jitter); "
            "'global': background moves with the object",
            choices=("differential", "global"),
            sweepable=True,
        )
        motion: str = param(
            "periodic", "'periodic': shift and return (authors' oms); 'jitter': Gaussian random walk",
            choices=("periodic", "jitter"),
        )  # fmt: skip
        bar_um: float = param(165.0, "grating bar width (3 px)", units="um", gt=0)
        object_radius_um: float = param(275.0, "object disk radius (5 px)", units="um", gt=0)
        magnitude_um: float = param(275.0, "periodic: size of each shift (5 px)", units="um", min=0)
        transition_s: float = param(0.07, "periodic: duration of each shift", units="s", gt=0)
        rest_s: float = param(0.93, "periodic: rest between shifts", units="s", gt=0)
        jitter_um: float = param(10.0, "jitter: std of the random-walk step per frame", units="um", min=0)
        duration: float = param(4.0, "movie length after time 0", units="s", gt=0)
        contrast: float = param(1.0, "grating contrast (+-contrast)", min=0, max=10)

        if TYPE_CHECKING:  # appended by @stimulus_parameters (declaring it here would reorder the fields)
            pixel_um: float | None

        def __post_init__(self) -> None:
            check_width("bar_um", self.bar_um, self)
            shape = known_screen(self)
            if shape is None or self.pixel_um is None:
                return
            half = min(shape) * self.pixel_um / 2  # the shorter side's half
            if self.object_radius_um > half:
                raise ParameterError(
                    "object_radius_um",
                    f"got {self.object_radius_um:g} um: the object would cover the whole grid ({shape[0]}x"
                    f"{shape[1]} px of {self.pixel_um:g} um) and hide the background; allowed range (0, {half:g}] um",
                )

    def paths(self, params: Any, seed: int, n_pre: int, n_after: int) -> tuple[np.ndarray, np.ndarray]:
        """Object and background grating displacement per frame, um (still during the history)."""
        dt = params.frame_period_s
        t_idx = np.arange(-n_pre, n_after)
        if params.motion == "periodic":
            n_tr, n_rest = n_frames(params.transition_s, dt), n_frames(params.rest_s, dt)
            # rest, shift out over n_tr frames, rest, shift back: the authors' oms() position sequence
            ramp = np.arange(1, n_tr + 1) / n_tr
            cycle = params.magnitude_um * np.concatenate([np.zeros(n_rest), ramp, np.ones(n_rest), 1 - ramp])

            def path(offset: int) -> np.ndarray:
                return np.where(t_idx >= 0, cycle[np.mod(t_idx + offset, len(cycle))], 0.0)

            obj = path(0)
            # differential: the background makes the same moves half a rest earlier (as the authors')
            bg = obj if params.mode == "global" else path(n_rest // 2)
            return obj, bg
        rng = chunk_rng(seed, _STREAM, 0)
        steps = rng.standard_normal((2, n_after)) * params.jitter_um
        walk = np.concatenate([np.zeros((2, n_pre + 1)), np.cumsum(steps[:, :-1], axis=1)], axis=1)
        obj = walk[0]
        bg = obj if params.mode == "global" else walk[1]
        return obj, bg

    def render(self, params: Any, seed: int) -> xr.Dataset:
        dt = params.frame_period_s
        n_pre, n_after = n_frames(params.pre_s, dt), n_frames(params.duration, dt)
        obj, bg = self.paths(params, seed, n_pre, n_after)
        x = pixel_centres(params)
        obj_prof = params.contrast * square_wave(x, params.pixel_um, params.bar_um, obj)
        bg_prof = params.contrast * square_wave(x, params.pixel_um, params.bar_um, bg)
        mask = disk_coverage(params, (0.0, 0.0), params.object_radius_um).astype(np.float32)
        shape = grid_shape(params)
        movie = mask[None] * from_profile(obj_prof, shape) + (1 - mask)[None] * from_profile(bg_prof, shape)
        return assemble(
            params,
            movie,
            n_pre,
            events={
                "object_position": event(obj, "um", "object grating displacement", dims=("time",)),
                "background_position": event(bg, "um", "background grating displacement", dims=("time",)),
            },
            description=(
                f"grating disk of radius {params.object_radius_um:g} um moving ({params.motion}) "
                f"{'with' if params.mode == 'global' else 'differentially from'} the background grating"
            ),
            reference="Olveczky, Baccus & Meister 2003, Nature 423:401; torchdeepretina oms",
            mode=params.mode,
            motion=params.motion,
            bar_um=float(params.bar_um),
        )
