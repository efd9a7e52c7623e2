"""The mechanism part of a report section: the one-sentence summary, the per-cell table, the checks.

Read from a result Dataset's variables alone (the names of docs/contract.md): the focus cell's kept
cell types with their sign and timing make one short sentence (at most :data:`NAMED_TYPES` named),
every cell's kept types and reduction checks fold into a table, and the reduction's checks (kept
types sufficient, complement insufficient) are said in words. Returned as HTML fragments that
:mod:`mechlens.report` places; every string read from a file is escaped here.
"""

from __future__ import annotations

import html
import math
import warnings
from typing import Any

import xarray as xr


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or value == "":
        return "&ndash;"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return "&ndash;"
        return f"{value:.{digits}g}"
    return html.escape(str(value))


def pct(value: float) -> str:
    return f"{100 * value:.0f} %" if math.isfinite(value) else "&ndash;"


#: at most this many kept types are named in the short sentence (the rest are in the folded table)
NAMED_TYPES = 3


def _focus_cell(ds: xr.Dataset) -> str:
    cells = [str(c) for c in ds["weights"]["cell"].values]
    cell = str(ds.attrs.get("focus_cell", ""))
    return cell if cell in cells else cells[0]


def _cell_explained(ds: xr.Dataset, cell: str, nums: dict[str, float]) -> float:
    if "explained_fraction" in ds and "cell" in ds["explained_fraction"].dims:
        try:
            return float(ds["explained_fraction"].sel(cell=cell))
        except (KeyError, ValueError, TypeError):
            pass
    return float(nums.get("explained_fraction_mean", float("nan")))


def _kept_rows(ds: xr.Dataset, cell: str) -> list[Any]:
    from mechlens.mechanism import component_table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return list(component_table(ds, cell))


def _when(row: Any) -> str:
    lo, hi = float(row["onset_ms"]), float(row["offset_ms"])
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "timing undefined"
    return f"{lo:.0f} ms" if f"{lo:.0f}" == f"{hi:.0f}" else f"{lo:.0f}-{hi:.0f} ms"


def mechanism_summary(ds: xr.Dataset, nums: dict[str, float]) -> tuple[str, str]:
    """The mechanism in one short sentence (focus cell) and in a few words (the summary table's cell).

    ``"gc00: ON-fast [channel 0] excites (50-150 ms), OFF-slow [channel 5] inhibits (90-160 ms); 82 %
    of its response deviation."`` names at most :data:`NAMED_TYPES` kept types, largest net
    contribution first, each with sign and timing (from the window's start); the rest are counted.
    Without a reduction, the ``mechanism`` attr as it stands (a plugin's own sentence), said once.
    """
    attr = " ".join(str(ds.attrs.get("mechanism", "")).split())
    if "weights" not in ds or "components" not in ds or "cell" not in ds["weights"].dims:
        return attr, attr
    try:
        cell = _focus_cell(ds)
        rows = _kept_rows(ds, cell)
    except Exception:  # noqa: BLE001 - odd data in a file: fall back to the sentence stored in it
        return attr, attr
    n_types = ds.attrs.get("n_types", "")
    explained = _cell_explained(ds, cell, nums)
    share = f"; {pct(explained)} of its response deviation" if math.isfinite(explained) else ""
    try:
        all_kept = bool(int(ds.attrs.get("all_kept", 0)))
    except (TypeError, ValueError):
        all_kept = False
    if all_kept or not rows:
        text = f"every one of the {n_types or len(rows)} types is needed: no reduction, not a mechanism"
        return f"{cell}: {text}.", text
    named = [f"{r['label']} {'excites' if r['sign'] > 0 else 'inhibits'} ({_when(r)})" for r in rows[:NAMED_TYPES]]
    more = len(rows) - len(named)
    listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
    if more:
        listed += f" (and {more} more kept type{'s' if more > 1 else ''})"
    sentence = f"{cell}: {listed}{share}."
    of = f" of {n_types}" if n_types != "" else ""
    compact = f"{len(rows)}{of} types: " + ", ".join(f"{r['label']} ({'+' if r['sign'] > 0 else '-'})" for r in rows)
    return sentence, compact


