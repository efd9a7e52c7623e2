"""The abstract plugin interfaces: Model, Stimulus, Attributor, Reducer, Experiment, Command.

A plugin subclasses one of these, declares ``name`` and a ``Parameters`` dataclass (see
:mod:`mechlens.parameters`), and is returned by a hook of :mod:`mechlens.hookspecs`. Every stage
exchanges labeled ``xarray.Dataset`` objects whose names are fixed by docs/contract.md and checked by
:mod:`mechlens.schema`.

Time convention
---------------
A stimulus movie has a ``time`` coordinate in seconds. Frames before ``time == 0`` are history
(``pre_s`` attr): a model with ``history`` frames answers at every time whose full window lies inside
the movie, i.e. from ``time[history - 1]`` on. Events (flash onsets, reversal) are in the same seconds.

Torch is imported lazily so that ``import mechlens`` and plugin discovery stay cheap.

Why one file
------------
These classes are the contract (docs/contract.md, 'Kinds') and are read side by side: every kind
derives from :class:`Plugin`, and the provided methods (``Stimulus.generate``, ``Model.predict``,
``Model.split``) are short. The machinery behind them lives elsewhere (:mod:`mechlens.layers`,
:mod:`mechlens.parameters`, :mod:`mechlens.memory`); most of the length is docstrings.
"""

from __future__ import annotations

import abc
import argparse
import dataclasses
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import xarray as xr

import mechlens.memory as _memory
import mechlens.parameters as _params
from mechlens.errors import ParameterError, SchemaError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch


class Plugin(abc.ABC):  # noqa: B024 - abstract by intent; each kind adds its own abstract methods
    """Common base of every plugin class.

    Parameters
    ----------
    **params
        Values for the fields of the class's ``Parameters`` dataclass; unknown names, wrong types
        and out-of-range values raise :class:`~mechlens.errors.ParameterError` naming the parameter.

    Attributes
    ----------
    name : str
        Registry name, kebab-case (``"my-cnn"``).
    kind : str
        ``"model"``, ``"stimulus"``, ``"attributor"``, ``"reducer"`` or ``"experiment"``.
    Parameters : type
        A dataclass declaring the parameters, made with :func:`mechlens.parameters.param`.
    params
        The validated Parameters instance.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    Parameters: ClassVar[type] = _params.NoParameters

    def __init__(self, **params: Any) -> None:
        self.params: Any = _params.build(self.Parameters, params, where=self.kind or self.name)

    @classmethod
    def describe(cls) -> str:
        """First line of the class docstring."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    @classmethod
    def parameter_specs(cls) -> list[_params.ParamSpec]:
        """The declared parameters (name, type, default, units, range, doc)."""
        return _params.specs(cls.Parameters)

    def parameters_json(self) -> str:
        """The parameters as a JSON string, for provenance attrs."""
        return _params.to_json(self.params)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"


