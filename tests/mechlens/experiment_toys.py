"""Toy stimulus, attributor, reducer and experiments for the core tests of experiments, figures and report.

They satisfy the schema of docs/contract.md without any plugin installed; they make no scientific claim.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr

from mechlens import hookimpl
from mechlens.interfaces import Attributor, Experiment, Reducer, Stimulus
from mechlens.parameters import param
from mechlens.registry import Registry
from mechlens.schema import grid_coords, time_coord
from mechlens.toymodels import ToyCNN, ToyNoise


class ToyFlash(Stimulus):
    """A full-field dark flash on a small grid (for tests)."""

    name = "toy-flash"

    @dataclass(frozen=True)
    class Parameters:
        intensity: float | list[float] = param(1.0, "flash depth", min=0, sweepable=True)
        size: int = param(12, "pixels per side", min=1)
        pre_frames: int = param(5, "history frames", min=0)
        frames: int = param(30, "frames after time 0", min=1)

    def render(self, params: Any, seed: int) -> xr.Dataset:
        n = params.pre_frames + params.frames
        movie = np.zeros((n, params.size, params.size), np.float32)
        movie[params.pre_frames + 5 : params.pre_frames + 8] = -params.intensity
        coords = {"time": time_coord(n, 0.01, -params.pre_frames * 0.01)}
        coords.update(grid_coords(params.size, params.size, 55.0))
        return xr.Dataset(
            {"stimulus": (("time", "y", "x"), movie), "flash_onset": ((), 0.05, {"units": "s"})},
            coords=coords,
            attrs={"frame_period_s": 0.01, "pre_s": params.pre_frames * 0.01},
        )


class ToyAttributor(Attributor):
    """Splits each response change over channels in proportion to |z - z0| (complete by construction; a toy)."""

    name = "toy-share"

    def attribute(self, model: Any, stimulus: xr.Dataset, layer: str | None = None, cells: Any = None) -> xr.Dataset:
        layer = model.check_layer(layer)
        below, above = model.split(layer)
        movie = stimulus["stimulus"]
        conds = range(movie.sizes["condition"]) if "condition" in movie.dims else [None]
        cells = list(cells) if cells is not None else list(model.cells)
        idx = [model.cells.index(c) for c in cells]
        outs, resp = [], []
        with torch.no_grad():
            zero = torch.zeros((1, model.history, *model.input_shape))
            z0 = below(zero)
            r0 = above(z0)[0, idx].numpy()
            for i in conds:
                m = movie if i is None else movie.isel(condition=i)
                m.attrs["frame_period_s"] = stimulus.attrs["frame_period_s"]
                z = below(model.windows(m).contiguous())
                r = above(z)[:, idx].numpy()
                share = (z - z0).abs().sum((2, 3)).numpy()
                share = share / np.maximum(share.sum(1, keepdims=True), 1e-12)
                outs.append((r - r0)[:, :, None] * share[:, None, :])
                resp.append(r)
        t = model.time_of_outputs(movie)
        dims: tuple[str, ...] = ("time", "cell", "unit_channel")
        a, rr = np.stack(outs), np.stack(resp)
        if conds == [None]:
            a, rr = a[0], rr[0]
        else:
            dims = ("condition", *dims)
        coords: dict[str, Any] = {"time": t, "cell": cells, "unit_channel": np.arange(a.shape[-1])}
        if "condition" in dims:
            coords["condition"] = movie["condition"]
        ds = xr.Dataset(
            {
                "attribution": (dims, a.astype(np.float32), {"layer": layer, "units": "Hz", "path": "toy"}),
                "response": (dims[:-1], rr.astype(np.float32), {"units": "Hz"}),
                "baseline_response": ("cell", r0.astype(np.float32), {"units": "Hz"}),
            },
            coords=coords,
        )
        ds["completeness_error"] = ds["attribution"].sum("unit_channel") - (ds["response"] - ds["baseline_response"])
        return ds


class ToyKeep(Reducer):
    """Keeps the k channels with the largest |attribution| and reruns the model with the others at baseline."""

    name = "toy-keep"

    @dataclass(frozen=True)
    class Parameters:
        k: int = param(2, "channels kept", min=1)

    def reduce(self, attribution: xr.Dataset, model: Any = None) -> xr.Dataset:
        a = attribution["attribution"].dropna("time", how="all")
        mag = np.abs(a).sum([d for d in a.dims if d != "unit_channel"])
        keep = np.sort(np.argsort(-mag.values)[: self.params.k])
        comps = np.zeros((len(keep), a.sizes["unit_channel"]), np.float32)
        comps[np.arange(len(keep)), keep] = 1
        out = xr.Dataset(
            {
                "weights": a.isel(unit_channel=keep).rename(unit_channel="component").drop_vars("component"),
                "components": (("component", "unit_channel"), comps),
            }
        )
        out = out.assign_coords(component=np.arange(len(keep)))
        if model is not None:
            below, above = model.split(attribution["attribution"].attrs.get("layer") or model.default_layer())
            movie = attribution["stimulus"]
            conds = range(movie.sizes["condition"]) if "condition" in movie.dims else [None]
            idx = [model.cells.index(str(c)) for c in a["cell"].values]
            drop = [c for c in range(a.sizes["unit_channel"]) if c not in keep]
            res = []
            with torch.no_grad():
                z0 = below(torch.zeros((1, model.history, *model.input_shape)))
                for i in conds:
                    m = movie if i is None else movie.isel(condition=i)
                    z = below(model.windows(m).contiguous())
                    z[:, drop] = z0[:, drop]
                    res.append(above(z)[:, idx].numpy())
            arr = res[0] if conds == [None] else np.stack(res)
            out["reduced_response"] = (a.dims[:-1], arr.astype(np.float32))
        return out


class ToyFlashExperiment(Experiment):
    """A toy flash-intensity sweep on the toy CNN."""

    name = "toy-flash-sweep"
    model = "toy-cnn"
    stimulus = "toy-flash"
    stimulus_params = {"intensity": [0.5, 1.0, 2.0]}  # noqa: RUF012
    attributor = "toy-share"
    reducer = "toy-keep"
    cells = 2
    window = (0.05, 0.2)
    window_doc = "the 150 ms after the flash"
    title = "Toy flash sweep"
    reference = "none (a test)"

    def measure(self, result: xr.Dataset) -> xr.Dataset:
        resp = result["response"].where(result["in_window"].astype(bool))
        peak = resp.max("time")
        result["measure_peak"] = peak.assign_attrs(units="Hz", long_name="peak rate in window")
        slope = float(np.polyfit(result["condition"].values, peak.mean("cell").values, 1)[0])
        result.attrs.update(
            measure_name="peak slope", measure_value=slope, measure_units="Hz", measure_target="any", measure_pass=1
        )
        return result


class ToyNoiseExperiment(Experiment):
    """Toy noise, prediction and attribution only (no reducer)."""

    name = "toy-noise-run"
    model = "toy-cnn"
    stimulus = "toy-noise"
    attributor = "toy-share"


class BrokenExperiment(Experiment):
    """An experiment whose stimulus parameter is wrong (it must fail alone)."""

    name = "toy-broken"
    model = "toy-cnn"
    stimulus = "toy-noise"
    stimulus_params = {"contrast": -1.0}  # noqa: RUF012


def toy_registry(*experiments: type[Experiment]) -> Registry:
    """A registry holding the toy plugins and the given experiments (nothing from entry points)."""
    chosen = experiments or (ToyFlashExperiment, ToyNoiseExperiment)

    plugin = types.SimpleNamespace(
        mechlens_models=hookimpl(lambda: [ToyCNN]),
        mechlens_stimuli=hookimpl(lambda: [ToyNoise, ToyFlash]),
        mechlens_attributors=hookimpl(lambda: [ToyAttributor]),
        mechlens_reducers=hookimpl(lambda: [ToyKeep]),
        mechlens_experiments=hookimpl(lambda: list(chosen)),
    )
    reg = Registry(autoload=False)
    reg.register(plugin, name="toys", distribution="toy-dist", version="0.1")
    return reg
