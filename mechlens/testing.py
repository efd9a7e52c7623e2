"""Conformance kit: run a plugin through the mechlens contract in your own tests.

The contract is a list of named checks (declared parameters, output schema, determinism under a seed,
the netCDF round trip, and what each kind of plugin owes: completeness for an attributor, a split that
recomposes the module for a model, ...). In a pytest suite, make each check a test of its own, so that
one failing check hides none of the others::

    from mechlens.testing import parametrize_with_checks

    @parametrize_with_checks([MyStimulus, MyStimulus(speed_um_s=[-440.0, 440.0])])
    def test_conforms(check):
        check()

reports ``test_conforms[MyStimulus-check_stimulus_deterministic]`` and so on, one test per check and
plugin. ``expected_failures={"check_name": "why"}`` marks checks a plugin is known to fail (pytest
``xfail``, strict: a check that starts passing is reported too). :func:`checks_for` gives the same
checks as ``(name, check)`` pairs for any other runner.

The entry points :func:`check_stimulus`, :func:`check_model`, :func:`check_attributor`,
:func:`check_reducer` and :func:`check_parameters` run every check of a plugin and raise one
``AssertionError`` naming each check that failed, with its message; they return the Dataset the plugin
produced, so a test can go on to check the physics.

Why one file
------------
The kit is one public API (``from mechlens.testing import ...``) whose checks share one machinery
(subjects that make each output once, named checks, the pytest parametrisation); a plugin author reads
the checks of their kind next to that machinery. Each kind's checks are a short block of functions.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import xarray as xr

from mechlens import io, schema
from mechlens.errors import ParameterError
from mechlens.interfaces import Attributor, Grid, Model, Plugin, Reducer, Stimulus
from mechlens.parameters import specs

__all__ = [
    "CHECK_GRID",
    "Check",
    "assert_round_trip",
    "check_attributor",
    "check_model",
    "check_parameters",
    "check_reducer",
    "check_stimulus",
    "checks_for",
    "merged",
    "noise_stimulus",
    "parametrize_with_checks",
]

#: the model grid a stimulus is checked on (``check_stimulus_on_grid``): not square, 30 frames per
#: second, 7 frames of history and 50 um pixels, unlike any stimulus's own defaults
CHECK_GRID = Grid((14, 12), 1 / 30, 7, 50.0)

_KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])


class Check(NamedTuple):
    """One named conformance check of one plugin (from :func:`checks_for`).

    Attributes
    ----------
    name : str
        The check's name (``"check_stimulus_deterministic"``), the same for every plugin of a kind:
        the key of ``expected_failures`` in :func:`parametrize_with_checks`.
    run : callable
        Runs the check: returns None, or raises (``AssertionError`` saying what broke, or the error the
        plugin raised).
    """

    name: str
    run: Callable[[], None]


# -- shared helpers ------------------------------------------------------------------------------------


def assert_round_trip(ds: xr.Dataset) -> xr.Dataset:
    """Save with :func:`mechlens.io.save`, load with :func:`mechlens.io.load`, and compare (float32 tolerance)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "round_trip.nc"
        io.save(ds, path)
        back = io.load(path)
    for name in ds.data_vars:
        assert name in back.data_vars, f"variable {name!r} was lost in the netCDF round trip"
        a, b = ds[name], back[name]
        assert a.dims == b.dims, f"variable {name!r} changed dims in the round trip: {a.dims} -> {b.dims}"
        if a.dtype.kind == "f":
            np.testing.assert_allclose(
                b.values,
                a.values,
                rtol=1e-6,
                atol=1e-6 * (np.nanmax(np.abs(a.values)) or 1.0),
                err_msg=f"variable {name!r} changed in the netCDF round trip",
            )
        elif a.dtype.kind in "iub":
            np.testing.assert_array_equal(b.values, a.values, err_msg=f"variable {name!r} changed in the round trip")
    for name in ds.coords:
        assert name in back.coords, f"coord {name!r} was lost in the netCDF round trip"
    return back


def _assert_same(a: xr.Dataset, b: xr.Dataset, what: str, second: str = "two identical calls") -> None:
    for name in a.data_vars:
        assert name in b.data_vars, f"{what}: variable {name!r} missing from {second}"
        assert a[name].dims == b[name].dims, f"{what}: variable {name!r} has dims {b[name].dims} in {second}"
        if a[name].dtype.kind in "fiub":
            np.testing.assert_allclose(
                a[name].values,
                b[name].values,
                rtol=1e-6,
                atol=1e-9,
                equal_nan=True,
                err_msg=f"{what}: variable {name!r} differs between {second}",
            )


def _each(items: Sequence[_T], check: Callable[[_T], None]) -> None:
    """Run ``check`` on every item; raise one AssertionError with the message of every item that failed."""
    messages = []
    for item in items:
        try:
            check(item)
        except AssertionError as e:
            messages.append(str(e).strip())
    if messages:
        raise AssertionError("\n".join(messages))


def noise_stimulus(model: Model, n_times: int = 24, seed: int = 0, contrast: float = 1.0) -> xr.Dataset:
    """Gaussian white noise on a model's grid, with exactly the history it needs before time 0."""
    rng = np.random.default_rng(seed)
    h, (ny, nx) = model.history, model.input_shape
    n = n_times + h - 1
    movie = (rng.standard_normal((n, ny, nx)) * contrast).astype(np.float32)
    coords: dict[str, Any] = {"time": schema.time_coord(n, model.frame_period_s, -(h - 1) * model.frame_period_s)}
    pixel = getattr(model, "pixel_um", None)
    coords.update(schema.grid_coords(ny, nx, 55.0 if pixel is None else float(pixel)))
    stim = xr.DataArray(movie, dims=("time", "y", "x"), coords=coords, attrs={"units": "1", "long_name": "contrast"})
    return xr.Dataset(
        {"stimulus": stim},
        attrs={"frame_period_s": model.frame_period_s, "pre_s": (h - 1) * model.frame_period_s},
    )


