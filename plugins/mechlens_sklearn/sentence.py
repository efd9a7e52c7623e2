"""The mechanism in one sentence per cell, built from a reduction Dataset.

Every word comes from the Dataset (kept units, their types and signs, explained fraction, reduced
model fidelity) filled into :data:`TEMPLATE`; nothing about a particular stimulus is written here.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from mechlens.errors import UsageError

#: the sentence's parts; ``{...}`` fields are filled from the reduction Dataset
TEMPLATE = {
    "lead": "{cell}: {types} {noun} {verb} the response",
    "explained": "; together they explain {explained:.0%} of the response deviation{window}",
    "reduced": (
        "; the reduced model with only these types active follows the full model with r = {r:.2f} "
        "and a peak-time error of {peak_ms:.0f} ms"
    ),
    "end": ".",
    "type": "{label} ({role})",
    "duplicate": "{label} [channel {channel}]",
    "unnamed": "channel {channel}",
    "window": " over {window}",
    "excitatory": "excitatory",
    "inhibitory": "inhibitory",
}


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _kept_channels(red: xr.Dataset) -> list[int]:
    kept = red["kept"]
    space = [d for d in kept.dims if d != "unit_channel"]
    per_channel = (kept != 0).any(space) if space else kept != 0
    return [int(i) for i in np.flatnonzero(per_channel.values)]


def _cell_sentence(red: xr.Dataset, cell: str) -> str:
    channels = _kept_channels(red)
    contrib = red["contribution"].sel(cell=cell).values
    channels.sort(key=lambda i: -contrib[i])
    labels_all = (
        [str(v) for v in red["unit_type"].values]
        if "unit_type" in red.coords
        else [TEMPLATE["unnamed"].format(channel=int(c)) for c in red["unit_channel"].values]
    )
    chosen = [labels_all[i] for i in channels]
    sign = red["sign"].sel(cell=cell).values
    parts = []
    for i, label in zip(channels, chosen):
        if "unit_type" in red.coords and chosen.count(label) > 1:
            label = TEMPLATE["duplicate"].format(label=label, channel=int(red["unit_channel"].values[i]))
        role = TEMPLATE["excitatory"] if sign[i] > 0 else TEMPLATE["inhibitory"]
        parts.append(TEMPLATE["type"].format(label=label, role=role))
    plural = len(parts) != 1
    text = TEMPLATE["lead"].format(
        cell=cell, types=_join(parts), noun="types" if plural else "type", verb="drive" if plural else "drives"
    )
    frac = float(red["explained_fraction"].sel(cell=cell))
    if np.isfinite(frac):
        window = str(red.attrs.get("window", ""))
        text += TEMPLATE["explained"].format(
            explained=frac, window=TEMPLATE["window"].format(window=window) if window else ""
        )
    if "reduced_r" in red and "peak_time_error" in red:
        r = float(red["reduced_r"].sel(cell=cell))
        peak = float(np.nanmax(np.abs(red["peak_time_error"].sel(cell=cell).values)))
        if np.isfinite(r) and np.isfinite(peak):
            text += TEMPLATE["reduced"].format(r=r, peak_ms=peak * 1000.0)
    return text + TEMPLATE["end"]


def mechanism_sentence(reduction: xr.Dataset, cell: str | None = None) -> str:
    """Describe a reduction in words: which types drive each cell's response, with what sign and fidelity.

    Parameters
    ----------
    reduction : xarray.Dataset
        Output of a mechlens_sklearn reducer: ``kept``, ``contribution`` (cell, unit_channel),
        ``sign`` (cell, unit_channel), ``explained_fraction`` (cell); optionally ``reduced_r``,
        ``peak_time_error`` (the largest |error| over conditions is quoted) and a ``unit_type``
        coord (from :func:`mechlens_sklearn.characterise.characterise`; else channels are named by
        index).
    cell : str, optional
        One cell id; default every cell, one sentence per line.

    Returns
    -------
    str
        E.g. ``"gc00: OFF-fast (excitatory) and ON-slow (inhibitory) types drive the response; together
        they explain 95% of the response deviation over 0.05..0.3 s; the reduced model with only these
        types active follows the full model with r = 0.98 and a peak-time error of 10 ms."``
    """
    needed = ("kept", "contribution", "sign", "explained_fraction")
    missing = [n for n in needed if n not in reduction]
    if missing:
        raise UsageError(f"mechanism_sentence needs a mechlens_sklearn reduction Dataset; it lacks {missing}")
    cells = [str(c) for c in reduction["cell"].values]
    if cell is not None:
        if cell not in cells:
            raise UsageError(f"no cell {cell!r} in the reduction; its cells are {', '.join(cells)}")
        cells = [cell]
    return "\n".join(_cell_sentence(reduction, c) for c in cells)
