"""The HTML report: a summary table and one section per result, built from saved netCDF files alone.

``mechlens report RESULTS... -o DIR`` and the end of ``mechlens run`` both call :func:`build`. The
page is self-contained (inline CSS, figures linked by relative paths under ``DIR/figures/``); every
number in it is read or computed from the files (:func:`mechlens.results.summary`), so no
model is needed. When the experiment that wrote a file is installed, its extra figures
(:meth:`mechlens.interfaces.Experiment.figures`) are drawn too.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from mechlens import io
from mechlens.results import summary

log = logging.getLogger("mechlens")

STAGES = ("model", "stimulus", "attributor", "reducer", "experiment")

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 2.2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.35em 0.6em; vertical-align: top; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.pass { color: #1a7f37; font-weight: bold; } .fail { color: #cf222e; font-weight: bold; } .na { color: #888; }
.mechanism { background: #f6f8fa; border-left: 4px solid #0969da; padding: 0.6em 1em; margin: 1em 0; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
details { margin: 1em 0; } code, pre { font-size: 0.85em; background: #f6f8fa; }
pre { padding: 0.6em; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
.meta { color: #666; font-size: 0.85em; }
"""

#: what each standard figure shows (captions)
CAPTIONS = {
    "stimulus": "The stimulus (contrast; the time window of interest is shaded).",
    "response": "The model's responses of the analysed cells; right: the focus cell across the sweep.",
    "attribution": "Attribution of the focus cell's response to each first-layer cell type over time "
    "(summed over space; red excites, blue inhibits; colour scale symmetric about 0).",
    "contributions": "Contributions of the kept cell types over time against the response change "
    "(response - baseline); dashed: their sum; dotted: all other types together.",
    "reduced": "The reduced model (only the kept cell types active, the others clamped to baseline) "
    "against the full model.",
    "measure": "The phenomenon's measure across the sweep (grey: each analysed cell; black: mean).",
    "ground_truth": "The model's decomposition beside the ground truth's.",
}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or value == "":
        return "&ndash;"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return "&ndash;"
        return f"{value:.{digits}g}"
    return html.escape(str(value))


def _pct(value: float) -> str:
    return f"{100 * value:.0f} %" if math.isfinite(value) else "&ndash;"


def _num(ds: xr.Dataset, key: str) -> float:
    try:
        return float(ds.attrs.get(key, float("nan")))
    except (TypeError, ValueError):
        return float("nan")


def _verdict(ds: xr.Dataset) -> str:
    p = ds.attrs.get("measure_pass", "")
    if p == "" or p is None:
        return '<span class="na">&ndash;</span>'
    return '<span class="pass">pass</span>' if int(p) else '<span class="fail">fail</span>'


def _measure_text(ds: xr.Dataset) -> str:
    name = ds.attrs.get("measure_name", "")
    if not name:
        return "&ndash;"
    value = _num(ds, "measure_value")
    units = ds.attrs.get("measure_units", "")
    text = html.escape(str(name))
    if math.isfinite(value):
        text += f" = {value:.3g}" + (f" {html.escape(str(units))}" if units else "")
    return text