def merged(stimulus: xr.Dataset, attribution: xr.Dataset) -> xr.Dataset:
    """The stimulus and attribution Datasets merged as the pipeline hands them to a reducer."""
    from mechlens.pipeline import merge

    return merge([stimulus, attribution])


class _Once:
    """A value made on first use and kept; or the error making it raised, raised again at every use.

    The checks of one plugin share its outputs (one ``generate``, one ``attribute`` call), each made
    only when the first check that needs it runs: collecting the tests stays cheap.
    """

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None

    def __call__(self) -> Any:
        if not self._done:
            try:
                self._value = self._make()
            except Exception as e:  # noqa: BLE001 - kept and raised again by every check that needs it
                self._error = e
            self._done = True
        if self._error is not None:
            raise self._error
        return self._value


def _given(value: Any, kind: type) -> Callable[[], Any]:
    """A context value (``model``, ``stimulus``, ``attribution``) given as itself or as a function making it."""
    if value is None or isinstance(value, kind) or not callable(value):
        return lambda: value
    return _Once(value)


# -- the checks ----------------------------------------------------------------------------------------
# A subject holds one plugin and what its checks need; each check is a function of the subject.


class _Subject:
    """A plugin class with its parameters, and the checks every kind of plugin gets (its declaration)."""

    kind = "plugin"
    #: context arguments of :func:`checks_for` this kind of plugin takes
    takes: frozenset[str] = frozenset()

    def __init__(self, cls: type[Plugin], params: Mapping[str, Any] | None) -> None:
        self.cls = cls
        self.params = dict(params or {})
        self.what = f"{self.kind} {getattr(cls, 'name', '')!r}"

    @property
    def label(self) -> str:
        """How test ids name the plugin: its class, and the parameters it is checked with (cut at 40 characters)."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        if len(args) > 40:  # ids stay readable; pytest numbers any that end up the same
            args = args[:37] + "..."
        return f"{self.cls.__name__}({args})" if args else self.cls.__name__

    def make(self) -> Any:
        return self.cls(**self.params)

    def checks(self) -> list[Check]:
        return [Check(name, _Bound(name, fn, self)) for name, fn in self._checks()]

    def _checks(self) -> list[tuple[str, Callable[[Any], object]]]:
        return [
            ("check_name", _check_name),
            ("check_docstring", _check_docstring),
            ("check_parameters_dataclass", _check_parameters_dataclass),
            ("check_parameters_documented", _check_parameters_documented),
        ]


class _Bound:
    """A check function bound to its subject: ``check()`` runs it."""

    def __init__(self, name: str, fn: Callable[[Any], object], subject: _Subject) -> None:
        self.name, self.fn, self.subject = name, fn, subject

    def __call__(self) -> None:
        self.fn(self.subject)

    def __repr__(self) -> str:
        return f"<{self.name} of {self.subject.label}>"


def _check_name(s: _Subject) -> None:
    """The registry name is kebab-case."""
    name = getattr(s.cls, "name", None)
    assert isinstance(name, str) and _KEBAB.match(name), (
        f"{s.cls.__qualname__}.name must be kebab-case (e.g. 'moving-bar'), got {name!r}"
    )


def _check_docstring(s: _Subject) -> None:
    """The class has a docstring (``mechlens list`` shows its first line)."""
    assert (s.cls.__doc__ or "").strip(), f"{s.cls.__qualname__} needs a docstring (shown by mechlens list)"


def _check_parameters_dataclass(s: _Subject) -> None:
    """``Parameters`` is a frozen dataclass."""
    params = s.cls.Parameters
    assert dataclasses.is_dataclass(params), f"{s.cls.__qualname__}.Parameters must be a dataclass"
    frozen = getattr(params, "__dataclass_params__", None)
    assert frozen is not None and frozen.frozen, (
        f"{s.cls.__qualname__}.Parameters must be frozen (@dataclass(frozen=True))"
    )


def _check_parameters_documented(s: _Subject) -> None:
    """Every parameter has a doc and a default (all missing ones are named)."""
    params = s.cls.Parameters
    assert dataclasses.is_dataclass(params), f"{s.cls.__qualname__}.Parameters must be a dataclass"

    def documented(spec: Any) -> None:
        where = f"{s.cls.__qualname__}.Parameters.{spec.name}"
        assert spec.doc, f"{where} has no doc; declare it with mechlens.parameters.param"
        assert spec.default is not dataclasses.MISSING, f"{where} has no default"

    _each(specs(params), documented)


class _StimulusSubject(_Subject):
    kind = "stimulus"
    takes = frozenset({"params", "seed"})

    def __init__(self, cls: type[Stimulus], params: Mapping[str, Any] | None, seed: int) -> None:
        super().__init__(cls, params)
        self.seed = seed
        self.ds = _Once(lambda: self.make().generate(seed))
        self.again = _Once(lambda: self.make().generate(seed))

    def _checks(self) -> list[tuple[str, Callable[[Any], object]]]:
        return [
            *super()._checks(),
            ("check_stimulus_schema", _stimulus_schema),
            ("check_stimulus_history_attrs", _stimulus_history_attrs),
            ("check_stimulus_time_coord", _stimulus_time_coord),
            ("check_stimulus_movie", _stimulus_movie),
            ("check_stimulus_deterministic", _stimulus_deterministic),
            ("check_stimulus_round_trip", lambda s: assert_round_trip(s.ds())),
            ("check_stimulus_on_grid", _stimulus_on_grid),
        ]


def _stimulus_schema(s: _StimulusSubject) -> None:
    schema.validate(s.ds(), "stimulus", s.what)


def _stimulus_history_attrs(s: _StimulusSubject) -> None:
    attrs = s.ds().attrs
    assert "pre_s" in attrs, f"{s.what} must state its history in attrs['pre_s'] (seconds)"
    assert "frame_period_s" in attrs, f"{s.what} must state attrs['frame_period_s'] (seconds)"
    assert float(attrs["frame_period_s"]) > 0, f"{s.what}: frame_period_s must be > 0"


def _stimulus_time_coord(s: _StimulusSubject) -> None:
    ds = s.ds()
    assert "pre_s" in ds.attrs and "frame_period_s" in ds.attrs, (
        f"{s.what}: the time coord is checked against attrs 'pre_s' and 'frame_period_s', which are missing"
    )
    period = float(ds.attrs["frame_period_s"])
    t = ds["time"].values
    np.testing.assert_allclose(np.diff(t), period, rtol=1e-6, err_msg=f"{s.what}: time steps != frame period")
    np.testing.assert_allclose(
        t[0], -float(ds.attrs["pre_s"]), atol=period * 1e-3, err_msg=f"{s.what}: time must start at -pre_s"
    )


def _stimulus_movie(s: _StimulusSubject) -> None:
    movie = s.ds()["stimulus"]
    assert movie.dtype == np.float32, f"{s.what}: movie must be float32, got {movie.dtype}"
    assert np.isfinite(movie.values).all(), f"{s.what}: movie has non-finite values"


def _stimulus_deterministic(s: _StimulusSubject) -> None:
    _assert_same(s.ds(), s.again(), f"{s.what} with seed {s.seed}")


def _stimulus_on_grid(s: _StimulusSubject) -> None:
    """Given a model's grid (:data:`CHECK_GRID`), the stimulus renders on it: shape, frame period, pixels, history.

    With its defaults it must; with explicit parameters it may instead refuse the grid with a
    ParameterError naming the parameter that conflicts.
    """
    grid = CHECK_GRID
    try:
        ds = s.make().generate(s.seed, grid)
    except ParameterError:
        if s.params:
            return  # an explicit value that contradicts the grid, refused by name
        raise
    where = f"{s.what} given the grid {grid.describe()}"
    hint = "; follow the grid in Stimulus.on_grid (docs/plugin-authoring.md)"
    shape = (ds.sizes.get("y"), ds.sizes.get("x"))
    assert shape == grid.shape, f"{where}: the movie is {shape[0]}x{shape[1]} px{hint}"
    period = float(ds.attrs.get("frame_period_s", np.nan))
    assert np.isclose(period, grid.frame_period_s, rtol=1e-6), f"{where}: frame_period_s is {period:g} s{hint}"
    np.testing.assert_allclose(
        np.diff(ds["time"].values), grid.frame_period_s, rtol=1e-6, err_msg=f"{where}: time steps != frame period"
    )
    before = int(np.sum(ds["time"].values < -1e-9))
    assert before >= grid.history - 1, (
        f"{where}: {before} frames before time 0, fewer than the {grid.history - 1} the model needs to answer "
        f"at time 0{hint}"
    )
    step = float(np.diff(ds["x"].values).mean())
    assert np.isclose(step, float(grid.pixel_um or 0), rtol=1e-6), f"{where}: pixels are {step:g} um apart{hint}"
    schema.validate(ds, "stimulus", where)


class _ModelSubject(_Subject):
    kind = "model"
    takes = frozenset({"params", "stimulus", "atol"})

    def __init__(
        self,
        model: Model | type[Model],
        params: Mapping[str, Any] | None,
        stimulus: xr.Dataset | Callable[[], xr.Dataset] | None,
        atol: float,
    ) -> None:
        cls = model if isinstance(model, type) else type(model)
        super().__init__(cls, params)
        self.atol = atol
        if not isinstance(model, type):
            self.what = f"model {model.name!r}"
        # an instance is checked as it is (a model may hold state its parameters do not describe)
        self.model = _Once(self.make if isinstance(model, type) else lambda: model)
        given = _given(stimulus, xr.Dataset)
        self.stimulus = _Once(lambda: given() if stimulus is not None else noise_stimulus(self.model()))
        self.batch = _Once(self._batch)
        self.full = _Once(self._full)
        self.out = _Once(lambda: self.model().predict(self.stimulus()))
        self.again = _Once(lambda: self.model().predict(self.stimulus()))

    def _batch(self) -> Any:
        stim = self.stimulus()
        movie = stim["stimulus"] if "condition" not in stim["stimulus"].dims else stim["stimulus"].isel(condition=0)
        return self.model().windows(movie)[:4].contiguous()

    def _full(self) -> Any:
        import torch

        module = self.model().torch_module()
        module.eval()
        with torch.no_grad():
            return module(self.batch())

    def _checks(self) -> list[tuple[str, Callable[[Any], object]]]:
        return [
            *super()._checks(),
            ("check_model_grid_declared", _model_grid_declared),
            ("check_model_cells", _model_cells),
            ("check_model_layers_declared", _model_layers_declared),
            ("check_model_output_shape", _model_output_shape),
            ("check_model_layers_reachable", _model_layers_reachable),
            ("check_model_layer_shapes", _model_layer_shapes),
            ("check_model_split_recomposes", _model_split_recomposes),
            ("check_model_layers_attributable", _model_layers_attributable),
            ("check_model_response_schema", lambda s: schema.validate(s.out(), "response", s.what)),
            ("check_model_response_cells_and_times", _model_response_cells_and_times),
            ("check_model_rates", _model_rates),
            ("check_model_deterministic", lambda s: _assert_same(s.out(), s.again(), f"{s.what} predict")),
            ("check_model_round_trip", lambda s: assert_round_trip(s.out())),
        ]


def _model_grid_declared(s: _ModelSubject) -> None:
    model = s.model()
    missing = [name for name in ("history", "frame_period_s", "input_shape") if not hasattr(model, name)]
    assert not missing, f"{s.what} sets no {', '.join(missing)}; a model states its grid (docs/contract.md, 'Kinds')"
    grid = model.grid  # a Grid validates itself: >= 1 pixel per side, history >= 1, a period > 0
    assert isinstance(model.signed, bool), f"{s.what}: signed must be True or False, got {model.signed!r}"
    assert tuple(s.batch().shape[1:]) == (grid.history, *grid.shape), (
        f"{s.what}: windows have shape {tuple(s.batch().shape[1:])}, the grid says {(grid.history, *grid.shape)}"
    )


def _model_cells(s: _ModelSubject) -> None:
    cells = list(s.model().cells)
    assert cells and all(isinstance(c, str) for c in cells), f"{s.what}: cells must be a list of str ids"
    assert len(set(cells)) == len(cells), f"{s.what}: cell ids must be unique"


def _model_layers_declared(s: _ModelSubject) -> None:
    assert s.model().layers(), f"{s.what} declares no attributable layers"


def _model_output_shape(s: _ModelSubject) -> None:
    full, n = s.full(), len(s.model().cells)
    assert tuple(full.shape) == (s.batch().shape[0], n), (
        f"{s.what}: module output shape {tuple(full.shape)}, expected (batch, {n})"
    )


def _model_layer_shapes(s: _ModelSubject) -> None:
    import torch

    def layer_shape(item: tuple[str, tuple[int, ...]]) -> None:
        layer, shape = item
        with torch.no_grad():
            z = s.model().split(layer)[0](s.batch())
        assert tuple(z.shape[1:]) == tuple(shape), (
            f"{s.what}: layer {layer!r} has shape {tuple(z.shape[1:])}, layers() says {shape}"
        )

    _each(list(s.model().layers().items()), layer_shape)


def _model_split_recomposes(s: _ModelSubject) -> None:
    import torch

    full = s.full()

    def recomposes(layer: str) -> None:
        below, above = s.model().split(layer)
        with torch.no_grad():
            back = above(below(s.batch()))
        assert tuple(back.shape) == tuple(full.shape), (
            f"{s.what}: above(below(x)) != module(x) for layer {layer!r}: shape {tuple(back.shape)}, "
            f"expected {tuple(full.shape)}"
        )
        np.testing.assert_allclose(
            back.numpy(),
            full.numpy(),
            rtol=1e-4,
            atol=s.atol,
            err_msg=f"{s.what}: above(below(x)) != module(x) for layer {layer!r}",
        )

    _each(list(s.model().layers()), recomposes)


def _model_layers_reachable(s: _ModelSubject) -> None:
    import torch

    model = s.model()

    def reachable(layer: str) -> None:
        if model.split_by_hooks():
            # what the default split and the hook-patched lesions need: a submodule, run once, one tensor out
            sub = model.layer_module(layer)
            assert isinstance(sub, torch.nn.Module), f"{s.what}: layer_module({layer!r}) is not a torch module"
            assert any(m is sub for m in model.torch_module().modules()), (
                f"{s.what}: layer_module({layer!r}) is not a submodule of torch_module()"
            )
        parts = model.split(layer)
        assert len(parts) == 2 and all(isinstance(p, torch.nn.Module) for p in parts), (
            f"{s.what}: split({layer!r}) must return (below, above), two torch modules"
        )

    _each(list(model.layers()), reachable)


def _model_layers_attributable(s: _ModelSubject) -> None:
    """What every gradient attributor needs of ``above``: the path integral of its gradient is its change.

    Integrated gradients along the straight line from the zero window's activations ``z0`` to ``z``
    (midpoint rule, :data:`ATTRIBUTABLE_STEPS` nodes) must add up to ``above(z) - above(z0)`` per cell
    within 5 % of the largest such change: an ``above`` that detaches, rounds, or reads anything but
    the activations fails.
    """
    import torch

    model = s.model()
    x = s.batch()
    x0 = torch.zeros_like(x[:1])
    n = ATTRIBUTABLE_STEPS

    def complete(layer: str) -> None:
        below, above = model.split(layer)
        with torch.no_grad():
            z, z0 = below(x), below(x0)
            change = (above(z) - above(z0)).double()
        alphas = (torch.arange(n, dtype=z.dtype) + 0.5) / n
        dz = z - z0
        points = (z0 + alphas.view(n, *([1] * z.dim())) * dz.unsqueeze(0)).flatten(0, 1).detach()
        points.requires_grad_(True)
        with torch.enable_grad():
            out = above(points)
            total = torch.zeros_like(change)
            for cell in range(out.shape[1]):
                (g,) = torch.autograd.grad(out[:, cell].sum(), points, retain_graph=cell < out.shape[1] - 1)
                g = g.view(n, *z.shape).mean(0)
                total[:, cell] = (g * dz).flatten(1).sum(1).double()
        scale = float(change.abs().max())
        gap = float((total - change).abs().max())
        assert np.isfinite(gap) and gap <= 0.05 * scale + 1e-6, (
            f"{s.what}: at layer {layer!r} the gradient of above integrated from the zero window's activations "
            f"misses above(z) - above(z0) by {gap:.3g} (the largest change is {scale:.3g}); attributors need "
            "above to be differentiable in the activations alone (no detach, no rounding, no input but them)"
        )

    _each(list(model.layers()), complete)


#: midpoint nodes of ``check_model_layers_attributable``
ATTRIBUTABLE_STEPS = 64


def _model_response_cells_and_times(s: _ModelSubject) -> None:
    resp = s.out()["response"]
    assert list(resp["cell"].values) == list(s.model().cells), f"{s.what}: response cells differ from model.cells"
    expected_t = s.stimulus()["time"].values[s.model().history - 1 :]
    np.testing.assert_allclose(resp["time"].values, expected_t, err_msg=f"{s.what}: response times")


def _model_rates(s: _ModelSubject) -> None:
    rates = s.out()["response"].values
    assert np.isfinite(rates).all(), f"{s.what}: non-finite rates"
    if not s.model().signed:  # calcium dF/F and signed models declare signed = True
        assert (rates >= 0).all(), (
            f"{s.what}: negative rates (Hz); a model whose output may be negative sets signed = True"
        )


class _AttributorSubject(_Subject):
    kind = "attributor"
    takes = frozenset({"params", "model", "stimulus", "layer", "completeness_rtol"})

    def __init__(
        self,
        cls: type[Attributor],
        params: Mapping[str, Any] | None,
        model: Model | Callable[[], Model],
        stimulus: xr.Dataset | Callable[[], xr.Dataset] | None,
        layer: str | None,
        completeness_rtol: float,
    ) -> None:
        super().__init__(cls, params)
        self.layer = layer
        self.completeness_rtol = completeness_rtol
        self.model = _given(model, Model)
        given = _given(stimulus, xr.Dataset)
        self.stimulus = _Once(lambda: given() if stimulus is not None else noise_stimulus(self.model()))
        self.attributor = _Once(self.make)
        self.ds = _Once(lambda: self.attributor().attribute(self.model(), self.stimulus(), layer, None))
        self.one = _Once(lambda: [self.model().cells[-1]])
        self.sub = _Once(lambda: self.attributor().attribute(self.model(), self.stimulus(), layer, self.one()))
        self.again = _Once(lambda: self.make().attribute(self.model(), self.stimulus(), layer, None))
        self.predicted = _Once(lambda: self.model().predict(self.stimulus()))

    def _checks(self) -> list[tuple[str, Callable[[Any], object]]]:
        return [
            *super()._checks(),
            ("check_attributor_schema", lambda s: schema.validate(s.ds(), "attribution", s.what)),
            ("check_attributor_layer_named", _attributor_layer_named),
            ("check_attributor_cells", _attributor_cells),
            ("check_attributor_response_matches_model", _attributor_response),
            ("check_attributor_completeness_error_defined", _attributor_completeness_error_defined),
            ("check_attributor_completeness", _attributor_completeness),
            ("check_attributor_cell_selection", _attributor_cell_selection),
            ("check_attributor_deterministic", lambda s: _assert_same(s.ds(), s.again(), s.what)),
            ("check_attributor_round_trip", lambda s: assert_round_trip(s.ds())),
            ("check_attributor_parts", _attributor_parts),
        ]


def _attributor_parts(s: _AttributorSubject) -> None:
    """An attributor that can be split (``attribute_part`` and ``shard_dims``) gives, merged, what one call does.

    Split as :mod:`mechlens.distributed` splits a run: along every dim in ``shard_dims`` (conditions,
    3 time groups, 2 cell groups), each part computed with the shared context, the pieces merged
    with :func:`mechlens.distributed.merge_parts`. An attributor that cannot be split passes.
    """
    from mechlens import distributed

    a, model, stimulus = s.attributor(), s.model(), s.stimulus()
    dims = distributed.split_dims(a)
    if not dims:
        return
    n_cells = len(model.cells)
    groups = 2 if "cell" in dims and n_cells > 1 else 1
    parts = distributed.plan(a, stimulus, 3 * groups, cell_groups=groups, n_cells=n_cells)
    context = distributed.shared_context(a, model, stimulus, s.layer, None, parts)
    pieces = [
        a.attribute(model, stimulus, s.layer, None)
        if p.whole
        else a.attribute_part(model, stimulus, s.layer, None, p.spec(context))
        for p in parts
    ]
    merged = distributed.merge_parts(pieces)
    split = f"its {len(parts)} parts along {list(dims)} merged (mechlens.distributed; docs/scale-out.md)"
    _assert_same(s.ds(), merged, s.what, second=f"one call and {split}")
    assert list(merged["cell"].values) == list(s.ds()["cell"].values), f"{s.what}: cells out of order in {split}"


def _attributor_layer_named(s: _AttributorSubject) -> None:
    assert s.ds()["attribution"].attrs.get("layer") == (s.layer or s.model().default_layer()), (
        f"{s.what}: attribution.attrs['layer'] must name the attributed layer"
    )


def _attributor_cells(s: _AttributorSubject) -> None:
    assert list(s.ds()["cell"].values) == list(s.model().cells), f"{s.what}: cells differ from the model's"


def _attributor_response(s: _AttributorSubject) -> None:
    ds = s.ds()
    pred = s.predicted()["response"].sel(time=ds["time"])
    np.testing.assert_allclose(
        ds["response"].values,
        pred.values,
        rtol=1e-4,
        atol=1e-4,
        err_msg=f"{s.what}: response differs from model.predict",
    )


def _attributor_completeness_error_defined(s: _AttributorSubject) -> None:
    ds = s.ds()
    attr = ds["attribution"]
    summed = attr.sum([d for d in attr.dims if str(d).startswith("unit_")])
    recomputed = summed - (ds["response"] - ds["baseline_response"])
    np.testing.assert_allclose(
        ds["completeness_error"].values,
        recomputed.values,
        rtol=1e-4,
        atol=1e-4,
        err_msg=f"{s.what}: completeness_error is not sum(A) - (r - r0)",
    )


def _attributor_completeness(s: _AttributorSubject) -> None:
    ds = s.ds()
    span = float(np.ptp(ds["response"].values)) or 1.0
    worst = float(np.abs(ds["completeness_error"].values).max()) / span
    assert worst <= s.completeness_rtol, (
        f"{s.what}: completeness error {worst:.2e} of the response range exceeds {s.completeness_rtol}"
    )


def _attributor_cell_selection(s: _AttributorSubject) -> None:
    sub, one = s.sub(), s.one()
    assert list(sub["cell"].values) == one, f"{s.what}: cells=[{one[0]!r}] not honoured"
    np.testing.assert_allclose(
        sub["attribution"].values,
        s.ds()["attribution"].sel(cell=one).values,
        rtol=1e-4,
        atol=1e-5,
        err_msg=f"{s.what}: attributing one cell differs from all cells",
    )


class _ReducerSubject(_Subject):
    kind = "reducer"
    takes = frozenset({"params", "attribution", "model"})

    def __init__(
        self,
        cls: type[Reducer],
        params: Mapping[str, Any] | None,
        attribution: xr.Dataset | Callable[[], xr.Dataset],
        model: Model | Callable[[], Model] | None,
    ) -> None:
        super().__init__(cls, params)
        self.attribution = _given(attribution, xr.Dataset)
        self.with_model = model is not None
        self.model = _given(model, Model)
        self.ds = _Once(lambda: self.make().reduce(self.attribution(), self.model()))
        self.again = _Once(lambda: self.make().reduce(self.attribution(), self.model()))

    def _checks(self) -> list[tuple[str, Callable[[Any], object]]]:
        checks: list[tuple[str, Callable[[Any], object]]] = [
            *super()._checks(),
            ("check_reducer_schema", lambda s: schema.validate(s.ds(), "reduction", s.what)),
            ("check_reducer_components", _reducer_components),
        ]
        if self.with_model:  # the reduced model's response is owed only when a model is given
            checks.append(("check_reducer_reduced_response", _reducer_reduced_response))
        checks += [
            ("check_reducer_deterministic", lambda s: _assert_same(s.ds(), s.again(), s.what)),
            ("check_reducer_round_trip", lambda s: assert_round_trip(s.ds())),
        ]
        return checks


def _reducer_components(s: _ReducerSubject) -> None:
    ds = s.ds()
    assert ds.sizes.get("component", 0) >= 1, f"{s.what}: no components"
    assert ds.sizes.get("unit_channel") == s.attribution().sizes["unit_channel"], (
        f"{s.what}: components must span the attribution's unit_channel"
    )


def _reducer_reduced_response(s: _ReducerSubject) -> None:
    ds = s.ds()
    assert "reduced_response" in ds, f"{s.what}: a model was given but no reduced_response"
    assert np.isfinite(ds["reduced_response"].values).all(), f"{s.what}: non-finite reduced_response"


# -- the public API ------------------------------------------------------------------------------------

_SUBJECTS: list[tuple[type, type[_Subject]]] = [
    (Stimulus, _StimulusSubject),
    (Model, _ModelSubject),
    (Attributor, _AttributorSubject),
    (Reducer, _ReducerSubject),
]


def _subject(
    plugin: type[Plugin] | Plugin,
    *,
    params: Mapping[str, Any] | None = None,
    seed: int | None = None,
    stimulus: xr.Dataset | Callable[[], xr.Dataset] | None = None,
    model: Model | Callable[[], Model] | None = None,
    attribution: xr.Dataset | Callable[[], xr.Dataset] | None = None,
    layer: str | None = None,
    atol: float | None = None,
    completeness_rtol: float | None = None,
) -> _Subject:
    """The subject of ``plugin``'s checks: the plugin and what they need (see :func:`checks_for`)."""
    cls = plugin if isinstance(plugin, type) else type(plugin)
    if not issubclass(cls, Plugin):
        raise TypeError(f"the conformance checks need a mechlens plugin class or instance, got {plugin!r}")
    subject_cls = next((subject for base, subject in _SUBJECTS if issubclass(cls, base)), _Subject)
    context = {
        "params": params,
        "seed": seed,
        "stimulus": stimulus,
        "model": model,
        "attribution": attribution,
        "layer": layer,
        "atol": atol,
        "completeness_rtol": completeness_rtol,
    }
    # an argument that does not apply is a mistake (a reducer's stimulus is in its attribution Dataset)
    extra = sorted(k for k, v in context.items() if v is not None and k not in subject_cls.takes)
    if extra:
        raise TypeError(
            f"the checks of a {subject_cls.kind} ({cls.__name__}) take no {', '.join(extra)} "
            f"(they take: {', '.join(sorted(subject_cls.takes)) or 'nothing'})"
        )
    if not isinstance(plugin, type):
        if params is not None:
            raise TypeError(f"give {cls.__name__} as a class with params, or as an instance, not both")
        if not isinstance(plugin, Model):
            # checked as fresh instances made with its parameters (determinism compares two of them); those
            # that differ from the defaults name it in test ids
            defaults = {spec.name: spec.default for spec in specs(cls.Parameters)}
            values = {f.name: getattr(plugin.params, f.name) for f in dataclasses.fields(plugin.params)}
            params = {k: v for k, v in values.items() if k not in defaults or _differs(v, defaults[k])}
    if subject_cls is _StimulusSubject:
        return _StimulusSubject(cls, params, 0 if seed is None else seed)  # type: ignore[arg-type]
    if subject_cls is _ModelSubject:
        return _ModelSubject(plugin, params, stimulus, 1e-4 if atol is None else atol)  # type: ignore[arg-type]
    if subject_cls is _AttributorSubject:
        if model is None:
            raise TypeError(
                f"the checks of an attributor ({cls.__name__}) need model= (a Model or a function making one)"
            )
        rtol = 1e-2 if completeness_rtol is None else completeness_rtol
        return _AttributorSubject(cls, params, model, stimulus, layer, rtol)  # type: ignore[arg-type]
    if subject_cls is _ReducerSubject:
        if attribution is None:
            raise TypeError(
                f"the checks of a reducer ({cls.__name__}) need attribution= (a Dataset or a function making one)"
            )
        return _ReducerSubject(cls, params, attribution, model)  # type: ignore[arg-type]
    return _Subject(cls, params)


