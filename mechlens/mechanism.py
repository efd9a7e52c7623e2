"""The mechanism in one short sentence, from a reduction Dataset alone (any reducer, any experiment).

The sentence names at most the kept components (cell types or modes), each with its sign and its
timing, and the fraction of the response deviation they explain together::

    gc03: ON-slow (excitatory, 60-120 ms) and OFF-fast (inhibitory, 30-50 ms) generate 85% of the
    response deviation over 0..0.3 s (times from its start).

A reduction that keeps every unit is not called a mechanism: the sentence says so instead. The
per-component details (every kept component's net contribution, timing, and the reduced-model
check) go to :func:`mechanism_details`, which the report folds away.

Definitions (every number is recomputed from the variables, so the sentence never depends on a plugin):

- a component's **contribution** to a cell: ``weights[k] * sum_units(components[k])`` (Hz), the
  kept type's attribution for one-hot or multi-hot components;
- its **sign**: that of the contribution summed over the window and conditions (0 counts as
  excitatory);
- its **timing**: with ``tau`` the time from the window's first sample (per condition), the span of
  ``tau`` where ``max over conditions |contribution|`` is at least half its largest value;
- the **explained fraction**: the ``explained_fraction`` variable when present, else
  ``1 - ||dr - sum of contributions|| / ||dr||`` over the window.

The window is ``in_window`` (an experiment's), else ``reduction_window`` (the reducer's), else every
time where the attribution is defined.
"""

from __future__ import annotations

from typing import TypedDict, cast

import numpy as np
import xarray as xr

from mechlens.errors import UsageError
from mechlens.schema import UNIT_DIMS

#: the sentence's fixed text; ``{...}`` fields are filled from the Dataset
TEMPLATE = {
    "sentence": "{cell}: {types} {verb} {explained:.0%} of the response deviation{window}{note}.",
    "all_kept": (
        "{cell}: every one of the {n} types is needed to explain {explained:.0%} of the response deviation"
        "{window}: no reduction, not a mechanism."
    ),
    "type": "{label} ({role}, {when} ms)",
    "window": " over {window}",
    "note": " (times from its start)",
    "excitatory": "excitatory",
    "inhibitory": "inhibitory",
}


def _window(ds: xr.Dataset) -> xr.DataArray:
    for name in ("in_window", "reduction_window"):
        if name in ds:
            return ds[name].astype(bool)
    w = ds["weights"].notnull().all([d for d in ds["weights"].dims if d not in ("condition", "time")])
    return w


def contributions(ds: xr.Dataset) -> xr.DataArray:
    """Each kept component's contribution, ([condition,] time, cell, component) in Hz."""
    comp = ds["components"]
    loading = comp.sum([d for d in comp.dims if d in UNIT_DIMS])
    return ds["weights"] * loading


def _labels(ds: xr.Dataset) -> list[str]:
    from mechlens.figures import component_labels

    # "OFF-fast", or "OFF-fast [channel 3]" where the model has several channels of that type: the
    # figures' labels, so a channel reads the same in the sentence and in every figure
    return component_labels(ds)


def _timing(c: xr.DataArray, window: xr.DataArray) -> tuple[float, float]:
    """Half-max span (ms) of |c| over the window, time from each condition's window start; c is ([condition,] time)."""
    rows = [c.isel(condition=i) for i in range(c.sizes["condition"])] if "condition" in c.dims else [c]
    masks = [window.isel(condition=i) for i in range(c.sizes["condition"])] if "condition" in window.dims else None
    taus, mags = [], []
    for i, row in enumerate(rows):
        m = (masks[i] if masks is not None else window).values & np.isfinite(row.values)
        if not m.any():
            continue
        t = row["time"].values[m]
        taus.append(np.round((t - t[0]) * 1000.0, 3))
        mags.append(np.abs(row.values[m]))
    if not taus:
        return float("nan"), float("nan")
    tau = np.unique(np.concatenate(taus))
    env = np.zeros(len(tau))
    for ta, mg in zip(taus, mags):
        idx = np.searchsorted(tau, ta)
        env[idx] = np.maximum(env[idx], mg)
    if env.max() <= 0:
        return float("nan"), float("nan")
    on = tau[env >= 0.5 * env.max()]
    return float(on[0]), float(on[-1])


def _explained(ds: xr.Dataset, contrib: xr.DataArray, window: xr.DataArray, cell: str) -> float:
    if "explained_fraction" in ds and "cell" in ds["explained_fraction"].dims:
        return float(ds["explained_fraction"].sel(cell=cell))
    if "response" not in ds:
        return float("nan")
    base = ds["baseline_response"].sel(cell=cell) if "baseline_response" in ds else 0.0
    dr = (ds["response"].sel(cell=cell) - base).where(window)
    res = dr - contrib.sel(cell=cell).sum("component")
    den = float(np.sqrt(np.nansum(dr.values**2)))
    return 1.0 - float(np.sqrt(np.nansum(res.values**2))) / den if den > 0 else float("nan")


class ComponentRow(TypedDict):
    """One kept component of one cell, as listed by :func:`component_table`."""

    label: str
    #: net contribution, Hz summed over the window
    net: float
    #: summed |contribution|, Hz
    abs: float
    #: +1 excitatory, -1 inhibitory
    sign: int
    onset_ms: float
    offset_ms: float


