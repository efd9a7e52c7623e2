"""The HTML report: a summary table and one section per result, built from saved netCDF files alone.

``mechlens report RESULTS... -o DIR`` and the end of ``mechlens run`` both call :func:`build`. The
page has inline CSS and links its figures by relative paths under ``DIR/figures/``, or, with
``self_contained`` (``mechlens report --self-contained``), carries them as data URIs, so the one
file can be mailed or attached to a lab notebook; every
number in it is read or computed from the files (:func:`mechlens.results.summary`), so no
model is needed. When the experiment that wrote a file is installed, its extra figures
(:meth:`mechlens.interfaces.Experiment.figures`) are drawn too.

Each result file gets its own folder ``DIR/figures/<name>/``, ``<name>`` made from the file's stem
and experiment by :func:`slug` (one safe path component: a name read from a file never points
outside ``DIR``) and made unique within the report (:func:`figures_folder`). A file with odd
contents (attrs that are not valid JSON, an all-NaN response) still gets its section, which says
what could not be drawn.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging
import math
import os
import re
import warnings
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


#: device names Windows reserves; a folder so named cannot be created there
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}


def slug(text: str, default: str = "result", max_length: int = 64) -> str:
    """``text`` as one safe path component: ASCII letters, digits, ``.``, ``_`` and ``-`` only.

    Names read from result files become folder names; ``../..``, an absolute path or a separator
    in them must not make a folder anywhere but one level below ``figures/``. Runs of other
    characters become ``-``; leading and trailing dots, dashes and underscores are dropped (so
    never ``.``, ``..``, a hidden or an option-like name); an empty result is ``default``.

    Examples
    --------
    >>> slug("../../etc"), slug("/tmp/x y"), slug("..")
    ('etc', 'tmp-x-y', 'result')
    """
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("._-")[:max_length].rstrip("._-")
    if not out:
        return default
    if out.split(".")[0].upper() in _RESERVED:
        out = f"_{out}"
    return out


def figures_folder(source: Path, ds: xr.Dataset, taken: set[str]) -> str:
    """The folder name under ``figures/`` (and the section's anchor) of one result file.

    The slug of the file's stem, followed by the experiment's when it differs (``run1-osr``), so that
    two files of one experiment do not share (and overwrite) one folder; ``-2``, ``-3`` ... when the
    name is ``taken`` already (compared ignoring case, as macOS and Windows do). The name is added
    to ``taken``.
    """
    stem = slug(source.stem)
    experiment = slug(str(ds.attrs.get("experiment") or ""), default="")
    base = stem if experiment in ("", stem) else slug(f"{stem}-{experiment}")
    name, n = base, 1
    while name.lower() in taken:
        n += 1
        name = f"{base}-{n}"
    taken.add(name.lower())
    return name


def _json_list(text: Any) -> str:
    """A JSON list attr as ``"a, b"``; the raw text when it is not one (a file may hold anything)."""
    try:
        values = json.loads(text) if text else []
    except (TypeError, ValueError):
        return str(text)
    return ", ".join(map(str, values)) if isinstance(values, list) else str(text)


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
    try:
        ok = int(p)
    except (TypeError, ValueError):  # missing, or not a number: no verdict
        return '<span class="na">&ndash;</span>'
    return '<span class="pass">pass</span>' if ok else '<span class="fail">fail</span>'


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
        ("analysed cells", _json_list(ds.attrs.get("analysed_cells", ""))),
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
            try:
                ok = "pass" if int(ds.attrs[f"measure_pass_{kind}"]) else "fail"
            except (TypeError, ValueError):
                ok = "no verdict"
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


def _figures(ds: xr.Dataset, key: str, outdir: Path) -> tuple[list[Path], list[str]]:
    """Draw a result's figures into ``outdir/figures/<key>/``; the files, and what could not be drawn."""
    from mechlens import figures

    figdir = outdir / "figures" / key
    problems: list[str] = []

    def failed(name: str, err: Exception) -> None:
        log.warning("figure %s of %s could not be drawn: %s: %s", name, key, type(err).__name__, err)
        problems.append(f"the {name} figure ({type(err).__name__}: {err})")

    paths = figures.standard_figures(ds, figdir, on_error=failed)
    exp_name = ds.attrs.get("experiment")
    if exp_name:
        from mechlens import registry

        try:
            cls = registry.get("experiment", str(exp_name))
        except Exception:  # noqa: BLE001 - the plugin is not installed here: standard figures only
            cls = None
        if cls is not None:
            try:
                extra = [Path(p) for p in cls().figures(ds, figdir)]
            except Exception as err:  # noqa: BLE001 - a plugin's extra figure must not stop the report
                log.warning("extra figures of experiment %s failed: %s: %s", exp_name, type(err).__name__, err)
                problems.append(f"the extra figures of experiment {exp_name} ({type(err).__name__}: {err})")
                extra = []
            inside = Path(os.path.abspath(figdir))
            for path in extra:
                # a page links only what lies in its own folder
                if Path(os.path.abspath(path)).is_relative_to(inside):
                    paths.append(path)
                else:
                    problems.append(f"the figure {path} (written outside {figdir})")
    return paths, problems


def _summary(ds: xr.Dataset) -> tuple[dict[str, float], str]:
    """:func:`mechlens.results.summary`, all NaN (and why) when the file's data do not allow it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: the numbers are NaN, shown as -
            return summary(ds), ""
    except Exception as err:  # noqa: BLE001 - odd data in a file must not stop the report
        keys = ("completeness_error_rel", "explained_fraction_mean", "reduced_r_mean", "reduced_peak_shift_s")
        return dict.fromkeys(keys, float("nan")), f"the summary numbers ({type(err).__name__}: {err})"


def section(ds: xr.Dataset, source: Path, outdir: Path, key: str | None = None, embed: bool = False) -> tuple[str, str]:
    """The summary-table row and the report section of one result Dataset (figures drawn into ``outdir``).

    ``key`` names its figures folder and anchor (default: :func:`figures_folder` of ``source``);
    with ``embed`` the figures are written into the page as data URIs instead of linked.
    """
    name = str(ds.attrs.get("experiment") or source.stem)
    key = key or figures_folder(source, ds, set())
    anchor = html.escape(key)
    nums, failed_summary = _summary(ds)
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
    paths, problems = _figures(ds, key, outdir)
    if failed_summary:
        problems.insert(0, failed_summary)
    for path in paths:
        rel = os.path.relpath(path, outdir).replace(os.sep, "/")
        if embed:  # one file to mail or attach to a lab notebook
            rel = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
        fig_key = path.stem
        caption = CAPTIONS.get(fig_key, fig_key.replace("_", " "))
        if fig_key == "response" and "condition" not in ds.dims:
            caption = caption.split("; right:")[0] + "."  # one panel: there is no sweep to show
        figs.append(
            f"<figure><img src='{html.escape(rel)}' alt='{html.escape(name)} {html.escape(fig_key)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    if problems:
        items = "".join(f"<li>{html.escape(p)}</li>" for p in problems)
        figs.append(f"<div class='na'>Could not be drawn from {html.escape(source.name)}:<ul>{items}</ul></div>")
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


def build(
    files: Sequence[str | os.PathLike[str]], outdir: str | os.PathLike[str], self_contained: bool = False
) -> Path:
    """Write ``outdir/report.html`` and its figures from saved result files.

    Parameters
    ----------
    files : sequence of path
        netCDF files written by mechlens (``mechlens run`` results); they are loaded and validated
        with :func:`mechlens.io.load`.
    outdir : path
        The report folder (created if missing); each file's figures go to ``outdir/figures/<name>/``
        (:func:`figures_folder`).
    self_contained : bool
        Embed the figures in the HTML (base64 PNG data URIs), so ``report.html`` alone carries the
        whole report; the PNGs are still written beside it.

    Returns
    -------
    pathlib.Path
        The ``report.html`` written.

    Raises
    ------
    FileFormatError
        A file is missing, corrupt or not written by mechlens.
    UsageError
        ``outdir`` cannot be written (checked before any file is read).
    """
    from mechlens import __version__
    from mechlens.progress import bar

    outdir = io.check_output(outdir, folder=True)
    outdir.mkdir(parents=True, exist_ok=True)
    rows, bodies = [], []
    taken: set[str] = set()
    for f in bar(list(files), desc="report", unit="file"):
        path = Path(f)
        ds = io.load(path)
        log.info("report: %s", path)
        row, body = section(ds, path, outdir, figures_folder(path, ds, taken), embed=self_contained)
        rows.append(row)
        bodies.append(body)
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mechlens report</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body>
<h1>mechlens report</h1>
<p class="meta">mechlens {html.escape(__version__)}, built {created} from {len(rows)} result file(s).</p>
<p>Each experiment shows a model the stimulus of a phenomenon, attributes the analysed cells' responses
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