def _differs(a: Any, b: Any) -> bool:
    """Whether a parameter value differs from its default (arrays compare elementwise)."""
    try:
        return bool(np.any(a != b)) if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) else bool(a != b)
    except (TypeError, ValueError):  # shapes that do not broadcast, types that do not compare
        return True


def checks_for(
    plugin: type[Plugin] | Plugin,
    *,
    params: Mapping[str, Any] | None = None,
    seed: int | None = None,
    stimulus: xr.Dataset | Callable[[], xr.Dataset] | None = None,
    model: Model | Callable[[], Model] | None = None,
    attribution: xr.Dataset | Callable[[], xr.Dataset] | None = None,
    layer: str | None = None,
    atol: float | None = None,
    completeness_rtol: float | None = None,
) -> list[Check]:
    """The named conformance checks of a plugin, each ready to run.

    The checks share the plugin's outputs (one ``generate`` or ``attribute`` call, made by the first
    check that needs it and kept), so making the list costs nothing and running them all costs what one
    monolithic check did.

    Parameters
    ----------
    plugin : Plugin class or instance
        A Stimulus, Model, Attributor or Reducer (any other Plugin gets the declaration checks only). An
        instance of a stimulus, attributor or reducer stands for its class with its parameters; a Model
        instance is checked as it is.
    params : mapping, optional
        Parameters to construct the plugin with (with a class).
    seed : int, optional
        Stimulus: the seed of ``generate`` (default 0).
    stimulus : Dataset or callable, optional
        Model, attributor: the stimulus to run on (default :func:`noise_stimulus` on the model's grid).
    model : Model or callable
        Attributor (required): the model to attribute. Reducer: a model, to check ``reduced_response``.
    attribution : Dataset or callable
        Reducer (required): the attribution Dataset to reduce (see :func:`merged`).
    layer : str, optional
        Attributor: the layer (default: the model's default layer).
    atol : float, optional
        Model: absolute tolerance of ``above(below(x)) == module(x)`` (default 1e-4).
    completeness_rtol : float, optional
        Attributor: the largest completeness error allowed, relative to the response range (default 1e-2).

    Returns
    -------
    list of Check
        ``(name, run)`` pairs in a fixed order; ``run()`` raises if the check fails. ``stimulus``,
        ``model`` and ``attribution`` may be given as functions of no arguments that make them (a Model
        class with defaults will do): they are called once, when the first check needing them runs, so
        that collecting tests stays cheap.

    Raises
    ------
    TypeError
        For an argument that the plugin's kind does not take, or a missing required one.
    """
    return _subject(
        plugin,
        params=params,
        seed=seed,
        stimulus=stimulus,
        model=model,
        attribution=attribution,
        layer=layer,
        atol=atol,
        completeness_rtol=completeness_rtol,
    ).checks()


