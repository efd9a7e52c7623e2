"""The most exciting input (MEI) of a cell or a hidden unit, found on the model by gradient ascent.

A model-dependent stimulus: it needs the model itself, not only its grid. The class says so with
``needs_model = True``; the pipeline (``mechlens run``, :func:`mechlens.run`) then sets
``stimulus.model`` before calling ``generate``. Outside the pipeline, set it yourself::

    mei = registry.get("stimulus", "mei")(cell="gc01")
    mei.model = model
    ds = mei.generate(seed=0)

The optimisation runs on one model window ``(history, y, x)`` (oldest frame first): starting from
seeded Gaussian noise, Adam ascends the target's value (a cell's rate, from the model's module, or one
unit of a hidden layer, from ``split(layer)``'s ``below``), and after every step the window is
projected onto the ball ``||window||_2 <= norm`` (z-scored contrast): the contrast-norm constraint
of in-silico MEIs (Walker et al. 2019; openretina's stimulus optimisation). The number of steps is
fixed, so the same seed gives the same movie.

The movie plays that window once: grey for ``pre_s`` (the model's window by default), the MEI's
``history`` frames from time 0, then grey for ``post_s``. The model's response at
``mei_response_time = (history - 1) * frame_period_s`` is its response to the MEI window exactly,
and the attribution of any attributor at that time is the attribution of the MEI.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import xarray as xr

from mechlens.errors import ParameterError, UsageError
from mechlens.interfaces import Grid, Model
from mechlens.memory import Estimate
from mechlens.parameters import param
from mechlens_stimuli._render import (
    LibraryStimulus,
    assemble,
    chunk_rng,
    event,
    fit_grid,
    grid_shape,
    n_frames,
    stimulus_parameters,
)

#: RMS contrast of the default norm bound (z-scored contrast per pixel and frame)
DEFAULT_RMS = 0.5
#: norm of the seeded initial window, as a fraction of the bound (small: the ascent, not the seed, shapes the MEI)
_INIT_FRACTION = 0.1
#: random stream of the initial window (see ``chunk_rng``)
_STREAM = 7


class MostExcitingInput(LibraryStimulus):
    """The most exciting input of a cell or hidden unit: gradient ascent on the model under a contrast-norm bound."""

    name = "mei"
    #: the pipeline sets :attr:`model` before ``generate`` (docs/contract.md, 'Kinds')
    needs_model: ClassVar[bool] = True
    #: the model the MEI is computed on (set by the pipeline, or by the caller)
    model: Model | None = None

    @stimulus_parameters
    class Parameters:
        cell: str = param("", "cell whose rate is maximised; default: the model's first cell (ignored with layer)")
        layer: str = param("", "hidden layer whose unit is maximised instead of a cell's rate; default: a cell")
        channel: int = param(0, "channel of the hidden unit (with layer)", min=0)
        unit_y: int | None = param(None, "row of the hidden unit in the layer's map; default: the centre", min=0)
        unit_x: int | None = param(None, "column of the hidden unit in the layer's map; default: the centre", min=0)
        norm: float | None = param(
            None,
            f"L2 norm bound of the MEI window (history x y x x, z-scored contrast); default: {DEFAULT_RMS} x "
            f"sqrt(frames x pixels), an RMS contrast of {DEFAULT_RMS}",
            gt=0,
            max=1e6,
        )
        steps: int = param(
            100, "gradient-ascent steps (fixed: no early stop, so a seed gives one movie)", min=1, max=10000
        )
        lr: float = param(0.05, "Adam step size, z-scored contrast per pixel and step", gt=0, max=10)
        post_s: float = param(0.2, "grey after the MEI window", units="s", min=0, max=3600)

    def _model(self) -> Model:
        model = self.model
        if model is None:
            raise UsageError(
                "stimulus 'mei' is computed on a model and none was given: run it through the pipeline "
                "(mechlens run --model ... --stimulus mei, or mechlens.run), or set stimulus.model = model "
                "before generate()"
            )
        return model

    def generate(self, seed: int = 0, grid: Grid | None = None) -> xr.Dataset:
        """The MEI movie on the model's grid (``grid``, when given, must be the model's); see the module docstring."""
        model = self._model()
        if grid is not None and grid != model.grid:
            raise UsageError(
                f"stimulus 'mei' is computed on model {model.name!r} ({model.grid.describe()}) but was asked for "
                f"another grid ({grid.describe()}); generate it on the model's grid"
            )
        return super().generate(seed, model.grid)

    def on_grid(self, params: Any, grid: Grid | None) -> Any:
        return fit_grid(params, grid if grid is not None else self._model().grid)

    def memory_estimate(self, params: Any) -> Estimate | None:
        """The movie's bytes (grey, one window, grey): small, but ``post_s`` is the user's."""
        if params.frame_period_s is None or self.model is None:
            return None
        dt = params.frame_period_s
        frames = params.pre_s / dt + self.model.history + params.post_s / dt
        ny, nx = grid_shape(params)
        return Estimate(frames * ny * nx * 4.0, "post_s", f"{frames:.0f} frames of {ny}x{nx} px")

    def target(self, params: Any) -> tuple[str, Any, tuple[int, ...]]:
        """What is maximised: a label, the module computing it from windows, and the index into its output.

        Returns
        -------
        label : str
            ``"cell gc01"`` or ``"conv1[2, 4, 5]"``.
        module : torch.nn.Module
            Windows (batch, history, y, x) -> (batch, cell) rates or (batch, *layer shape) activations.
        index : tuple of int
            Index of the target in one output row.
        """
        model = self._model()
        if not params.layer:
            if params.channel != 0 or params.unit_y is not None or params.unit_x is not None:
                raise ParameterError("layer", "channel, unit_y and unit_x pick a hidden unit: name its layer too")
            cells = list(model.cells)
            cell = params.cell or cells[0]
            if cell not in cells:
                raise ParameterError("cell", f"got {cell!r}; model {model.name!r} has cells {', '.join(cells)}")
            return f"cell {cell}", model.torch_module(), (cells.index(cell),)
        layers = model.layers()
        if params.layer not in layers:
            raise ParameterError("layer", f"got {params.layer!r}; model {model.name!r} has layers {', '.join(layers)}")
        shape = tuple(int(n) for n in layers[params.layer])
        if params.channel >= shape[0]:
            raise ParameterError(
                "channel", f"got {params.channel}; layer {params.layer!r} has {shape[0]} channels (0..{shape[0] - 1})"
            )
        index: tuple[int, ...] = (params.channel,)
        if len(shape) == 3:
            for name, value, n in (("unit_y", params.unit_y, shape[1]), ("unit_x", params.unit_x, shape[2])):
                value = n // 2 if value is None else value
                if value >= n:
                    raise ParameterError(
                        name, f"got {value}; layer {params.layer!r} is {n} units along it (0..{n - 1})"
                    )
                index += (value,)
        elif params.unit_y is not None or params.unit_x is not None:
            raise ParameterError("unit_y", f"layer {params.layer!r} has no spatial map (units {shape}); leave it unset")
        elif len(shape) != 1:
            raise ParameterError(
                "layer", f"layer {params.layer!r} has units {shape}; an MEI takes (channel,) or (channel, y, x)"
            )
        below, _ = model.split(params.layer)
        return f"{params.layer}{list(index)}", below, index

    def optimise(self, params: Any, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Run the projected gradient ascent.

        Returns
        -------
        window : numpy.ndarray
            (history, y, x) float32, z-scored contrast, ``||window|| <= norm``.
        values : dict
            ``init`` and ``final`` target values (the target's units: Hz for a cell), ``norm`` (the
            bound) and ``label`` (what was maximised).
        """
        import torch

        model = self._model()
        label, module, index = self.target(params)
        shape = (model.history, *grid_shape(params))
        bound = params.norm if params.norm is not None else DEFAULT_RMS * math.sqrt(float(np.prod(shape)))
        rng = chunk_rng(seed, _STREAM, 0)
        init = rng.standard_normal(shape)
        init *= _INIT_FRACTION * bound / max(float(np.linalg.norm(init)), 1e-12)
        device = model.device
        x = torch.tensor(init[None], dtype=torch.float32, device=device, requires_grad=True)
        was_training = module.training
        module.eval()
        opt = torch.optim.Adam([x], lr=params.lr)

        def value() -> Any:
            return module(x)[(0, *index)]

        try:
            with torch.no_grad():
                start = float(value())
            for _ in range(params.steps):
                (grad,) = torch.autograd.grad(value(), x)
                x.grad = -grad  # Adam minimises
                opt.step()
                with torch.no_grad():  # projection onto the norm ball
                    norm = torch.linalg.vector_norm(x)
                    if norm > bound:
                        x.mul_(bound / norm)
            with torch.no_grad():
                final = float(value())
        finally:
            module.train(was_training)
        window = x.detach()[0].cpu().numpy().astype(np.float32)
        if not np.isfinite(window).all():
            raise ParameterError(
                "stimulus.lr", f"got {params.lr:g}: the ascent on {label} diverged; use a smaller step size"
            )
        return window, {"init": start, "final": final, "norm": float(bound), "label": label}

    def render(self, params: Any, seed: int) -> xr.Dataset:
        model = self._model()
        dt = params.frame_period_s
        window, values = self.optimise(params, seed)
        n_pre, n_post = n_frames(params.pre_s, dt), n_frames(params.post_s, dt)
        ny, nx = grid_shape(params)
        movie = np.zeros((n_pre + model.history + n_post, ny, nx), dtype=np.float32)
        movie[n_pre : n_pre + model.history] = window
        label = str(values["label"])
        return assemble(
            params,
            movie,
            n_pre,
            events={
                "mei_onset": event(0.0, "s", "first frame of the MEI window"),
                "mei_response_time": event((model.history - 1) * dt, "s", "time whose model window is exactly the MEI"),
            },
            description=(
                f"most exciting input of {label} of model {model.name!r}: {params.steps} Adam steps under an L2 "
                f"norm of {values['norm']:.4g}, played once between grey"
            ),
            reference="Walker et al. 2019, Nat. Neurosci. 22:2060 (MEIs); Hoefling et al. 2024, eLife (openretina)",
            mei_target=label,
            mei_model=str(model.name),
            mei_norm=float(values["norm"]),
            mei_value_initial=float(values["init"]),
            mei_value=float(values["final"]),
        )
