"""Standard figures of a result Dataset, drawn from its variables alone (matplotlib, Agg, no pyplot state).

Every function reads only the names of docs/contract.md plus the experiment conventions of
docs/experiments.md, so ``mechlens report`` can redraw them from saved netCDF files without any
model or plugin:

=====================  ==========================================================================
``stimulus``           the movie: a trace (spatially uniform), a space-time plot (bars) or frames
``response``           the analysed cells' responses; the focus cell across conditions
``attribution``        cell types x time heat map of the focus cell (RdBu_r, symmetric, centred at 0)
``contributions``      the kept cell types' contributions over time against the response change
``reduced``            the reduced model's response over the full model's
``measure``            the phenomenon's ``measure_*`` variables across the sweep
``ground_truth``       a ``gt_attribution`` decomposition beside the model's (when present)
=====================  ==========================================================================

Colours: a cell type (``unit_channel``) has the same colour in every figure of every experiment
(:func:`type_color`); conditions use a sequential map; the time window of interest is shaded.

Why one file (680 lines): every standard figure is a short function sharing the same colour, label
and layout helpers, and the report redraws them from a saved file through :func:`standard_figures`
alone.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import xarray as xr

#: one colour per unit_channel (cycled); the same channel gets the same colour everywhere
TYPE_COLORS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)
#: colours of factorisation modes (components that are not a single channel)
MODE_COLORS = ("#000075", "#808000", "#469990", "#9A6324", "#800000", "#f58231")
RESPONSE_COLOR = "black"
#: most component lines drawn in one panel (their sum is always drawn)
MAX_LINES = 6
REDUCED_COLOR = "#e6550d"
WINDOW_COLOR = "#ebebeb"
DPI = 110


# -- shared helpers --------------------------------------------------------------------------------
def type_color(channel: int) -> str:
    """The fixed colour of ``unit_channel`` number ``channel``."""
    return TYPE_COLORS[int(channel) % len(TYPE_COLORS)]


def disambiguate(names: Sequence[str], channels: Sequence[int]) -> list[str]:
    """Labels that name one channel each: a name that repeats gets ``" [channel k]"``.

    ``["ON-fast", "OFF-slow", "ON-fast"]`` over channels 0, 1, 2 gives ``["ON-fast [channel 0]",
    "OFF-slow", "ON-fast [channel 2]"]``; an empty name is ``"c<k>"``. Every figure, the mechanism
    sentence and the report use these labels, so one channel reads the same everywhere.
    """
    names = [str(n) for n in names]
    return [
        (f"{n} [channel {int(c)}]" if names.count(n) > 1 else n) if n else f"c{int(c)}" for n, c in zip(names, channels)
    ]


def channel_labels(ds: xr.Dataset) -> list[str]:
    """One label per unit_channel: its ``unit_type`` (with ``[channel k]`` where a type repeats), else ``"c3"``."""
    chans = ds["unit_channel"].values if "unit_channel" in ds.coords else np.arange(ds.sizes["unit_channel"])
    types = ds["unit_type"].values if "unit_type" in ds.coords and ds["unit_type"].dims == ("unit_channel",) else None
    names = [str(t) for t in types] if types is not None else [""] * len(chans)
    return disambiguate(names, [int(c) for c in chans])


def _component_channel(ds: xr.Dataset, k: int) -> int | None:
    """The channel index a component is made of, when it is (essentially) one channel."""
    comp = ds["components"].isel(component=k)
    # cast: numpy's stubs type a ufunc's result as ndarray, but on a DataArray it returns a DataArray
    per_channel = cast(xr.DataArray, np.abs(comp)).sum([d for d in comp.dims if d != "unit_channel"]).values
    total = per_channel.sum()
    if total <= 0:
        return None
    best = int(np.argmax(per_channel))
    return best if per_channel[best] >= 0.99 * total else None


def component_labels(ds: xr.Dataset) -> list[str]:
    """A readable name per reducer component, the same for one channel in every figure and sentence.

    The ``component_label`` (or ``unit_type``) coord on ``component`` when present (``[channel k]``
    added where a label repeats, k the component's channel); else the channel's label
    (:func:`channel_labels`) when a component is one channel; else ``"mode k (c3+ c5-)"`` from its
    two largest channel loadings.
    """
    n = ds.sizes.get("component", 0)
    chan_of = ds["unit_channel"].values if "unit_channel" in ds.coords else None
    for name in ("component_label", "unit_type"):
        if name in ds.coords and ds[name].dims == ("component",):
            values = [str(v) for v in ds[name].values]
            out = []
            for k, v in enumerate(values):
                ch = _component_channel(ds, k)
                if values.count(v) > 1 and ch is not None:
                    v = f"{v} [channel {int(chan_of[ch]) if chan_of is not None else ch}]"
                out.append(v)
            return out
    labels = channel_labels(ds)
    out = []
    for k in range(n):
        ch = _component_channel(ds, k)
        if ch is not None:
            out.append(labels[ch])
            continue
        comp = ds["components"].isel(component=k)
        load = comp.sum([d for d in comp.dims if d != "unit_channel"]).values
        top = np.argsort(-np.abs(load))[:2]
        chans = [int(chan_of[i]) if chan_of is not None else int(i) for i in top]
        out.append(f"mode {k} (" + " ".join(f"c{c}{'+' if load[i] >= 0 else '-'}" for c, i in zip(chans, top)) + ")")
    return out


def component_colors(ds: xr.Dataset) -> list[str]:
    """The colour of each component: its channel's colour, or a mode colour."""
    out = []
    for k in range(ds.sizes.get("component", 0)):
        ch = _component_channel(ds, k)
        if ch is not None:
            out.append(type_color(int(ds["unit_channel"].values[ch]) if "unit_channel" in ds.coords else ch))
        else:
            out.append(MODE_COLORS[k % len(MODE_COLORS)])
    return out


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _int_attr(ds: xr.Dataset, key: str, default: int) -> int:
    """An integer attr, or ``default`` when it is missing or not a number (a file may say anything)."""
    try:
        return int(ds.attrs.get(key, default))
    except (TypeError, ValueError):
        return default


def _condition_label(ds: xr.Dataset, i: int) -> str:
    if "condition" not in ds.dims:
        return ""
    coord = ds["condition"]
    name = coord.attrs.get("swept") or ds.attrs.get("swept", "condition")
    value = coord.values[i]
    units = coord.attrs.get("units", "")
    text = f"{value:g}" if isinstance(value, (float, np.floating, int, np.integer)) else str(value)
    return f"{name} = {text}" + (f" {units}" if units else "")


def _cond(da: xr.DataArray, i: int) -> xr.DataArray:
    return da.isel(condition=i) if "condition" in da.dims else da


def _analysed(ds: xr.Dataset) -> xr.DataArray:
    """The analysed cells' responses ([condition,] time, cell) at the output times."""
    resp = ds["response"]
    return resp.isel(time=np.flatnonzero(resp.notnull().any([d for d in resp.dims if d != "time"]).values))


def _mask(ds: xr.Dataset) -> xr.DataArray:
    if "in_window" in ds:
        return ds["in_window"].astype(bool)
    return ds["response"].notnull().any("cell") if "response" in ds else xr.ones_like(ds["time"], dtype=bool)


def focus(ds: xr.Dataset) -> tuple[int, str]:
    """The condition index and the cell the single-panel figures show.

    The ``focus_condition`` (an index) and ``focus_cell`` attrs when an experiment set them; else
    the cell and condition with the largest response range inside the window.
    """
    resp = ds["response"].where(_mask(ds))
    spread = resp.max("time") - resp.min("time")  # ([condition,] cell)
    if "focus_cell" in ds.attrs and str(ds.attrs["focus_cell"]) in [str(c) for c in ds["cell"].values]:
        cell = str(ds.attrs["focus_cell"])
    else:
        per_cell = spread.max("condition") if "condition" in spread.dims else spread
        cell = str(per_cell["cell"].values[int(np.nanargmax(np.nan_to_num(per_cell.values, nan=-1.0)))])
    if "condition" not in ds.dims:
        return 0, cell
    if "focus_condition" in ds.attrs:
        idx = _int_attr(ds, "focus_condition", -1)
        if 0 <= idx < ds.sizes["condition"]:
            return idx, cell
    per_cond = spread.sel(cell=cell).values
    return int(np.nanargmax(np.nan_to_num(per_cond, nan=-1.0))), cell


def shown_conditions(ds: xr.Dataset, most: int = 3) -> list[int]:
    """Up to ``most`` condition indices to show side by side: the first, the focus and the last."""
    if "condition" not in ds.dims:
        return [0]
    n = ds.sizes["condition"]
    idx, _ = focus(ds)
    picks = sorted({0, idx, n - 1})
    if len(picks) > most:
        picks = sorted({0, idx})
    return picks


def _shade_window(ax: Any, ds: xr.Dataset, i: int) -> None:
    mask = _cond(_mask(ds), i)
    if "time" not in mask.dims:
        return
    if "response" in ds:  # the window as seen over the times the model answered
        answered = _cond(ds["response"], i).notnull().any([d for d in ds["response"].dims if d == "cell"])
        mask = mask.isel(time=np.flatnonzero(answered.values))
    if mask.size == 0 or bool(mask.all()):
        return
    t = mask["time"].values
    on = mask.values.astype(bool)
    edges = np.flatnonzero(np.diff(np.r_[0, on.astype(int), 0]))
    dt = float(np.median(np.diff(t))) if len(t) > 1 else 0.0
    for a, b in zip(edges[::2], edges[1::2]):
        ax.axvspan(t[a] - dt / 2, t[b - 1] + dt / 2, color=WINDOW_COLOR, zorder=0, lw=0)


def _per_type(ds: xr.Dataset, name: str = "attribution") -> xr.DataArray:
    a = ds[name]
    return a.sum([d for d in a.dims if d in ("unit_y", "unit_x")])


def _output_times(ds: xr.Dataset, da: xr.DataArray) -> xr.DataArray:
    valid = da.notnull().any([d for d in da.dims if d != "time"])
    return da.isel(time=np.flatnonzero(valid.values))


def _title(ds: xr.Dataset, what: str, width_in: float | None = None) -> str:
    """The figure title; wrapped to ``width_in`` inches of 10-pt text, so it is never clipped."""
    text = f"{ds.attrs.get('experiment_title') or ds.attrs.get('experiment') or ds.attrs.get('title', '')}: {what}"
    # about 9 characters of 10-pt DejaVu Sans per inch
    return textwrap.fill(text, max(30, int(9 * width_in))) if width_in else text


# -- the figures -----------------------------------------------------------------------------------
def stimulus_layout(stim: xr.DataArray) -> str:
    """How to draw a movie: ``"trace"`` (uniform), ``"x"``/``"y"`` (varies along one axis: bars), ``"frames"``."""
    amp = float(np.abs(stim.values).max()) or 1.0
    if float(stim.std(["y", "x"]).max()) < 1e-6 * amp:
        return "trace"
    along_y, along_x = float(stim.std("y").max()), float(stim.std("x").max())
    if along_y < 0.05 * along_x:  # a vertical bar: constant along y
        return "x"
    if along_x < 0.05 * along_y:
        return "y"
    return "frames"


def stimulus_figure(ds: xr.Dataset, path: Path) -> Path:
    """The stimulus: a contrast trace when spatially uniform, a space-time plot for bars, else frames."""
    stim = ds["stimulus"]
    conds = list(range(ds.sizes["condition"])) if "condition" in stim.dims else [0]
    if len(conds) > 6:
        conds = sorted({round(float(x)) for x in np.linspace(0, len(conds) - 1, 6)})
    amp = float(np.abs(stim.values).max()) or 1.0
    layout = stimulus_layout(stim)
    t = stim["time"].values
    if layout == "trace":
        # one row per condition: overlaid traces hide each other, and windows differ per condition
        fig = _new_figure(7.5, 0.9 + 0.75 * len(conds))
        axes = fig.subplots(len(conds), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
        for ax, i in zip(axes, conds):
            trace = _cond(stim, i).mean(["y", "x"]).values
            _shade_window(ax, ds, i)
            ax.axhline(0, color="0.7", lw=0.6, zorder=1)
            ax.plot(t, trace, color=RESPONSE_COLOR, lw=1.1, drawstyle="steps-mid", zorder=2)
            label = _condition_label(ds, i)
            if label:
                ax.text(1.01, 0.5, label, transform=ax.transAxes, fontsize=7, va="center")
            ax.tick_params(labelsize=7)
        axes[-1].set_xlabel("time (s)")
        fig.supylabel("contrast (z-scored)", fontsize=8)
        fig.suptitle(_title(ds, "stimulus (full field)"), fontsize=10)
        return _save(fig, path)
    if layout in ("x", "y"):
        space = layout
        other = "y" if space == "x" else "x"
        fig = _new_figure(7.5, 1.2 + 1.5 * len(conds))
        axes = fig.subplots(len(conds), 1, sharex=True, squeeze=False)[:, 0]
        for ax, i in zip(axes, conds):
            img = _cond(stim, i).mean(other).transpose(space, "time")
            pos = img[space].values
            im = ax.imshow(
                img.values,
                aspect="auto",
                origin="lower",
                cmap="gray",
                vmin=-amp,
                vmax=amp,
                extent=(t[0], t[-1], pos[0], pos[-1]),
                interpolation="nearest",
            )
            ax.set_ylabel(f"{space} (um)")
            label = _condition_label(ds, i)
            if label:
                ax.set_title(label, fontsize=8, loc="left")
        axes[-1].set_xlabel("time (s)")
        fig.colorbar(im, ax=list(axes), label="contrast", shrink=0.8)
        fig.suptitle(_title(ds, f"stimulus (space-time, mean over {other})"), fontsize=10)
        return _save(fig, path)
    # natural movies and noise: a strip of frames spread over the window
    rows = conds[:3]
    n_frames = 6
    fig = _new_figure(1.35 * n_frames + 0.8, 1.5 * len(rows) + 0.5)
    axes = fig.subplots(len(rows), n_frames, squeeze=False)
    for r, i in enumerate(rows):
        mask = _cond(_mask(ds), i)
        times = t[mask.values.astype(bool)] if mask.any() else t
        for c, tt in enumerate(np.linspace(times[0], times[-1], n_frames)):
            frame = _cond(stim, i).sel(time=tt, method="nearest")
            ax = axes[r, c]
            # row 0 of a movie is the top of the image, as in every image format
            im = ax.imshow(frame.transpose("y", "x").values, cmap="gray", vmin=-amp, vmax=amp, origin="upper")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{float(frame['time']):.2f} s", fontsize=7)
        label = _condition_label(ds, i)
        if label:
            axes[r, 0].set_ylabel(label, fontsize=7)
    fig.colorbar(im, ax=axes.ravel().tolist(), label="contrast", shrink=0.8)
    fig.suptitle(_title(ds, "stimulus frames"), fontsize=10)
    return _save(fig, path)


def _condition_cmap() -> Any:
    from matplotlib import colormaps

    # viridis without its lightest end, which vanishes on white
    from matplotlib.colors import ListedColormap

    return ListedColormap(colormaps["viridis"](np.linspace(0.0, 0.85, 256)))


def response_figure(ds: xr.Dataset, path: Path) -> Path:
    """The analysed cells' responses (focus condition) and the focus cell across conditions."""
    from matplotlib import colormaps

    resp = _analysed(ds)
    idx, cell = focus(ds)
    has_cond = "condition" in resp.dims
    fig = _new_figure(7.5 if not has_cond else 11.0, 3.0)
    axes = fig.subplots(1, 2 if has_cond else 1, squeeze=False)[0]
    ax = axes[0]
    r = _cond(resp, idx)
    t = r["time"].values
    cells = [str(c) for c in r["cell"].values]
    others = colormaps["Dark2"]
    for j, c in enumerate(cells):
        is_focus = c == cell
        ax.plot(
            t,
            r.sel(cell=c).values,
            color=RESPONSE_COLOR if is_focus else others(j % 8),
            lw=2.0 if is_focus else 0.9,
            alpha=1.0 if is_focus else 0.8,
            label=c + (" (focus)" if is_focus else ""),
            zorder=3 if is_focus else 2,
        )
    _shade_window(ax, ds, idx)
    label = _condition_label(ds, idx)
    ax.set(xlabel="time (s)", ylabel="rate (Hz)", title="analysed cells" + (f", {label}" if label else ""))
    ax.legend(fontsize=7, ncol=2 if len(cells) > 5 else 1, frameon=False)
    if has_cond:
        ax = axes[1]
        cmap = _condition_cmap()
        n = resp.sizes["condition"]
        for i in range(n):
            ax.plot(
                t, resp.isel(condition=i).sel(cell=cell).values, color=cmap(i / max(n - 1, 1)), lw=1.2,
                label=_condition_label(ds, i),
            )  # fmt: skip
        ax.set(xlabel="time (s)", ylabel="rate (Hz)", title=f"{cell} across {ds['condition'].attrs.get('swept', '')}")
        ax.legend(fontsize=7, ncol=2 if n > 5 else 1, frameon=False)
    fig.suptitle(_title(ds, "model response"), fontsize=10)
    return _save(fig, path)


def _heatmap(
    ax: Any, ds: xr.Dataset, a: xr.DataArray, vmax: float, labels: Sequence[str], colors: Sequence[str]
) -> Any:
    t = a["time"].values
    dt = float(np.median(np.diff(t))) if len(t) > 1 else 0.01
    im = ax.imshow(
        a.values,
        aspect="auto",
        cmap="RdBu_r",
        vmin=-vmax,
        vmax=vmax,
        interpolation="nearest",
        extent=(t[0] - dt / 2, t[-1] + dt / 2, len(labels) - 0.5, -0.5),
    )
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    for tick, color in zip(ax.get_yticklabels(), colors):
        tick.set_color(color)
        tick.set_fontweight("bold")
    return im


def attribution_figure(ds: xr.Dataset, path: Path) -> Path:
    """Cell types x time heat map of the focus cell's attribution, with its response above (per shown condition)."""
    a = _output_times(ds, _per_type(ds))
    _, cell = focus(ds)
    conds = shown_conditions(ds)
    labels = channel_labels(ds)
    colors = [type_color(c) for c in (ds["unit_channel"].values if "unit_channel" in ds.coords else range(len(labels)))]
    sub = a.sel(cell=cell)
    vmax = float(np.nanmax(np.abs(sub.values))) or 1.0
    fig = _new_figure(4.0 * len(conds) + 1.2, 4.6)
    grid = fig.add_gridspec(2, len(conds), height_ratios=(1, 2.4))
    resp = _analysed(ds).sel(cell=cell)
    im = None
    for j, i in enumerate(conds):
        top = fig.add_subplot(grid[0, j])
        ri = _cond(resp, i)
        top.plot(ri["time"].values, ri.values, color=RESPONSE_COLOR, lw=1.3)
        _shade_window(top, ds, i)
        top.set_title(_condition_label(ds, i) or cell, fontsize=8, loc="left")
        top.tick_params(labelbottom=False)
        if j == 0:
            top.set_ylabel("rate (Hz)", fontsize=8)
        ax = fig.add_subplot(grid[1, j], sharex=top)
        ai = _cond(sub, i).transpose("unit_channel", "time")
        im = _heatmap(ax, ds, ai, vmax, labels if j == 0 else [""] * len(labels), colors)
        ax.set_xlabel("time (s)")
    fig.colorbar(im, ax=fig.axes, label="attribution (Hz)", shrink=0.7)
    fig.suptitle(_title(ds, f"cell types x time attribution of {cell}"), fontsize=10)
    return _save(fig, path)


def contributions_figure(ds: xr.Dataset, path: Path) -> Path:
    """The kept components' contributions over time against the response change (focus cell)."""
    _, cell = focus(ds)
    conds = shown_conditions(ds)
    resp = _analysed(ds).sel(cell=cell)
    base = ds["baseline_response"].sel(cell=cell) if "baseline_response" in ds else 0.0
    width = 4.0 * len(conds) + 1.5
    fig = _new_figure(width, 3.4)
    axes = fig.subplots(1, len(conds), squeeze=False, sharey=True)[0]
    if "weights" in ds:
        series = _output_times(ds, ds["weights"]).sel(cell=cell)
        labels, colors = component_labels(ds), component_colors(ds)
        dim = "component"
    else:  # no reducer: the three channels with the largest attribution in the window
        per = _output_times(ds, _per_type(ds)).sel(cell=cell)
        # cast: numpy's stubs type a ufunc's result as ndarray, but on a DataArray it returns a DataArray
        mag = cast(xr.DataArray, np.abs(per.where(_mask(ds)))).sum([d for d in per.dims if d != "unit_channel"])
        top = np.sort(np.argsort(-mag.values)[:3])
        series = per.isel(unit_channel=top)
        labels = [channel_labels(ds)[k] for k in top]
        colors = [type_color(int(series["unit_channel"].values[j])) for j in range(len(top))]
        dim = "unit_channel"
    for j, (ax, i) in enumerate(zip(axes, conds)):
        ri = _cond(resp, i)
        dr = ri - _cond(base, i) if isinstance(base, xr.DataArray) else ri
        t = ri["time"].values
        si = _cond(series, i)
        ax.axhline(0, color="0.75", lw=0.6)
        ax.plot(t, dr.values, color=RESPONSE_COLOR, lw=2.2, label="response - baseline" if j == 0 else None)
        # the reducer lists components by rank: the first MAX_LINES are drawn, the sum covers all
        for k in range(min(si.sizes[dim], MAX_LINES)):
            ax.plot(t, si.isel({dim: k}).values, color=colors[k], lw=1.5, label=labels[k] if j == 0 else None)
        kept = si.sum(dim)
        more = f" ({si.sizes[dim]})" if si.sizes[dim] > MAX_LINES else ""
        ax.plot(t, kept.values, color="0.45", lw=1.2, ls="--", label=f"sum of kept{more}" if j == 0 else None)
        if "attribution" in ds:
            total = _cond(_output_times(ds, _per_type(ds)).sel(cell=cell), i).sum("unit_channel")
            ax.plot(t, (total - kept).values, color="0.6", lw=0.9, ls=":", label="all others" if j == 0 else None)
        _shade_window(ax, ds, i)
        ax.set(xlabel="time (s)", title=_condition_label(ds, i) or cell)
        ax.title.set_fontsize(8)
    axes[0].set_ylabel("contribution (Hz)")
    # the legend sits beside the panels, below the title, so neither covers the other
    fig.legend(fontsize=7, frameon=False, loc="outside right center")
    fig.suptitle(_title(ds, f"kept cell types of {cell} against its response", width - 1.5), fontsize=10)
    return _save(fig, path)


def reduced_figure(ds: xr.Dataset, path: Path) -> Path:
    """The reduced model's response over the full model's (focus cell, shown conditions)."""
    _, cell = focus(ds)
    conds = shown_conditions(ds)
    resp = _analysed(ds).sel(cell=cell)
    red = ds["reduced_response"].sel(cell=cell).sel(time=resp["time"])
    width = 4.0 * len(conds) + 1.0
    fig = _new_figure(width, 3.0)
    axes = fig.subplots(1, len(conds), squeeze=False, sharey=True)[0]
    for ax, i in zip(axes, conds):
        ri, qi = _cond(resp, i), _cond(red, i)
        t = ri["time"].values
        ax.plot(t, ri.values, color=RESPONSE_COLOR, lw=2.0, label="full model")
        ax.plot(t, qi.values, color=REDUCED_COLOR, lw=1.6, ls="--", label="reduced model")
        _shade_window(ax, ds, i)
        m = _cond(_mask(ds), i).sel(time=ri["time"]).values.astype(bool)
        ok = m & np.isfinite(ri.values) & np.isfinite(qi.values)
        r = np.corrcoef(ri.values[ok], qi.values[ok])[0, 1] if ok.sum() > 2 and np.std(qi.values[ok]) > 0 else np.nan
        ax.set(xlabel="time (s)", title=f"{_condition_label(ds, i) or cell}  (r = {r:.2f} in window)")
        ax.title.set_fontsize(8)
    axes[0].set_ylabel("rate (Hz)")
    axes[0].legend(fontsize=7, frameon=False)
    labels = component_labels(ds) if "components" in ds else []
    kept = ", ".join(labels) if len(labels) <= 4 else f"{len(labels)} kept components"
    fig.suptitle(_title(ds, f"reduced model ({kept}) vs full model, {cell}", width), fontsize=10)
    return _save(fig, path)


def measure_variables(ds: xr.Dataset) -> list[str]:
    """The ``measure_*`` variables to plot: attr ``measure_plot`` (JSON list) or every one with a non-cell dim.

    A ``measure_plot`` that is not a JSON list of names is ignored (the default choice is drawn).
    """
    if ds.attrs.get("measure_plot"):
        try:
            names = json.loads(ds.attrs["measure_plot"])
        except (TypeError, ValueError):
            names = None
        if isinstance(names, list):
            return [n for n in names if isinstance(n, str) and n in ds.data_vars]
    return [
        str(n)
        for n, v in ds.data_vars.items()
        if str(n).startswith("measure_") and any(d != "cell" for d in v.dims) and v.dtype.kind == "f"
    ]


def measure_figure(ds: xr.Dataset, path: Path) -> Path | None:
    """Each ``measure_*`` variable against its sweep (or other) dim: one thin line per cell, their mean thick."""
    names = measure_variables(ds)
    if not names:
        return None
    fig = _new_figure(max(5.0, 4.2 * len(names) + 0.6), 3.4)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        v = ds[name]
        xdim = next((d for d in v.dims if d != "cell"), None)
        if not np.isfinite(np.asarray(v.values, dtype=float)).any():
            ax.text(0.5, 0.5, "no finite value:\nno analysed cell\nresponded enough to measure", ha="center",
                    va="center", transform=ax.transAxes, fontsize=9, color="0.4")  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
        elif xdim is None:  # per cell only: one dot per cell
            ax.plot(range(v.sizes["cell"]), v.values, "o", color=RESPONSE_COLOR)
            ax.set_xticks(range(v.sizes["cell"]), [str(c) for c in v["cell"].values], fontsize=7, rotation=45)
        else:
            x = v[xdim].values if xdim in v.coords else np.arange(v.sizes[xdim])
            numeric = np.issubdtype(np.asarray(x).dtype, np.number)
            xs = x if numeric else np.arange(len(x))
            marker = "o" if len(xs) <= 15 else ""  # markers only where the points are few
            if "cell" in v.dims:
                for c in v["cell"].values:
                    ax.plot(xs, v.sel(cell=c).values, marker=marker, color="0.7", lw=0.8, ms=2.5)
                mean = v.mean("cell")
                ax.plot(xs, mean.values, marker=marker, color=RESPONSE_COLOR, lw=2.0, ms=4, label="mean over cells")
                ax.legend(fontsize=7, frameon=False)
            else:
                ax.plot(xs, v.values, marker=marker, color=RESPONSE_COLOR, lw=2.0, ms=4)
            if not numeric:
                ax.set_xticks(xs, [str(s) for s in x], fontsize=7)
            coord = ds[xdim] if xdim in ds.coords else v[xdim] if xdim in v.coords else None
            xname = (coord.attrs.get("swept") or coord.attrs.get("long_name")) if coord is not None else None
            xunits = coord.attrs.get("units", "") if coord is not None else ""
            ax.set_xlabel(f"{xname or xdim}" + (f" ({xunits})" if xunits else ""))
            if xdim == "rel_time" or "time" in str(xdim):  # dims are str in mechlens datasets
                ax.axvline(0, color="0.6", lw=0.8, ls="--")
        units = v.attrs.get("units", "")
        units = "" if units == "1" else units
        ylabel = f"{v.attrs.get('long_name', name.removeprefix('measure_'))}" + (f" ({units})" if units else "")
        ax.set_ylabel(textwrap.fill(ylabel, 40))
        ax.yaxis.label.set_fontsize(8)
        ax.set_title(name.removeprefix("measure_").replace("_", " "), fontsize=9)
    verdict = {1: "passes", 0: "fails"}.get(_int_attr(ds, "measure_pass", -1), "")
    target = ds.attrs.get("measure_target", "")
    title = _title(ds, "phenomenon") + (f"\n{verdict}: {target}" if verdict else "")
    fig.suptitle(textwrap.fill(title, 30 + 40 * len(names), replace_whitespace=False), fontsize=9)
    return _save(fig, path)


def ground_truth_figure(ds: xr.Dataset, path: Path) -> Path | None:
    """The model's attribution beside the ground truth's ``gt_attribution`` (focus cell and condition)."""
    if "gt_attribution" not in ds or "attribution" not in ds:
        return None
    idx, cell = focus(ds)
    model = _cond(_output_times(ds, _per_type(ds)).sel(cell=cell), idx).transpose("unit_channel", "time")
    gt_all = ds["gt_attribution"]
    gt_unit = next(d for d in gt_all.dims if d not in ("condition", "time", "cell"))
    gt = _cond(_output_times(ds, gt_all).sel(cell=cell), idx).transpose(gt_unit, "time")
    fig = _new_figure(11.0, 3.6)
    axes = fig.subplots(1, 2, sharex=True)
    labels = channel_labels(ds)
    colors = [type_color(c) for c in (ds["unit_channel"].values if "unit_channel" in ds.coords else range(len(labels)))]
    vm = float(np.nanmax(np.abs(model.values))) or 1.0
    im = _heatmap(axes[0], ds, model, vm, labels, colors)
    fig.colorbar(im, ax=axes[0], label="Hz", shrink=0.8)
    axes[0].set(title=f"{ds.attrs.get('model', 'model')} attribution", xlabel="time (s)")
    gl = [str(u) for u in (gt[gt_unit].values if gt_unit in gt.coords else range(gt.sizes[gt_unit]))]
    vg = float(np.nanmax(np.abs(gt.values))) or 1.0
    im = _heatmap(axes[1], ds, gt, vg, gl, ["black"] * len(gl))
    fig.colorbar(im, ax=axes[1], label=gt_all.attrs.get("units", "Hz"), shrink=0.8)
    axes[1].set(title=gt_all.attrs.get("long_name", "ground truth"), xlabel="time (s)")
    fig.suptitle(_title(ds, f"decomposition vs ground truth, {cell} {_condition_label(ds, idx)}"), fontsize=10)
    return _save(fig, path)


#: name -> (function, the variables it needs)
STANDARD: dict[str, tuple[Callable[[xr.Dataset, Path], Path | None], tuple[str, ...]]] = {
    "stimulus": (stimulus_figure, ("stimulus",)),
    "response": (response_figure, ("response",)),
    "attribution": (attribution_figure, ("attribution", "response")),
    "contributions": (contributions_figure, ("attribution", "response")),
    "reduced": (reduced_figure, ("reduced_response", "response")),
    "measure": (measure_figure, ()),
    "ground_truth": (ground_truth_figure, ("gt_attribution", "attribution")),
}


def standard_figures(
    ds: xr.Dataset,
    outdir: str | Path,
    prefix: str = "",
    on_error: Callable[[str, Exception], None] | None = None,
) -> list[Path]:
    """Draw every standard figure the Dataset has the variables for.

    Parameters
    ----------
    ds : xarray.Dataset
        A result Dataset (as saved by ``mechlens run``).
    outdir : path
        Folder for the PNG files (created if missing).
    prefix : str
        File name prefix (``"latency-coding_"``).
    on_error : callable, optional
        Called with the figure's name and the exception when a figure cannot be drawn (a file with
        odd data: all-NaN responses, no time); that figure is skipped and the others are drawn.
        Without it the exception propagates.

    Returns
    -------
    list of Path
        The files written, in the order of :data:`STANDARD`.
    """
    import warnings

    outdir = Path(outdir)
    out = []
    for name, (fn, needs) in STANDARD.items():
        if all(v in ds.data_vars for v in needs):
            try:
                with warnings.catch_warnings():
                    # all-NaN slices warn in numpy; the figure shows what is there, or fails below
                    warnings.simplefilter("ignore", RuntimeWarning)
                    path = fn(ds, outdir / f"{prefix}{name}.png")
            except Exception as err:
                if on_error is None:
                    raise
                on_error(name, err)
                continue
            if path is not None:
                out.append(path)
    return out