def parametrize_with_checks(
    plugins: Sequence[type[Plugin] | Plugin],
    *,
    expected_failures: Mapping[str, str] | None = None,
    **context: Any,
) -> Callable[[_F], _F]:
    """A pytest decorator: one test per conformance check of each plugin, its argument ``check`` the check.

    ::

        @parametrize_with_checks([ToyNoise, ToyNoise(contrast=[0.5, 1.0])])
        def test_conforms(check):
            check()

    Test ids are ``<plugin>-<check name>`` (the plugin's class, with the parameters it was given).

    Parameters
    ----------
    plugins : sequence of Plugin classes or instances
        Checked with the same ``context``.
    expected_failures : mapping of str to str, optional
        Check name -> why it is expected to fail, for every plugin here: marked ``xfail`` (strict, so
        that a check which starts passing fails the run and the entry gets removed). A name that is not
        one of the plugins' checks is a ``ValueError``.
    **context
        Passed to :func:`checks_for` (``params``, ``seed``, ``stimulus``, ``model``, ``attribution``,
        ``layer``, ``atol``, ``completeness_rtol``).
    """
    import pytest

    expected = dict(expected_failures or {})
    cases, names = [], set()
    for plugin in plugins:
        subject = _subject(plugin, **context)
        for name, run in subject.checks():
            names.add(name)
            marks = [pytest.mark.xfail(reason=expected[name], strict=True)] if name in expected else []
            cases.append(pytest.param(run, id=f"{subject.label}-{name}", marks=marks))
    unknown = sorted(set(expected) - names)
    if unknown:
        raise ValueError(
            f"expected_failures names no check of these plugins: {', '.join(unknown)} "
            f"(their checks: {', '.join(sorted(names))})"
        )
    return pytest.mark.parametrize("check", cases)


