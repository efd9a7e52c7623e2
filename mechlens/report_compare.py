"""The report's comparison of models: every experiment's verdict on every model, side by side.

``mechlens run --model-checkpoint a,b`` runs every experiment on every model; the report then opens
with a table whose rows are the experiments (the phenomenon and its measure), whose columns are the
models (label and checkpoint sha256 prefix) and whose cells are the measure's verdict and value, each
linking to that result's section. A model is told apart by what the files record: ``model_label``
(written when several models ran), the model's name, ``model_checkpoint_sha256`` and its parameters.
The table is shown only when the files come from more than one model and at least one experiment
ran on more than one of them, so a single-model report is unchanged.

Also here: the verdict and measure text of one result (:func:`verdict`, :func:`measure_text`), which
the summary table and each section of :mod:`mechlens.report` show too. Every string read from a file
is escaped.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path

import xarray as xr

from mechlens.report_mechanism import fmt

#: the anchor of the comparison (no result section may take it)
COMPARE_ANCHOR = "models-compared"
#: hex digits of a checkpoint's sha256 shown in a column's header
SHA_PREFIX = 12


def number(ds: xr.Dataset, key: str) -> float:
    """A numeric attr of ``ds``; NaN when missing or not a number (a file may hold anything)."""
    try:
        return float(ds.attrs.get(key, float("nan")))
    except (TypeError, ValueError):
        return float("nan")


def verdict(ds: xr.Dataset) -> str:
    """``pass`` / ``fail`` (coloured) from the ``measure_pass`` attr; a dash when there is no verdict."""
    p = ds.attrs.get("measure_pass", "")
    try:
        ok = int(p)
    except (TypeError, ValueError):  # missing, or not a number: no verdict
        return '<span class="na">&ndash;</span>'
    return '<span class="pass">pass</span>' if ok else '<span class="fail">fail</span>'


def measure_value(ds: xr.Dataset) -> str:
    """The measure's value with its units (``3.2 Hz``), or ``""`` when the file has none."""
    value = number(ds, "measure_value")
    if not math.isfinite(value):
        return ""
    units = ds.attrs.get("measure_units", "")
    return f"{value:.3g}" + (f" {html.escape(str(units))}" if units else "")


def measure_text(ds: xr.Dataset) -> str:
    """``name = value units``, or a dash when the file records no measure."""
    name = ds.attrs.get("measure_name", "")
    if not name:
        return "&ndash;"
    value = measure_value(ds)
    return html.escape(str(name)) + (f" = {value}" if value else "")


def _params(text: object) -> str:
    try:
        return json.dumps(json.loads(str(text)), sort_keys=True) if text else ""
    except (TypeError, ValueError):
        return str(text)


def model_identity(ds: xr.Dataset) -> tuple[str, str, str, str]:
    """What tells a result's model apart: (label, model name, checkpoint sha256, parameters as sorted JSON)."""
    a = ds.attrs
    return (
        str(a.get("model_label", "")),
        str(a.get("model", "")),
        str(a.get("model_checkpoint_sha256", "")),
        _params(a.get("model_parameters")),
    )


def model_label(ds: xr.Dataset) -> str:
    """A model's short name: its ``model_label``, else its checkpoint file's stem, else the model's name."""
    label = str(ds.attrs.get("model_label", "") or "")
    if label:
        return label
    checkpoint = str(ds.attrs.get("model_checkpoint", "") or "")
    return Path(checkpoint).stem if checkpoint else str(ds.attrs.get("model", "") or "(model not recorded)")


def comparison(results: Sequence[tuple[str, str, xr.Dataset]]) -> str:
    """The comparison table of several models, as HTML; ``""`` when the results do not compare models.

    Parameters
    ----------
    results : sequence of (str, str, xarray.Dataset)
        Each result's section anchor, its file's stem (the experiment's name when the file has no
        ``experiment`` attr) and its Dataset, in report order.

    Returns
    -------
    str
        A ``<section>`` holding the table: rows = experiments in order of first appearance,
        columns = models in order of first appearance, a last row counting each model's passes among
        its results that have a verdict.
    """
    models: dict[tuple[str, str, str, str], xr.Dataset] = {}
    rows: dict[str, xr.Dataset] = {}
    cells: dict[tuple[str, tuple[str, str, str, str]], list[tuple[str, xr.Dataset]]] = {}
    for key, stem, ds in results:
        ident = model_identity(ds)
        models.setdefault(ident, ds)
        name = str(ds.attrs.get("experiment") or stem)
        rows.setdefault(name, ds)
        cells.setdefault((name, ident), []).append((key, ds))
    shared = any(sum((name, m) in cells for m in models) > 1 for name in rows)
    if len(models) < 2 or not shared:
        return ""
    head, seen = [], set()
    for ident, ds in models.items():
        label = model_label(ds)
        shown, n = label, 1
        while shown.lower() in seen:  # two models of one name (different parameters): told apart
            n += 1
            shown = f"{label}-{n}"
        seen.add(shown.lower())
        sha = ident[2]
        what = f"sha256 {sha[:SHA_PREFIX]}" if sha else "no checkpoint"
        head.append(
            f"<th style='min-width: 9em'>{html.escape(shown)}<br>"
            f"<span class='meta'>{html.escape(ident[1])}, {html.escape(what)}</span></th>"
        )
    body = []
    passes = dict.fromkeys(models, 0)
    judged = dict.fromkeys(models, 0)  # results with a verdict (an experiment may have no measure)
    for name, first in rows.items():
        title = str(first.attrs.get("experiment_title") or name)
        measure = str(first.attrs.get("measure_name", "") or "")
        target = fmt(first.attrs.get("measure_target", ""))
        row = [  # the target (often long) on hover: the models' columns keep the width
            f"<th style='max-width: 26em' title='target: {target}'>{html.escape(title)}<br><span class='meta'>"
            + html.escape(name + (f"; {measure}" if measure else ""))
            + "</span></th>"
        ]
        for ident in models:
            got = cells.get((name, ident), [])
            if not got:
                row.append("<td class='na'>not run</td>")
                continue
            items = []
            for key, ds in got:
                said = str(ds.attrs.get("measure_pass", "")).strip()
                judged[ident] += said in ("0", "1", "False", "True")
                passes[ident] += said in ("1", "True")
                value = measure_value(ds)
                shown = verdict(ds) if said else '<span class="na">no measure</span>'
                items.append(
                    f"<a href='#{html.escape(key)}'>{shown}</a>"
                    + (f" <span class='num'>{value}</span>" if value else "")
                )
            row.append("<td>" + "<br>".join(items) + "</td>")
        body.append("<tr>" + "".join(row) + "</tr>")
    tally = "".join(f"<td><b>{passes[m]}</b> of {judged[m]}</td>" for m in models)
    body.append(f"<tr><th>passed <span class='meta'>(of the results with a verdict)</span></th>{tally}</tr>")
    return (
        f"<section class='page-section' id='{COMPARE_ANCHOR}'><h3 class='page'>Models compared</h3>"
        "<p>Every experiment on every model: the verdict of the experiment's own measure (pass: the model "
        "shows the phenomenon) and the measure's value; each links to that result's section.</p>"
        "<table class='compare'><tr><th>experiment</th>"
        + "".join(head)
        + "</tr>"
        + "".join(body)
        + "</table></section>"
    )