@dataclasses.dataclass(frozen=True)
class Grid:
    """The pixel grid and clock a model takes its movies on: what a stimulus needs to fit the model.

    :attr:`Model.grid` makes it from the model's ``input_shape``, ``frame_period_s``, ``history`` and
    ``pixel_um``; the pipeline hands it to :meth:`Stimulus.generate`, so a stimulus renders on the
    model's grid by default (docs/contract.md, 'Kinds').

    Attributes
    ----------
    shape : (int, int)
        (y, x) pixels.
    frame_period_s : float
        Seconds per frame.
    history : int
        Frames per model window: a movie needs ``history - 1`` frames before time 0 for the model
        to answer at time 0.
    pixel_um : float or None
        Pixel size in the stimulus plane, um; None when the model does not state one.
    """

    shape: tuple[int, int]
    frame_period_s: float
    history: int
    pixel_um: float | None = None

    def __post_init__(self) -> None:
        ny, nx = (int(n) for n in self.shape)
        object.__setattr__(self, "shape", (ny, nx))
        object.__setattr__(self, "frame_period_s", float(self.frame_period_s))
        object.__setattr__(self, "history", int(self.history))
        if self.pixel_um is not None:
            object.__setattr__(self, "pixel_um", float(self.pixel_um))
        if ny < 1 or nx < 1 or self.history < 1 or not self.frame_period_s > 0:
            raise UsageError(f"a grid needs >= 1 pixel per side, history >= 1 and a frame period > 0; got {self}")

    @property
    def history_s(self) -> float:
        """The model's window in seconds (``history * frame_period_s``): the default history before time 0."""
        return round(self.history * self.frame_period_s, 12)

    def describe(self) -> str:
        """``"18x16 px (y x x) of 55 um, 0.0333333 s frames, 20 frames of history"``, for messages."""
        pixel = f" of {self.pixel_um:g} um" if self.pixel_um is not None else ""
        return (
            f"{self.shape[0]}x{self.shape[1]} px (y x x){pixel}, {self.frame_period_s:g} s frames, "
            f"{self.history} frames of history"
        )


class Stimulus(Plugin):
    """A visual stimulus: makes a movie on a pixel grid.

    Subclasses implement :meth:`render` for one set of scalar parameters; :meth:`generate` handles
    sweeps (a list value of a ``sweepable`` parameter) by rendering once per value and stacking the
    results along a ``condition`` dim whose coordinate holds the values and whose attr ``swept``
    names the parameter. A stimulus that can fit a model's :class:`Grid` overrides
    :meth:`on_grid`; :meth:`render` keeps its signature either way.
    """

    kind = "stimulus"

    def on_grid(self, params: Any, grid: Grid | None) -> Any:
        """The parameters to render with on ``grid`` (None: no model's grid is known).

        Override to fill grid-dependent parameters left unset (size, pixel size, frame period,
        history before time 0) from ``grid`` and to refuse an explicit value that conflicts with it
        (raise :class:`~mechlens.errors.ParameterError` naming the parameter and the model's value).
        The default returns ``params`` unchanged: the stimulus ignores the grid (and a movie that
        does not fit the model is refused by :meth:`Model.check_movie`).
        """
        return params

    def parameters_on(self, grid: Grid | None = None) -> Any:
        """:attr:`params` fitted to ``grid`` by :meth:`on_grid`; a refusal is named ``stimulus.<parameter>``."""
        try:
            return self.on_grid(self.params, grid)
        except ParameterError as err:
            if err.name.startswith("stimulus."):
                raise
            raise ParameterError(f"stimulus.{err.name}", err.message) from None

    def generate(self, seed: int = 0, grid: Grid | None = None) -> xr.Dataset:
        """Make the stimulus Dataset.

        Parameters
        ----------
        seed : int
            Seed for every random choice; the same seed gives the same movie.
        grid : Grid, optional
            The model's grid (:attr:`Model.grid`): the stimulus renders on it where it can
            (:meth:`on_grid`). The pipeline passes the model's.

        Returns
        -------
        xarray.Dataset
            ``stimulus`` (time, y, x) or (condition, time, y, x) in z-scored contrast units
            (0 = mean grey, negative = dark); ``time`` in s, ``y``/``x`` in um; attrs
            ``frame_period_s`` and ``pre_s`` (seconds of history before ``time == 0``).
        """
        params = self.parameters_on(grid)
        _memory.check_stimulus(self, params)  # the whole sweep, before rendering any of it
        sweep = _params.swept(params)
        if sweep is None:
            ds = self.render(params, seed)
        else:
            pname, values = sweep
            parts = [self.render(dataclasses.replace(params, **{pname: v}), seed) for v in values]
            ds = stack_conditions(parts, pname, values)
        ds.attrs.setdefault("stimulus", self.name)
        # the parameters it was rendered with (grid-dependent ones filled in)
        ds.attrs.setdefault("stimulus_parameters", _params.to_json(params))
        ds.attrs.setdefault("seed", int(seed))
        return ds

    @abc.abstractmethod
    def render(self, params: Any, seed: int) -> xr.Dataset:
        """Render the movie for one set of scalar parameters (no sweep).

        Parameters
        ----------
        params
            A Parameters instance with no list-valued sweepable field.
        seed : int
            Random seed.

        Returns
        -------
        xarray.Dataset
            ``stimulus`` (time, y, x) plus event variables; see :meth:`generate`.
        """

    # -- streaming (optional; mechlens.streaming) -----------------------------------------------------
    def frame_span(self, params: Any) -> tuple[int, int] | None:
        """Frames ``(first, stop)`` of the movie :meth:`render` makes, counted from time 0; None: no ranges.

        ``first`` is minus the history frames (``-round(pre_s / frame_period_s)``), ``stop`` the
        frames from time 0 on. A stimulus that returns a span must implement :meth:`render_range`;
        the default (None) means the stimulus is always rendered whole, so a pipeline never streams it.
        """
        return None

    def render_range(self, params: Any, seed: int, start: int, stop: int) -> xr.Dataset:
        """Frames ``start .. stop - 1`` (counted from time 0; negative: history) of ``render(params, seed)``.

        Equal to the same frames of the whole movie (``time`` coord, pixel values and per-frame event
        variables), so that a long movie can be streamed through the pipeline in time chunks
        (``mechlens run --chunk-time``). Optional: implement it together with :meth:`frame_span`.

        Parameters
        ----------
        params
            Scalar parameters fitted to the grid (no sweep).
        seed : int
            The movie's seed.
        start, stop : int
            Frame range within :meth:`frame_span`.

        Returns
        -------
        xarray.Dataset
            ``stimulus`` (time, y, x) for those frames, with the attrs of :meth:`render`.

        Raises
        ------
        UsageError
            The stimulus cannot render a range of frames (the default).
        """
        raise UsageError(
            f"stimulus {self.name!r} cannot render a range of frames, so it cannot be streamed; "
            "give a shorter movie or --chunk-time 0 to render it whole"
        )