def component_table(ds: xr.Dataset, cell: str) -> list[ComponentRow]:
    """Every kept component for one cell: label, sign, net contribution (Hz summed over the window), timing (ms).

    Ordered by the size of the net contribution, largest first.
    """
    window = _window(ds)
    contrib = contributions(ds).sel(cell=cell)
    w = window.broadcast_like(contrib.isel(component=0, drop=True))
    inside = contrib.where(w, 0.0)
    net = inside.sum([d for d in inside.dims if d != "component"]).values
    # numpy's stubs type a ufunc of a DataArray as an ndarray; xarray's __array_ufunc__ returns a DataArray
    mag = cast(xr.DataArray, np.abs(inside)).sum([d for d in inside.dims if d != "component"]).values
    rows: list[ComponentRow] = []
    for k, label in enumerate(_labels(ds)):
        lo, hi = _timing(contrib.isel(component=k), window)
        rows.append({"label": label, "net": float(net[k]), "abs": float(mag[k]), "sign": 1 if net[k] >= 0 else -1,
                     "onset_ms": lo, "offset_ms": hi})  # fmt: skip
    rows.sort(key=lambda r: -abs(float(r["net"])))
    return rows


def _span(lo: float, hi: float) -> str:
    """``"60-120"``, or ``"60"`` for a single sample."""
    return f"{lo:.0f}" if f"{lo:.0f}" == f"{hi:.0f}" else f"{lo:.0f}-{hi:.0f}"


def _window_text(ds: xr.Dataset) -> str:
    return str(ds.attrs.get("window_doc") or ds.attrs.get("window") or "")


def _all_kept(ds: xr.Dataset) -> bool:
    if "all_kept" in ds.attrs:
        return bool(int(ds.attrs["all_kept"]))
    if "kept" in ds:
        return bool((ds["kept"] != 0).all())
    return False


def cell_sentence(ds: xr.Dataset, cell: str) -> str:
    """The one-sentence mechanism of one cell (see the module docstring)."""
    window = _window(ds)
    rows = component_table(ds, cell)
    explained = _explained(ds, contributions(ds), window, cell)
    wtext = _window_text(ds)
    where = TEMPLATE["window"].format(window=wtext) if wtext else ""
    if _all_kept(ds):
        n = int(ds.attrs.get("n_types", len(rows)))
        return TEMPLATE["all_kept"].format(cell=cell, n=n, explained=explained, window=where)
    parts = [
        TEMPLATE["type"].format(
            label=r["label"],
            role=TEMPLATE["excitatory"] if r["sign"] > 0 else TEMPLATE["inhibitory"],
            when=_span(float(r["onset_ms"]), float(r["offset_ms"])),
        )
        for r in rows
    ]
    types = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return TEMPLATE["sentence"].format(
        cell=cell,
        types=types,
        verb="generates" if len(parts) == 1 else "generate",
        explained=explained,
        window=where,
        note=TEMPLATE["note"],
    )


def mechanism_sentence(ds: xr.Dataset, cell: str | None = None) -> str:
    """The mechanism in one short sentence per cell, from a reduction Dataset.

    Parameters
    ----------
    ds : xarray.Dataset
        A reduction (``weights`` ([condition,] time, cell, component) in Hz, ``components``
        (component, unit_channel[, ...])), alone or inside an experiment's result; optionally
        ``explained_fraction`` (cell), ``in_window`` / ``reduction_window``, ``response`` and
        ``baseline_response``, a ``component_label`` or ``unit_type`` coord, attrs ``all_kept``,
        ``n_types``, ``window_doc`` / ``window``.
    cell : str, optional
        One cell id; default every cell, one sentence per line.

    Returns
    -------
    str
        E.g. ``"gc00: ON-slow (excitatory, 60-120 ms) and OFF-fast (inhibitory, 30-50 ms) generate 85%
        of the response deviation over 0..0.3 s (times from its start)."``

    Raises
    ------
    UsageError
        No ``weights``/``components`` (not a reduction), or an unknown cell.
    """
    missing = [n for n in ("weights", "components") if n not in ds]
    if missing:
        raise UsageError(f"mechanism_sentence needs a reduction Dataset (weights, components); it lacks {missing}")
    cells = [str(c) for c in ds["weights"]["cell"].values]
    if cell is not None:
        if cell not in cells:
            raise UsageError(f"no cell {cell!r} in the reduction; its cells are {', '.join(cells)}")
        cells = [cell]
    return "\n".join(cell_sentence(ds, c) for c in cells)


def mechanism_details(ds: xr.Dataset, cell: str) -> str:
    """The full per-component list and the reduced-model check for one cell, one item per line.

    Each kept component: label, sign, net contribution over the window (Hz summed over samples),
    timing; then the reduced model's r and the complement's (kept components clamped to baseline)
    when the Dataset has them, and the ``reduction_check`` verdict.
    """
    lines = []
    for r in component_table(ds, cell):
        role = TEMPLATE["excitatory"] if r["sign"] > 0 else TEMPLATE["inhibitory"]
        lines.append(
            f"{cell}: {r['label']}: {role}, net {float(r['net']):+.3g} Hz (|A| {float(r['abs']):.3g} Hz) summed over "
            f"the window, {_span(float(r['onset_ms']), float(r['offset_ms']))} ms"
        )
    checks = []
    for name, text in (
        ("reduced_r", "reduced model r = {:.2f}"),
        ("complement_r", "complement (kept types clamped) r = {:.2f}"),
        ("reduced_model_explained", "reduced model reproduces {:.0%}"),
        ("complement_model_explained", "complement reproduces {:.0%}"),
    ):
        if name in ds and "cell" in ds[name].dims:
            checks.append(text.format(float(ds[name].sel(cell=cell))))
    if "reduction_check" in ds.attrs:
        checks.append(f"check: {ds.attrs['reduction_check']}")
    if checks:
        lines.append(f"{cell}: " + "; ".join(checks))
    return "\n".join(lines)