def _run_all(subject: _Subject) -> None:
    """Run every check of ``subject``; raise one AssertionError naming each that failed, with its message."""
    failed: list[tuple[str, BaseException]] = []
    for name, run in subject.checks():
        try:
            run()
        except Exception as e:  # noqa: BLE001 - every failure is reported, by check name
            failed.append((name, e))
    if not failed:
        return
    lines = [f"{subject.what} failed {len(failed)} of {len(subject.checks())} conformance checks:"]
    first_seen: dict[int, str] = {}
    for name, error in failed:
        if id(error) in first_seen:  # an output that could not be made fails every check needing it
            lines.append(f"- {name}: the same error as {first_seen[id(error)]}")
            continue
        first_seen[id(error)] = name
        text = str(error).strip() if isinstance(error, AssertionError) else f"{type(error).__name__}: {error}"
        lines.append(f"- {name}: " + text.replace("\n", "\n    "))
    raise AssertionError("\n".join(lines)) from failed[0][1]


def check_parameters(cls: type[Plugin]) -> None:
    """The class has a kebab-case name and a frozen Parameters dataclass, every field documented with a default.

    Runs the declaration checks of :func:`checks_for` (``check_name``, ``check_docstring``,
    ``check_parameters_dataclass``, ``check_parameters_documented``) and raises one ``AssertionError``
    naming every one that failed.
    """
    _run_all(_Subject(cls, None))