def stack_conditions(parts: Sequence[xr.Dataset], name: str, values: Sequence[Any]) -> xr.Dataset:
    """Stack per-condition Datasets along a new ``condition`` dim.

    Movies of different lengths are padded at the end with mean grey (0); event variables of a
    shorter condition are padded with NaN.

    Parameters
    ----------
    parts : sequence of Dataset
        One Dataset per value, each with ``stimulus`` (time, y, x).
    name : str
        Name of the swept parameter (stored in ``condition.attrs["swept"]`` and the Dataset attrs).
    values : sequence
        The swept values, one per part.
    """
    longest = max(parts, key=lambda d: d.sizes["time"])
    aligned = []
    for part in parts:
        if part.sizes["time"] != longest.sizes["time"]:
            start = part["time"].values[0]
            if not np.isclose(start, longest["time"].values[0]):
                raise SchemaError(
                    f"sweep over {name}: conditions start at different times ({start} s vs "
                    f"{longest['time'].values[0]} s); a stimulus must give every condition the same pre"
                )
            part = part.reindex(time=longest["time"], method="nearest", tolerance=1e-9)
            part["stimulus"] = part["stimulus"].fillna(0.0)
        else:
            part = part.assign_coords(time=longest["time"])
        aligned.append(part)
    ds = xr.concat(aligned, dim="condition", data_vars="all", coords="minimal", compat="override")
    ds = ds.assign_coords(condition=("condition", np.asarray(values)))
    ds["condition"].attrs.update({"swept": name, "long_name": name})
    ds.attrs.update(longest.attrs)
    ds.attrs["swept"] = name
    return ds