def _provenance(ds: xr.Dataset, source: Path) -> str:
    rows = []
    for stage in STAGES:
        if not ds.attrs.get(stage):
            continue
        dist = ds.attrs.get(f"{stage}_distribution", "")
        version = ds.attrs.get(f"{stage}_version", "")
        params = ds.attrs.get(f"{stage}_parameters", "")
        try:
            params = json.dumps(json.loads(params), sort_keys=True) if params else ""
        except ValueError:
            pass
        rows.append(
            f"<tr><th>{stage}</th><td><code>{html.escape(str(ds.attrs[stage]))}</code> "
            f"<span class='meta'>{html.escape(f'{dist} {version}'.strip())}</span></td>"
            f"<td><code>{html.escape(str(params))}</code></td></tr>"
        )
    extra = [
        ("checkpoint sha256", ds.attrs.get("model_checkpoint_sha256", "") or "(none: weights not from a file)"),
        ("layer", ds.attrs.get("layer", "")),
        ("analysed cells", ", ".join(json.loads(ds.attrs.get("analysed_cells", "[]") or "[]"))),
        ("seed", ds.attrs.get("seed", "")),
        ("window", ds.attrs.get("window_doc", "")),
        ("reference", ds.attrs.get("experiment_reference", "")),
        ("mechlens", f"{ds.attrs.get('mechlens_version', '')}, created {ds.attrs.get('created', '')}"),
        ("run time", f"{_num(ds, 'experiment_wall_s'):.1f} s" if math.isfinite(_num(ds, "experiment_wall_s")) else ""),
        ("command", ds.attrs.get("history", "")),
        ("file", source.name),
    ]
    for key, value in extra:
        if value != "" and value is not None:
            rows.append(f"<tr><th>{key}</th><td colspan='2'><code>{html.escape(str(value))}</code></td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _per_cell(ds: xr.Dataset) -> str:
    """The ``mechanism_per_cell`` attr (one sentence per analysed cell) as a collapsed list."""
    lines = [ln for ln in str(ds.attrs.get("mechanism_per_cell", "")).splitlines() if ln.strip()]
    if not lines:
        return ""
    items = "".join(f"<li>{html.escape(ln)}</li>" for ln in lines)
    return f"<details><summary>Every analysed cell</summary><ul>{items}</ul></details>"


#: the reducer's ``reduction_check`` verdicts in words
CHECKS = {
    "pass": "the kept types reproduce the response and the others do not",
    "all kept": "every type is kept: no reduction, not a mechanism",
    "kept insufficient": "the kept types alone do not reproduce the response",
    "complement sufficient": "the other types reproduce the response too: the kept types are not necessary",
}


def _check_text(ds: xr.Dataset, nums: dict[str, float]) -> str:
    """The reduced-model check: complement r, the reducer's verdict, the phenomenon with and without the kept types."""
    out = ""
    if math.isfinite(nums.get("complement_r_mean", float("nan"))):
        out += f"; with the kept types clamped to baseline r = {_fmt(nums['complement_r_mean'], 3)}"
    check = str(ds.attrs.get("reduction_check", ""))
    if check:
        out += f"; check: {html.escape(CHECKS.get(check, check))}"
    verdicts = []
    for kind, text in (("reduced", "kept types only"), ("complement", "kept types clamped")):
        if f"measure_pass_{kind}" in ds.attrs:
            ok = "pass" if int(ds.attrs[f"measure_pass_{kind}"]) else "fail"
            verdicts.append(f"{text}: {_fmt(ds.attrs.get(f'measure_value_{kind}'))} ({ok})")
    if verdicts:
        out += "; the measure with " + ", with ".join(verdicts)
    return out


def _details(ds: xr.Dataset) -> str:
    """The ``mechanism_details`` attr (every kept type of every cell) as a collapsed list."""
    lines = [ln for ln in str(ds.attrs.get("mechanism_details", "")).splitlines() if ln.strip()]
    if not lines:
        return ""
    items = "".join(f"<li>{html.escape(ln)}</li>" for ln in lines)
    return (
        f"<details><summary>Every kept type, and the reduced-model check, per cell</summary><ul>{items}</ul></details>"
    )


def _figures(ds: xr.Dataset, name: str, outdir: Path) -> list[Path]:
    from mechlens import figures

    figdir = outdir / "figures" / name
    paths = figures.standard_figures(ds, figdir)
    exp_name = ds.attrs.get("experiment")
    if exp_name:
        from mechlens import registry

        try:
            cls = registry.get("experiment", str(exp_name))
        except Exception:  # noqa: BLE001 - the plugin is not installed here: standard figures only
            cls = None
        if cls is not None:
            try:
                paths += [Path(p) for p in cls().figures(ds, figdir)]
            except Exception as err:  # noqa: BLE001 - a plugin's extra figure must not stop the report
                log.warning("extra figures of experiment %s failed: %s: %s", exp_name, type(err).__name__, err)
    return paths


def section(ds: xr.Dataset, source: Path, outdir: Path) -> tuple[str, str]:
    """The summary-table row and the report section of one result Dataset (figures drawn into ``outdir``)."""

    name = str(ds.attrs.get("experiment") or source.stem)
    anchor = html.escape(name)
    nums = summary(ds)
    title = ds.attrs.get("experiment_title") or ds.attrs.get("title") or name
    mechanism = ds.attrs.get("mechanism", "")
    row = (
        f"<tr><td><a href='#{anchor}'>{html.escape(name)}</a></td>"
        f"<td>{_measure_text(ds)}</td><td>{_fmt(ds.attrs.get('measure_target', ''))}</td><td>{_verdict(ds)}</td>"
        f"<td>{html.escape(str(mechanism)) or '&ndash;'}</td>"
        f"<td class='num'>{_fmt(nums['completeness_error_rel'], 2)}</td>"
        f"<td class='num'>{_fmt(nums['explained_fraction_mean'], 2)}</td>"
        f"<td class='num'>{_fmt(nums['reduced_r_mean'], 3)}</td></tr>"
    )
    figs = []
    for path in _figures(ds, name, outdir):
        rel = os.path.relpath(path, outdir).replace(os.sep, "/")
        key = path.stem
        caption = CAPTIONS.get(key, key.replace("_", " "))
        figs.append(
            f"<figure><img src='{html.escape(rel)}' alt='{html.escape(name)} {html.escape(key)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    numbers = (
        f"completeness error {_fmt(nums['completeness_error_rel'], 2)} of the response range; "
        f"kept components explain {_pct(nums['explained_fraction_mean'])} of the response change; "
        f"reduced model r = {_fmt(nums['reduced_r_mean'], 3)}, peak shift "
        f"{_fmt(nums['reduced_peak_shift_s'] * 1000 if math.isfinite(nums['reduced_peak_shift_s']) else None, 3)} ms "
        f"(all over {html.escape(str(ds.attrs.get('window_doc') or 'the window of interest'))})" + _check_text(ds, nums)
    )
    body = (
        f"<h2 id='{anchor}'>{html.escape(str(title))} <span class='meta'>({html.escape(name)})</span></h2>"
        + (f"<div class='mechanism'>{html.escape(str(mechanism))}</div>" if mechanism else "")
        + f"<p>Measure: {_measure_text(ds)} &mdash; target: {_fmt(ds.attrs.get('measure_target', ''))} "
        f"&mdash; {_verdict(ds)}.<br>{numbers}.</p>"
        + "".join(figs)
        + _per_cell(ds)
        + _details(ds)
        + f"<details><summary>Provenance</summary>{_provenance(ds, source)}</details>"
    )
    return row, body


def build(files: Sequence[str | os.PathLike[str]], outdir: str | os.PathLike[str]) -> Path:
    """Write ``outdir/report.html`` and its figures from saved result files.

    Parameters
    ----------
    files : sequence of path
        netCDF files written by mechlens (``mechlens run`` results); they are loaded and validated
        with :func:`mechlens.io.load`.
    outdir : path
        The report folder (created if missing); figures go to ``outdir/figures/<experiment>/``.

    Returns
    -------
    pathlib.Path
        The ``report.html`` written.

    Raises
    ------
    FileFormatError
        A file is missing, corrupt or not written by mechlens.
    """
    from mechlens import __version__
    from mechlens.progress import bar

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rows, bodies = [], []
    for f in bar(list(files), desc="report", unit="file"):
        path = Path(f)
        ds = io.load(path)
        log.info("report: %s", path)
        row, body = section(ds, path, outdir)
        rows.append(row)
        bodies.append(body)
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mechlens report</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body>
<h1>mechlens report</h1>
<p class="meta">mechlens {html.escape(__version__)}, built {created} from {len(rows)} result file(s).</p>
<p>Each experiment shows a model the stimulus of a retinal phenomenon, attributes the analysed cells' responses
to the first-layer cell types, keeps the few types that generate the response, and checks with a reduced model
(every other type clamped to its baseline) that they suffice. <i>completeness</i>: largest
|sum of attributions - (response - baseline)| over the response range; <i>explained</i>: fraction of the response
change accounted for by the kept types; <i>reduced r</i>: correlation of the reduced model's response with the
full model's; all over each experiment's time window.</p>
<table>
<tr><th>experiment</th><th>measure</th><th>target</th><th>pass</th><th>mechanism</th>
<th>completeness</th><th>explained</th><th>reduced r</th></tr>
{"".join(rows)}
</table>
{"".join(bodies)}
</body></html>
"""
    out = outdir / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out