def check_stimulus(cls: type[Stimulus], params: Mapping[str, Any] | None = None, seed: int = 0) -> xr.Dataset:
    """Run a Stimulus class through every check of the contract.

    Checks declared parameters, the schema of ``generate``, ``pre_s``/``frame_period_s`` attrs and a
    time coord starting at ``-pre_s``, a finite float32 movie, determinism under a seed, and the netCDF
    round trip; raises one ``AssertionError`` naming every check that failed.

    Returns
    -------
    xarray.Dataset
        The generated stimulus.
    """
    subject = _StimulusSubject(cls, params, seed)
    _run_all(subject)
    return subject.ds()


def check_model(model: Model, stimulus: xr.Dataset | None = None, atol: float = 1e-4) -> xr.Dataset:
    """Run a Model instance through every check of the contract.

    Checks the declared grid, cells and layers, that every layer is reachable (a submodule for the
    hook-based default split, or the model's own split), that ``split(layer)`` recomposes the module
    and gives the declared layer shapes, that the gradient of ``above`` integrates to its change (what
    the attributors need), the response schema (time coords = stimulus times from ``history - 1`` on,
    finite rates, non-negative unless the model is ``signed``), determinism, and the netCDF round trip;
    raises one ``AssertionError`` naming every check that failed.

    Returns
    -------
    xarray.Dataset
        The model's response.
    """
    subject = _ModelSubject(model, None, stimulus, atol)
    _run_all(subject)
    return subject.out()