def _cell_checks(ds: xr.Dataset, cell: str) -> list[str]:
    out = []
    for name, text in (("reduced_r", "reduced r {:.2f}"), ("complement_r", "complement r {:.2f}")):
        if name in ds and ds[name].dims == ("cell",):
            try:
                out.append(text.format(float(ds[name].sel(cell=cell))))
            except (KeyError, ValueError, TypeError):
                pass
    return out


def mechanism_table(ds: xr.Dataset, nums: dict[str, float]) -> str:
    """Every analysed cell's kept types (sign, timing, net contribution) as one folded table.

    Without a reduction, the ``mechanism_per_cell`` lines the file holds, less the one already shown.
    """
    shown = " ".join(str(ds.attrs.get("mechanism", "")).split())
    if "weights" not in ds or "components" not in ds or "cell" not in ds["weights"].dims:
        lines = [" ".join(ln.split()) for ln in str(ds.attrs.get("mechanism_per_cell", "")).splitlines()]
        lines = [ln for ln in dict.fromkeys(lines) if ln and ln != shown]
        if not lines:
            return ""
        items = "".join(f"<li>{html.escape(ln)}</li>" for ln in lines)
        return f"<details><summary>Every analysed cell</summary><ul>{items}</ul></details>"
    rows = []
    try:
        for cell in (str(c) for c in ds["weights"]["cell"].values):
            kept = _kept_rows(ds, cell)
            checks = "; ".join(_cell_checks(ds, cell))
            head = (
                f"<td rowspan='{max(len(kept), 1)}'>{html.escape(cell)}</td>"
                f"<td rowspan='{max(len(kept), 1)}' class='num'>{pct(_cell_explained(ds, cell, nums))}</td>"
                f"<td rowspan='{max(len(kept), 1)}'>{html.escape(checks) or '&ndash;'}</td>"
            )
            for j, r in enumerate(kept):
                rows.append(
                    "<tr>" + (head if j == 0 else "") + f"<td>{html.escape(str(r['label']))}</td>"
                    f"<td>{'excitatory' if r['sign'] > 0 else 'inhibitory'}</td><td class='num'>{_when(r)}</td>"
                    f"<td class='num'>{float(r['net']):+.3g}</td></tr>"
                )
    except Exception as err:  # noqa: BLE001 - odd data in a file must not stop the report
        return f"<p class='na'>The per-cell table could not be computed ({html.escape(type(err).__name__)}).</p>"
    check = str(ds.attrs.get("reduction_check", ""))
    note = f"<p class='meta'>Reducer's check: {html.escape(CHECKS.get(check, check))}.</p>" if check else ""
    return (
        "<details><summary>Every analysed cell: kept types, sign, timing, net contribution</summary>"
        "<table><tr><th>cell</th><th>explained</th><th>reduced-model check</th><th>kept type</th><th>sign</th>"
        "<th>timing</th><th>net (Hz, summed over the window)</th></tr>"
        + "".join(rows)
        + "</table>"
        + note
        + "</details>"
    )


#: the reducer's ``reduction_check`` verdicts in words
CHECKS = {
    "pass": "the kept types reproduce the response and the others do not",
    "all kept": "every type is kept: no reduction, not a mechanism",
    "kept insufficient": "the kept types alone do not reproduce the response",
    "complement sufficient": "the other types reproduce the response too: the kept types are not necessary",
}


def check_text(ds: xr.Dataset, nums: dict[str, float]) -> str:
    """The reduced-model check: complement r, the reducer's verdict, the phenomenon with and without the kept types."""
    out = ""
    if math.isfinite(nums.get("complement_r_mean", float("nan"))):
        out += f"; with the kept types clamped to baseline r = {fmt(nums['complement_r_mean'], 3)}"
    check = str(ds.attrs.get("reduction_check", ""))
    if check:
        out += f"; check: {html.escape(CHECKS.get(check, check))}"
    verdicts = []
    for kind, text in (("reduced", "kept types only"), ("complement", "kept types clamped")):
        if f"measure_pass_{kind}" in ds.attrs:
            try:
                ok = "pass" if int(ds.attrs[f"measure_pass_{kind}"]) else "fail"
            except (TypeError, ValueError):
                ok = "no verdict"
            verdicts.append(f"{text}: {fmt(ds.attrs.get(f'measure_value_{kind}'))} ({ok})")
    if verdicts:
        out += "; the measure with " + ", with ".join(verdicts)
    return out
