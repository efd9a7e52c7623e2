"""White noise: a random checkerboard, and white noise whose contrast steps between two levels.

The noise is made of unit-variance samples (binary +-1 or Gaussian), one per checker and per
``frames_per_sample`` frames, drawn from generators seeded by ``(seed, chunk of samples)``: any range
of frames can be made on its own (:class:`mechlens_stimuli._chunked.ChunkedStimulus`), an hour of
it included, and equals the same range of the whole movie. Frames are counted from time 0, so the
movie after time 0 does not depend on ``pre_s``; the history is more of the same noise (the
stimulus's own background).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from mechlens.errors import ParameterError
from mechlens.parameters import param
from mechlens_stimuli._chunked import ChunkedStimulus
from mechlens_stimuli._render import assemble, chunk_rng, event, grid_shape, known_shape, n_frames, stimulus_parameters

#: random stream of the unit noise samples (white noise and contrast steps share it)
_STREAM = 1
#: values per generator chunk (samples x checkers); fixed per grid so chunks are reproducible
_CHUNK_VALUES = 1 << 22
#: and at most this many samples per chunk (a full-field movie has one value per sample)
_MAX_CHUNK_SAMPLES = 4096


def _checkers(params: Any) -> tuple[int, np.ndarray, np.ndarray]:
    """Checkers per side of the (square) sample array, and each row's and column's checker index.

    The samples are drawn on a square of checkers covering the longer side, so a grid's noise does
    not depend on its aspect (a square grid draws as before); all 0 when full field.
    """
    ny, nx = grid_shape(params)
    if params.checker_px == 0:
        return 1, np.zeros(ny, dtype=int), np.zeros(nx, dtype=int)
    n = -(-max(ny, nx) // params.checker_px)
    return n, np.arange(ny) // params.checker_px, np.arange(nx) // params.checker_px


def unit_samples(seed: int, distribution: str, first: int, stop: int, n_checkers: int) -> np.ndarray:
    """Unit-variance noise samples ``first .. stop - 1`` (sample index from time 0; negative: history).

    Parameters
    ----------
    seed : int
        The movie's seed.
    distribution : str
        ``"binary"`` (+-1, equally likely) or ``"gaussian"`` (standard normal).
    first, stop : int
        Sample range.
    n_checkers : int
        Checkers per side.

    Returns
    -------
    numpy.ndarray
        (stop - first, n_checkers, n_checkers) float32.
    """
    per = max(1, min(_MAX_CHUNK_SAMPLES, _CHUNK_VALUES // n_checkers**2))
    parts = []
    for k in range(first // per, (stop - 1) // per + 1):
        rng = chunk_rng(seed, _STREAM, k)
        shape = (per, n_checkers, n_checkers)
        if distribution == "binary":
            block = rng.integers(0, 2, size=shape, dtype=np.int8).astype(np.float32) * 2 - 1
        else:
            block = rng.standard_normal(size=shape, dtype=np.float32)
        parts.append(block[max(first, k * per) - k * per : min(stop, (k + 1) * per) - k * per])
    return np.concatenate(parts)


def noise_frames(params: Any, seed: int, start: int, stop: int) -> np.ndarray:
    """Unit-contrast noise frames ``start .. stop - 1``: (n, height, width) float32."""
    frames = np.arange(start, stop)
    sample = frames // params.frames_per_sample
    n_chk, rows, cols = _checkers(params)
    samples = unit_samples(seed, params.distribution, int(sample[0]), int(sample[-1]) + 1, n_chk)
    return samples[np.ix_(sample - sample[0], rows, cols)]


def _check_checker(params: Any) -> None:
    shape = known_shape(params)
    if shape is None:
        return
    side = max(shape)
    if params.checker_px > side:
        raise ParameterError(
            "checker_px",
            f"got {params.checker_px} px, larger than the grid ({shape[0]}x{shape[1]} px); allowed range "
            f"[0, {side}] px (0: full field)",
        )


class WhiteNoise(ChunkedStimulus):
    """Binary or Gaussian white-noise checkerboard, seeded; long movies can be made in chunks."""

    name = "white-noise"

    @stimulus_parameters
    class Parameters:
        duration: float = param(10.0, "movie length after time 0", units="s", gt=0)
        contrast: float | list[float] = param(
            1.0, "standard deviation of the contrast (binary: values +-contrast)", min=0, max=10, sweepable=True
        )
        distribution: str = param("binary", "distribution of each checker's value", choices=("binary", "gaussian"))
        checker_px: int = param(1, "checker side in pixels (0: full field)", min=0)
        frames_per_sample: int = param(1, "frames each checker value is held", min=1)

        def __post_init__(self) -> None:
            _check_checker(self)

    def span(self, params: Any) -> tuple[int, int]:
        dt = params.frame_period_s
        return n_frames(params.pre_s, dt), n_frames(params.duration, dt)

    def chunk(self, params: Any, seed: int, start: int, stop: int) -> xr.Dataset:
        n_pre, _ = self.span(params)
        movie = noise_frames(params, seed, start, stop) * np.float32(params.contrast)
        return assemble(
            params,
            movie,
            n_pre,
            first_frame=start,
            description=(
                f"{params.distribution} white noise, contrast {params.contrast:g}, checkers of "
                f"{params.checker_px} px, each value held {params.frames_per_sample} frame(s)"
            ),
            reference="McIntosh et al. 2016 (NIPS); Maheswaranathan et al. 2023, Neuron 111:2742",
            contrast=float(params.contrast),
            distribution=params.distribution,
            checker_px=int(params.checker_px),
        )


class ContrastSteps(ChunkedStimulus):
    """Full-field (or checkerboard) white noise whose contrast steps between a low and a high level."""

    name = "contrast-steps"
    length_parameter = "cycles"

    @stimulus_parameters
    class Parameters:
        contrast_low: float = param(0.223, "low contrast (std; 0.05 x the authors' z-scale 4.46)", min=0, max=10)
        contrast_high: float = param(1.561, "high contrast (std; 0.35 x the authors' z-scale 4.46)", min=0, max=10)
        low_s: float = param(0.5, "duration of each low-contrast epoch", units="s", gt=0)
        high_s: float = param(0.5, "duration of each high-contrast epoch", units="s", gt=0)
        cycles: int = param(1, "low-high cycles after time 0 (a final low epoch follows)", min=1)
        distribution: str = param("gaussian", "distribution of each value", choices=("binary", "gaussian"))
        checker_px: int = param(0, "checker side in pixels (0: full field, as the authors)", min=0)
        frames_per_sample: int = param(3, "frames each value is held", min=1)

        def __post_init__(self) -> None:
            _check_checker(self)

    def span(self, params: Any) -> tuple[int, int]:
        dt = params.frame_period_s
        n_low, n_high = n_frames(params.low_s, dt), n_frames(params.high_s, dt)
        return n_frames(params.pre_s, dt), params.cycles * (n_low + n_high) + n_low

    def envelope(self, params: Any, start: int, stop: int) -> np.ndarray:
        """Contrast of frames ``start .. stop - 1`` (from time 0): low in the history and the last epoch."""
        dt = params.frame_period_s
        n_low, n_high = n_frames(params.low_s, dt), n_frames(params.high_s, dt)
        i = np.arange(start, stop)
        cycle = n_low + n_high
        high = (i >= 0) & (i < params.cycles * cycle) & (np.mod(i, cycle) >= n_low)
        return np.where(high, params.contrast_high, params.contrast_low).astype(np.float32)

    def chunk(self, params: Any, seed: int, start: int, stop: int) -> xr.Dataset:
        dt = params.frame_period_s
        n_pre, _ = self.span(params)
        n_low, n_high = n_frames(params.low_s, dt), n_frames(params.high_s, dt)
        contrast = self.envelope(params, start, stop)
        movie = noise_frames(params, seed, start, stop) * contrast[:, None, None]
        ups = (np.arange(params.cycles) * (n_low + n_high) + n_low) * dt
        downs = (np.arange(params.cycles) + 1) * (n_low + n_high) * dt
        return assemble(
            params,
            movie,
            n_pre,
            first_frame=start,
            events={
                "contrast": event(contrast, "1", "contrast (std) of the noise", dims=("time",)),
                "step_time": event(ups, "s", "steps from low to high contrast", dims=("step",)),
                "step_down_time": event(downs, "s", "steps from high to low contrast", dims=("step",)),
            },
            coords={"step": ("step", np.arange(params.cycles), {"long_name": "cycle index"})},
            description=(
                f"{params.distribution} white noise stepping between contrast {params.contrast_low:g} "
                f"({params.low_s:g} s) and {params.contrast_high:g} ({params.high_s:g} s)"
            ),
            reference="Smirnakis et al. 1997, Nature 386:69; Baccus & Meister 2002, Neuron 36:909",
            distribution=params.distribution,
            checker_px=int(params.checker_px),
        )