def check_attributor(
    cls: type[Attributor],
    model: Model,
    stimulus: xr.Dataset | None = None,
    params: Mapping[str, Any] | None = None,
    layer: str | None = None,
    completeness_rtol: float = 1e-2,
) -> xr.Dataset:
    """Run an Attributor class through every check of the contract on a model and stimulus.

    Checks the schema, that ``response`` matches ``model.predict``, that ``completeness_error`` is
    what it says (sum of attributions minus (response - baseline_response)) and small relative to the
    response range, cell selection, determinism, the netCDF round trip and, for an attributor that can
    be split (``attribute_part`` and ``shard_dims``), that its parts merge into one call's result; raises one
    ``AssertionError`` naming every check that failed.

    Returns
    -------
    xarray.Dataset
        The attribution Dataset.
    """
    subject = _AttributorSubject(cls, params, model, stimulus, layer, completeness_rtol)
    _run_all(subject)
    return subject.ds()


def check_reducer(
    cls: type[Reducer],
    attribution: xr.Dataset,
    model: Model | None = None,
    params: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Run a Reducer class through every check of the contract on an attribution Dataset (merged with its stimulus).

    Checks the schema, components over the attribution's unit dims, ``reduced_response`` when a
    model is given, determinism and the netCDF round trip; raises one ``AssertionError`` naming every
    check that failed.

    Returns
    -------
    xarray.Dataset
        The reduction Dataset.
    """
    subject = _ReducerSubject(cls, params, attribution, model)
    _run_all(subject)
    return subject.ds()