class Model(Plugin):
    """A model of a neural circuit: stimulus movie in, output-unit (cell) responses out.

    A model is a torch module taking history windows ``(batch, history, y, x)`` (oldest frame first)
    to rates ``(batch, n_cells)`` in Hz (or a signed output, ``signed = True``). Attribution and
    reduction reach a named hidden layer: by default through a forward hook on the submodule of that
    name (:meth:`layer_module`; :mod:`mechlens.layers`), so the module may have skip connections and
    functional ops; :meth:`split` returns ``(below, above)`` with ``above(below(x)) == module(x)``,
    built from hooks unless a subclass overrides it with a faster slice of its network.

    Subclasses implement :attr:`cells`, :meth:`layers` and :meth:`torch_module`, and set ``history``,
    ``frame_period_s`` and ``input_shape`` (no defaults: docs/contract.md, 'Kinds'). They may override
    :meth:`layer_module` and :meth:`split`, and set ``pixel_um``, ``signed`` and ``batch_size``.
    :meth:`predict` and :meth:`windows` are provided.
    """

    kind = "model"
    # The grid has no default: no shape is more natural than another, and a silent default would
    # hand every model one lab's grid (a 40-frame, 10 ms, 50x50 CNN). :meth:`__getattr__` names a
    # missing one.
    #: frames of history per window (the ``lag`` dim)
    history: int
    #: seconds per frame
    frame_period_s: float
    #: (y, x) pixels the model takes
    input_shape: tuple[int, int]
    #: pixel size in the stimulus plane, um; None: the model states none (stimuli then use their own)
    pixel_um: float | None = None
    #: predict() batch size, in time points
    batch_size: int = 512
    #: whether the outputs may be negative: False for firing rates (Hz, >= 0, checked by the conformance
    #: kit), True for a signed output (calcium dF/F, a linear readout, a model of signed deviations)
    signed: bool = False

    def __getattr__(self, name: str) -> Any:
        # called only when normal lookup fails: a model that never set its grid
        if name in ("history", "frame_period_s", "input_shape"):
            # an AttributeError, so hasattr() and getattr(..., default) keep working
            raise AttributeError(
                f"model {type(self).__name__} ({self.name!r}) sets no {name!r}; set history, frame_period_s "
                "and input_shape as class attributes or in __init__ (see docs/contract.md, 'Kinds')"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def grid(self) -> Grid:
        """The model's :class:`Grid`: ``input_shape``, ``frame_period_s``, ``history`` and ``pixel_um``."""
        pixel = self.pixel_um
        return Grid(tuple(self.input_shape), self.frame_period_s, self.history, None if pixel is None else float(pixel))  # type: ignore[arg-type]

    @property
    @abc.abstractmethod
    def cells(self) -> list[str]:
        """String ids of the output units, e.g. ``["gc00", "gc01"]``."""

    @abc.abstractmethod
    def layers(self) -> dict[str, tuple[int, ...]]:
        """The attributable hidden layers: name -> unit shape per time point, e.g. ``{"conv1": (8, 36, 36)}``."""

    @abc.abstractmethod
    def torch_module(self) -> torch.nn.Module:
        """The module mapping windows (batch, history, y, x) to rates (batch, cell) in Hz (eval mode)."""

    def layer_module(self, layer: str) -> torch.nn.Module:
        """The submodule whose output is ``layer`` (default: the submodule of that name in :meth:`torch_module`).

        Override when the layer names differ from the module's attribute paths (``"conv1"`` for
        ``"stem.0"``). The submodule must be called once per forward and return one tensor
        (batch, *layers()[layer]).
        """
        import mechlens.layers as _layers

        return _layers.find_module(self.torch_module(), self.check_layer(layer), f"model {self.name!r}")

    @classmethod
    def split_by_hooks(cls) -> bool:
        """Whether :meth:`split` is the default one built from forward hooks (no fast path of the model's own)."""
        return cls.split is Model.split

    def split(self, layer: str) -> tuple[torch.nn.Module, torch.nn.Module]:
        """Split the module at ``layer``.

        The default reaches the layer through forward hooks on :meth:`layer_module`
        (:func:`mechlens.layers.hook_split`): ``below`` runs the module until the layer and returns its
        output; ``above`` runs the module with the layer's output replaced by the activations it is
        given, the part below the layer fed a zero window. It refuses a layer that a skip connection
        goes around (the rates would depend on more than its activations). Override it to give a
        faster split (slices of a Sequential that share its modules).

        Returns
        -------
        below : torch.nn.Module
            Windows (batch, history, y, x) -> layer activations (batch, *layers()[layer]).
        above : torch.nn.Module
            Layer activations -> rates (batch, cell), in Hz.
        """
        import mechlens.layers as _layers

        layer = self.check_layer(layer)
        return _layers.hook_split(
            self.torch_module(),
            self.layer_module(layer),
            (self.history, *self.input_shape),
            where=f"layer {layer!r} of model {self.name!r}",
        )

    def default_layer(self) -> str:
        """The layer attributed when none is named (the first one)."""
        return next(iter(self.layers()))

    def check_layer(self, layer: str | None) -> str:
        """Resolve ``layer`` (None means :meth:`default_layer`), raising a clear error if unknown."""
        if layer is None:
            return self.default_layer()
        known = list(self.layers())
        if layer not in known:
            raise UsageError(
                f"model {self.name!r} has no layer {layer!r}; its layers are {', '.join(known)}"
                + _params.suggest(layer, known)
            )
        return layer

    @property
    def device(self) -> str:
        """Torch device the module runs on."""
        try:
            return str(next(self.torch_module().parameters()).device)
        except StopIteration:
            return "cpu"

    def time_of_outputs(self, stimulus: xr.DataArray) -> xr.DataArray:
        """The ``time`` coordinate of the model's outputs for a movie (from ``time[history-1]`` on)."""
        return stimulus["time"].isel(time=slice(self.history - 1, None))

    def windows(self, movie: xr.DataArray) -> torch.Tensor:
        """History windows of a movie, as a strided view (no copy).

        Parameters
        ----------
        movie : xarray.DataArray
            ``stimulus`` with dims (time, y, x).

        Returns
        -------
        torch.Tensor
            (n_times - history + 1, history, y, x), float32; row ``i`` is frames ``i .. i+history-1``.
        """
        import torch

        self.check_movie(movie)
        arr = np.ascontiguousarray(self.input_frames(movie.transpose("time", "y", "x").values), dtype=np.float32)
        frames = torch.from_numpy(arr)
        # unfold gives (T', y, x, history) as a view; permute keeps it a view
        return frames.unfold(0, self.history, 1).permute(0, 3, 1, 2)

    def input_frames(self, frames: np.ndarray) -> np.ndarray:
        """Frames in the stimulus library's contrast units, in the units the torch module takes.

        Every input the module sees goes through here: the stimulus windows (:meth:`windows`) and
        the baseline windows of attribution, reduced models and lesions, so both sides of a
        comparison are in one unit. The default is the identity; a model trained on a movie it
        z-scored with that movie's own statistics overrides it to z-score the same way.

        Parameters
        ----------
        frames : numpy.ndarray
            (..., y, x) contrast, dimensionless.

        Returns
        -------
        numpy.ndarray
            The same shape, float32.
        """
        return np.asarray(frames, dtype=np.float32)

    def check_movie(self, movie: xr.DataArray) -> None:
        """Raise a SchemaError if a movie does not fit the model's grid, frame period or history."""
        shape = (movie.sizes.get("y"), movie.sizes.get("x"))
        if shape != tuple(self.input_shape):
            raise SchemaError(
                f"model {self.name!r} takes {self.input_shape[0]}x{self.input_shape[1]} pixel movies; "
                f"the stimulus is {shape[0]}x{shape[1]}. Generate the stimulus with a matching grid."
            )
        if movie.sizes["time"] < self.history:
            raise SchemaError(
                f"model {self.name!r} needs at least {self.history} frames of history; the stimulus has "
                f"{movie.sizes['time']}"
            )
        period = movie.attrs.get("frame_period_s")
        if period is not None and not np.isclose(float(period), self.frame_period_s):
            raise SchemaError(
                f"model {self.name!r} runs at {self.frame_period_s} s per frame; the stimulus has "
                f"frame_period_s={period}. Generate the stimulus at the model's frame period."
            )
        pixel = self.pixel_um
        if pixel is not None:
            for dim in ("x", "y"):
                c = movie.coords.get(dim)
                if c is not None and c.size > 1:
                    step = float(np.median(np.diff(np.asarray(c.values, dtype=float))))
                    if not np.isclose(step, float(pixel), rtol=1e-6):
                        raise SchemaError(
                            f"model {self.name!r} takes pixels of {float(pixel):g} um; the stimulus's {dim} "
                            f"pixels are {step:g} um apart. Generate the stimulus at the model's pixel size."
                        )
                    break

    def predict(self, stimulus: xr.Dataset) -> xr.Dataset:
        """Responses of every cell to a stimulus.

        Parameters
        ----------
        stimulus : xarray.Dataset
            A stimulus Dataset (``stimulus`` with dims (time, y, x) or (condition, time, y, x)).

        Returns
        -------
        xarray.Dataset
            ``response`` (time, cell) or (condition, time, cell), in Hz, at the output times.
        """
        from mechlens.torchutil import run_batched

        movie = stimulus["stimulus"]
        movie.attrs.setdefault("frame_period_s", stimulus.attrs.get("frame_period_s"))
        module = self.torch_module()

        def one(m: xr.DataArray) -> np.ndarray:
            return run_batched(module, self.windows(m), self.batch_size)

        if "condition" in movie.dims:
            data = np.stack([one(movie.isel(condition=i)) for i in range(movie.sizes["condition"])])
            dims: tuple[str, ...] = ("condition", "time", "cell")
        else:
            data = one(movie)
            dims = ("time", "cell")
        coords = {"time": self.time_of_outputs(movie), "cell": ("cell", list(self.cells))}
        if "condition" in movie.dims:
            coords["condition"] = movie["condition"]
        response = xr.DataArray(data.astype(np.float32), dims=dims, coords=coords)
        response.attrs.update({"units": "Hz", "long_name": "model firing rate"})
        return xr.Dataset({"response": response}, attrs={"frame_period_s": self.frame_period_s})

    @classmethod
    def load(cls, path: str | Path) -> Model:
        """Load a model from a checkpoint written by :meth:`save` (never unpickles code)."""
        raise UsageError(f"model {cls.name!r} cannot load checkpoints")

    def save(self, path: str | Path) -> None:
        """Write a checkpoint: weights plus JSON metadata."""
        raise UsageError(f"model {self.name!r} cannot save checkpoints")

    def checkpoint_sha256(self) -> str:
        """sha256 of the checkpoint the model came from, or ``""`` (provenance)."""
        return ""


class Attributor(Plugin):
    """Attributes each cell's response to the units of a hidden layer."""

    kind = "attributor"

    @abc.abstractmethod
    def attribute(
        self,
        model: Model,
        stimulus: xr.Dataset,
        layer: str | None = None,
        cells: Sequence[str] | None = None,
    ) -> xr.Dataset:
        """Attribute responses to hidden units.

        Parameters
        ----------
        model : Model
            The model.
        stimulus : xarray.Dataset
            A stimulus Dataset (``stimulus`` (time, y, x) [+ condition]).
        layer : str, optional
            Layer name from ``model.layers()``; default ``model.default_layer()``.
        cells : sequence of str, optional
            Cell ids to attribute; default all.

        Returns
        -------
        xarray.Dataset
            ``attribution`` (time, cell, unit_channel[, unit_y, unit_x]) [+ condition], in Hz;
            ``response`` (time, cell); ``baseline_response`` (cell); ``completeness_error``
            (time, cell) = sum(attribution) - (response - baseline_response). The layer name is in
            the ``layer`` attr of ``attribution``.
        """


class Reducer(Plugin):
    """Reduces attributions to a few effective units or modes, and checks them with a reduced model."""

    kind = "reducer"

    @abc.abstractmethod
    def reduce(self, attribution: xr.Dataset, model: Model | None = None) -> xr.Dataset:
        """Find the few units or components that generate the response.

        Parameters
        ----------
        attribution : xarray.Dataset
            Output of an Attributor (merged with the stimulus when a reduced model is to be run).
        model : Model, optional
            When given, the reduced model is run: ``reduced_response`` (time, cell).

        Returns
        -------
        xarray.Dataset
            ``weights`` (time, cell, component), ``components`` (component, unit_channel[, ...]),
            and ``reduced_response`` (time, cell) when a model is given.
        """


class Experiment(Plugin):
    """A named recipe: stimulus (and sweep), attributor, reducer, window, phenomenon measure, figures.

    Subclasses set the class attributes and may override :meth:`measure` (add the phenomenon's
    measure and the mechanism sentence), :meth:`figures` (extra figures beyond the standard ones of
    :mod:`mechlens.figures`), :meth:`stimulus_parameters` (adapt the stimulus to the model) and
    :meth:`run` (add control runs). :func:`mechlens.experiments.run_experiment` drives them; the
    conventions for what :meth:`measure` writes are in docs/experiments.md.
    """

    kind = "experiment"
    #: registry names and parameters of the stages
    stimulus: ClassVar[str] = ""
    stimulus_params: ClassVar[dict[str, Any]] = {}
    attributor: ClassVar[str] = ""
    attributor_params: ClassVar[dict[str, Any]] = {}
    reducer: ClassVar[str] = ""
    reducer_params: ClassVar[dict[str, Any]] = {}
    #: default model (registry name) and its parameters; ``mechlens run --model`` overrides them
    model: ClassVar[str] = ""
    model_params: ClassVar[dict[str, Any]] = {}
    #: layer to attribute (None: the model's default layer)
    layer: ClassVar[str | None] = None
    #: cells to attribute: None (all), a list of ids, or an int n (the n cells responding most in the window)
    cells: ClassVar[int | Sequence[str] | None] = None
    #: time window of interest, seconds (start, end); None: every output time
    window: ClassVar[tuple[float, float] | None] = None
    #: stimulus event variable (a time in s, scalar or per condition, e.g. "omitted_time") that
    #: ``window`` is relative to; "" for the stimulus clock
    window_event: ClassVar[str] = ""
    #: the window in words ("the 300 ms after the omitted flash")
    window_doc: ClassVar[str] = ""
    #: a title and the literature reference of the phenomenon, for the report
    title: ClassVar[str] = ""
    reference: ClassVar[str] = ""

    def stimulus_parameters(self, model: Model) -> dict[str, Any]:
        """The stimulus parameters to use with ``model`` (default: :attr:`stimulus_params`)."""
        return dict(self.stimulus_params)

    def window_mask(self, result: xr.Dataset) -> xr.DataArray:
        """Boolean mask over ``([condition,] time)`` of the times of interest (default: :attr:`window`)."""
        t = result["time"]
        if self.window is None:
            mask = xr.ones_like(t, dtype=bool)
        else:
            origin: float | xr.DataArray = 0.0  # an event time may differ per condition
            if self.window_event:
                if self.window_event not in result.variables:
                    raise SchemaError(
                        f"experiment {self.name!r}: the stimulus has no event variable {self.window_event!r} to "
                        "place the time window on; use a stimulus that writes it, or change window_event"
                    )
                origin = result[self.window_event].astype(float)
            # 1e-6 s tolerance: time coords are rounded to 1e-9 s, events may be sums of periods
            mask = (t >= origin + self.window[0] - 1e-6) & (t <= origin + self.window[1] + 1e-6)
        if "response" in result:
            # only times where the model answered (merged files are NaN over the stimulus history)
            mask = mask & result["response"].notnull().any([d for d in result["response"].dims if d == "cell"])
        return mask

    def run(self, model: Model, seed: int = 0, cells: Sequence[str] | None = None, registry: Any = None) -> xr.Dataset:
        """Run the experiment's pipeline on ``model``: override to add control runs.

        :func:`mechlens.pipeline.run_recipe` calls an override, and runs the declared stages
        (:func:`mechlens.pipeline.run_stages`) for an experiment without one. An override calls
        ``mechlens.pipeline.run_stages(self, model, seed, cells, registry)`` for the declared stages.

        .. deprecated:: 0.1
            Calling this default (``super().run(...)`` or ``experiment.run(...)`` on an experiment
            that does not override it) still runs the declared stages but warns: running a pipeline
            is the pipeline's job, and the interfaces import none of it. Call
            :func:`mechlens.pipeline.run_stages` or :func:`mechlens.pipeline.run_recipe` instead.

        Parameters
        ----------
        model : Model
            The model instance.
        seed : int
            Stimulus seed.
        cells : sequence of str, optional
            The cells to attribute (resolved from :attr:`cells` by the caller).
        registry : mechlens.registry.Registry, optional
            Where the stage names are looked up (default: the process-wide registry).

        Returns
        -------
        xarray.Dataset
            The merged pipeline Dataset (see :func:`mechlens.pipeline.run`).
        """
        warnings.warn(
            f"experiment {self.name!r}: the default Experiment.run is deprecated; call "
            "mechlens.pipeline.run_stages(experiment, model, seed, cells, registry) for the declared stages, "
            "or mechlens.pipeline.run_recipe(...) to run an experiment",
            DeprecationWarning,
            stacklevel=2,
        )
        if _stage_runner is None:
            raise UsageError(
                f"experiment {self.name!r}: the default Experiment.run needs mechlens.pipeline, which is not "
                "imported; call mechlens.pipeline.run_stages(experiment, model, seed, cells, registry) instead"
            )
        return _stage_runner(self, model, seed, cells, registry)

    def measure(self, result: xr.Dataset) -> xr.Dataset:
        """Add the phenomenon's measure to a result Dataset (default: unchanged)."""
        return result

    def figures(self, result: xr.Dataset, outdir: Path) -> list[Path]:
        """Write figures beyond the standard ones into ``outdir``; return their paths (default: none)."""
        return []


#: What the deprecated default :meth:`Experiment.run` calls: :func:`mechlens.pipeline.run_stages`,
#: installed by :mod:`mechlens.pipeline` when it is imported. The dependency points down (the pipeline
#: hands itself to the interfaces) so that this module imports no pipeline (issue 19).
_stage_runner: Callable[[Experiment, Model, int, Sequence[str] | None, Any], xr.Dataset] | None = None


class Command(abc.ABC):
    """A CLI subcommand contributed by a plugin (``mechlens train``, ``mechlens simulate``).

    Attributes
    ----------
    name : str
        The subcommand (``"train"``).
    help : str
        One line for ``mechlens --help``.
    """

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""

    @abc.abstractmethod
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the subcommand's arguments."""

    @abc.abstractmethod
    def run(self, args: argparse.Namespace) -> int:
        """Run it; return the exit status. Raise MechlensError subclasses for user errors."""


KINDS: dict[str, type] = {
    "model": Model,
    "stimulus": Stimulus,
    "attributor": Attributor,
    "reducer": Reducer,
    "experiment": Experiment,
    "command": Command,
}

__all__ = [
    "KINDS",
    "Attributor",
    "Command",
    "Experiment",
    "Grid",
    "Model",
    "ParameterError",
    "Plugin",
    "Reducer",
    "Stimulus",
    "stack_conditions",
]
