"""Long random movies made piecewise: the same frames whether rendered whole or chunk by chunk.

A :class:`ChunkedStimulus` draws its random numbers from generators seeded by ``(seed, chunk
index)`` (:func:`mechlens_stimuli._render.chunk_rng`), so any range of frames can be made on its own
and equals the same range of the whole movie. :meth:`ChunkedStimulus.render` uses that same path,
and refuses movies over the memory budget (:func:`mechlens.memory.budget`, 1 GiB by default) with a pointer to
:meth:`ChunkedStimulus.iter_chunks`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import Any, ClassVar

import xarray as xr

from mechlens import memory
from mechlens import parameters as _params
from mechlens.errors import ParameterError, UsageError
from mechlens.interfaces import Grid
from mechlens_stimuli._render import LibraryStimulus, grid_shape


class ChunkedStimulus(LibraryStimulus):
    """A stimulus whose frames can be made in any range, deterministically (base class, not registered)."""

    #: largest movie :meth:`render` makes in one piece, bytes (None: the memory budget, :func:`mechlens.memory.budget`)
    max_render_bytes: ClassVar[int | None] = None
    #: the parameter that sets the movie's length (named in the error when it is too long)
    length_parameter: ClassVar[str] = "duration"
    #: frames per chunk of :meth:`iter_chunks` by default (60 s at 10 ms, 60 MB at 50 x 50)
    default_chunk_frames: ClassVar[int] = 6000

    @abc.abstractmethod
    def span(self, params: Any) -> tuple[int, int]:
        """Frames before time 0 (history) and from time 0 on: ``(n_pre, n_after)``."""

    @abc.abstractmethod
    def chunk(self, params: Any, seed: int, start: int, stop: int) -> xr.Dataset:
        """Frames ``start .. stop - 1``, counted from time 0 (negative: history), as a stimulus Dataset.

        Per-frame event variables cover the same frames; the time coord starts at ``start * dt``.
        """

    def render(self, params: Any, seed: int) -> xr.Dataset:
        n_pre, n_after = self.span(params)
        ny, nx = grid_shape(params)
        nbytes = (n_pre + n_after) * ny * nx * 4
        limit = self.max_render_bytes if self.max_render_bytes is not None else memory.budget()
        if limit is not None and nbytes > limit:
            raise ParameterError(
                self.length_parameter,
                f"the movie would take {nbytes / 2**30:.1f} GiB in memory (limit "
                f"{limit / 2**30:.1f} GiB); make it piecewise with "
                f"{type(self).__name__}(...).iter_chunks(seed, chunk_frames) or .frames(start, stop, seed)",
            )
        return self.chunk(params, seed, -n_pre, n_after)

    def frame_span(self, params: Any) -> tuple[int, int] | None:
        """``(-n_pre, n_after)``: the frames :meth:`render` makes, from time 0 (:meth:`Stimulus.frame_span`)."""
        n_pre, n_after = self.span(params)
        return -n_pre, n_after

    def render_range(self, params: Any, seed: int, start: int, stop: int) -> xr.Dataset:
        """Frames ``start .. stop - 1`` of ``render(params, seed)`` (:meth:`Stimulus.render_range`).

        No memory limit of its own: the caller sizes the range (``mechlens.streaming`` checks one
        chunk against the budget).
        """
        n_pre, n_after = self.span(params)
        if not (-n_pre <= start < stop <= n_after):
            raise UsageError(
                f"{self.name}: render_range({start}, {stop}) is outside the movie, which has frames "
                f"{-n_pre} .. {n_after - 1} (counted from time 0)"
            )
        ds = self.chunk(params, seed, start, stop)
        self._provenance(ds, seed, params)
        return ds

    def _single(self, grid: Grid | None) -> Any:
        params = self.parameters_on(grid)
        sweep = _params.swept(params)
        if sweep is not None:
            name, _ = sweep
            raise UsageError(
                f"{self.name}: frames()/iter_chunks() make one movie; {name} is swept (a list). "
                "Make one instance per value."
            )
        return params

    def frames(self, start: int, stop: int, seed: int = 0, grid: Grid | None = None) -> xr.Dataset:
        """Frames ``start .. stop - 1`` of the movie, counted from time 0 (negative: history).

        Parameters
        ----------
        start, stop : int
            Frame range; must lie within ``[-n_pre, n_after]`` (see :meth:`span`).
        seed : int
            The movie's seed (the same movie as ``generate(seed)``).
        grid : Grid, optional
            The model's grid (as for :meth:`generate`).

        Returns
        -------
        xarray.Dataset
            ``stimulus`` (time, y, x) for those frames, with its per-frame event variables.
        """
        params = self._single(grid)
        n_pre, n_after = self.span(params)
        if not (-n_pre <= start < stop <= n_after):
            raise UsageError(
                f"{self.name}: frames({start}, {stop}) is outside the movie, which has frames "
                f"{-n_pre} .. {n_after - 1} (counted from time 0); give -{n_pre} <= start < stop <= {n_after}"
            )
        ds = self.chunk(params, seed, start, stop)
        self._provenance(ds, seed, params)
        return ds

    def iter_chunks(
        self, seed: int = 0, chunk_frames: int | None = None, grid: Grid | None = None
    ) -> Iterator[xr.Dataset]:
        """The whole movie, history first, as consecutive chunks of ``chunk_frames`` frames.

        Only one chunk is in memory at a time, so an hour of 50 x 50 white noise (3.6 GB as float32)
        streams through in 60 MB pieces.

        Parameters
        ----------
        seed : int
            The movie's seed.
        chunk_frames : int, optional
            Frames per chunk (default :attr:`default_chunk_frames`); the last one may be shorter.
        grid : Grid, optional
            The model's grid (as for :meth:`generate`).

        Yields
        ------
        xarray.Dataset
            ``stimulus`` (time, y, x) for each chunk; concatenated along ``time`` they equal
            ``generate(seed)``.
        """
        params = self._single(grid)
        step = int(chunk_frames or self.default_chunk_frames)
        if step < 1:
            raise UsageError(f"{self.name}: chunk_frames must be >= 1, got {step}")
        n_pre, n_after = self.span(params)
        for start in range(-n_pre, n_after, step):
            ds = self.chunk(params, seed, start, min(start + step, n_after))
            self._provenance(ds, seed, params)
            yield ds

    def _provenance(self, ds: xr.Dataset, seed: int, params: Any) -> None:
        ds.attrs.setdefault("stimulus", self.name)
        ds.attrs.setdefault("stimulus_parameters", _params.to_json(params))
        ds.attrs.setdefault("seed", int(seed))
