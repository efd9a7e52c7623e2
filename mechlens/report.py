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

Layout: when the files come from several models, the comparison of the models
(:mod:`mechlens.report_compare`: every experiment's verdict on every model); the summary table;
**Model and data** (every model the files name, its checkpoint and parameters, and what plugins
say it was trained on); then one ``<h2>`` section per result file, in
the order given, whose anchor is its figures folder. The page's only ``<h2>`` elements are those
result sections. Each section opens with the mechanism in one short sentence (the focus cell's kept
cell types, each with its sign and timing) and folds every cell's table away (``<details>``).

Domain prose comes from plugins, never from this module: every implementation of the
``mechlens_report_sections`` hook (:mod:`mechlens.hookspecs`) gets the loaded results
(:class:`ReportResult`) and returns :class:`Section` objects, plain text that this module escapes,
placed inside a result's section (``result=key``) or on the page (``topic="model"``: under Model and
data). A hook that raises or returns something else is named on the page; the rest still show.

Why one file (about 620 lines): the page's layout, its CSS and the order of its sections are read
together; the mechanism text is in :mod:`mechlens.report_mechanism` and the domain prose comes from
plugins.
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import xarray as xr

from mechlens import io
from mechlens.report_compare import COMPARE_ANCHOR, comparison, model_label
from mechlens.report_compare import measure_text as _measure_text
from mechlens.report_compare import number as _num
from mechlens.report_compare import verdict as _verdict
from mechlens.report_mechanism import check_text as _check_text
from mechlens.report_mechanism import fmt as _fmt
from mechlens.report_mechanism import mechanism_summary, mechanism_table
from mechlens.report_mechanism import pct as _pct
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
h3 { font-size: 1.1em; margin: 1.2em 0 0.3em; }
.page-section > h3.page { font-size: 1.45em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.plugin { border-left: 4px solid #8c959f; padding: 0.1em 1em; margin: 1em 0; background: #fafbfc; }
.plugin.tone-fail { border-left-color: #cf222e; } .plugin.tone-pass { border-left-color: #1a7f37; }
.plugin h3 { margin-top: 0.5em; }
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


#: the anchor of the Model and data section (no result section may take it)
MODEL_ANCHOR = "model-and-data"
#: the tones a plugin section may have (its left border: grey, red, green)
TONES = ("", "note", "fail", "pass")


@dataclass(frozen=True)
class ReportResult:
    """One result file of a report, as the ``mechlens_report_sections`` hook sees it.

    Attributes
    ----------
    path : pathlib.Path
        The netCDF file.
    key : str
        Its section's anchor and figures folder (:func:`figures_folder`); a :class:`Section` with
        ``result=key`` goes into that section.
    dataset : xarray.Dataset
        The loaded result (read it; changing it changes nothing on the page).
    """

    path: Path
    key: str
    dataset: xr.Dataset

    @property
    def experiment(self) -> str:
        """The experiment that wrote the file (its ``experiment`` attr), or ``""``."""
        return str(self.dataset.attrs.get("experiment") or "")


@dataclass(frozen=True)
class Section:
    """Text a plugin adds to the report (returned by a ``mechlens_report_sections`` hook).

    Everything is plain text: the report escapes it, so a plugin cannot break the page.

    Attributes
    ----------
    title : str
        Its heading.
    paragraphs : sequence of str
        Paragraphs, in order.
    table : sequence of sequence of str
        A table under the paragraphs; its first row is the header.
    details : sequence of str
        Items of a list folded under ``details_title`` (``<details>``), after the table.
    details_title : str
        The folded list's summary line.
    result : str
        The :attr:`ReportResult.key` of the result this section belongs in; ``""``: a page section.
    topic : str
        For a page section: ``"model"`` puts it under Model and data; anything else after it.
    tone : str
        ``""`` or ``"note"`` (grey), ``"fail"`` (red: why a measure fails), ``"pass"`` (green).
    source : str
        Who wrote it; the report fills in the plugin's name when empty.
    """

    title: str
    paragraphs: Sequence[str] = ()
    table: Sequence[Sequence[str]] = ()
    details: Sequence[str] = ()
    details_title: str = "Details"
    result: str = ""
    topic: str = ""
    tone: str = ""
    source: str = ""


def plugin_sections(results: Sequence[ReportResult], registry: Any = None) -> tuple[list[Section], list[str]]:
    """Every installed plugin's :class:`Section` objects for these results, and what went wrong.

    Each ``mechlens_report_sections`` implementation is called on its own: one that raises, returns
    something other than a list of :class:`Section`, or names a result that is not in the report
    is listed in the second value (and logged) while the others' sections are kept.
    """
    from mechlens import registry as _registry

    reg = registry if registry is not None else _registry.default()
    reg.load()
    keys = {r.key for r in results}
    out: list[Section] = []
    problems: list[str] = []

    def problem(text: str) -> None:
        log.warning("report: %s", text)
        problems.append(text)

    for impl in reg.pm.hook.mechlens_report_sections.get_hookimpls():
        who = str(impl.plugin_name)
        kwargs = {name: list(results) for name in impl.argnames if name == "results"}
        try:
            got = impl.function(**kwargs)
        except Exception as err:  # noqa: BLE001 - a plugin's prose must not stop the report
            problem(f"plugin {who}: mechlens_report_sections raised {type(err).__name__}: {err}")
            continue
        if not isinstance(got, (list, tuple)):
            problem(f"plugin {who}: mechlens_report_sections returned {type(got).__name__}, not a list of Section")
            continue
        for item in got:
            if not isinstance(item, Section):
                problem(f"plugin {who}: mechlens_report_sections returned {type(item).__name__}, not a Section")
            elif item.result and item.result not in keys:
                problem(f"plugin {who}: a section for result {item.result!r}, which is not in this report")
            else:
                out.append(item if item.source else replace(item, source=who))
    return out, problems


def render_section(sec: Section, heading: str = "h3") -> str:
    """A plugin :class:`Section` as HTML, every text escaped."""
    tone = sec.tone if sec.tone in TONES else ""
    parts = [f"<div class='plugin{f' tone-{tone}' if tone else ''}'><{heading}>{html.escape(sec.title)}</{heading}>"]
    parts += [f"<p>{html.escape(str(p))}</p>" for p in sec.paragraphs]
    rows = [list(map(str, r)) for r in sec.table]
    if rows:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
        parts.append(f"<table><tr>{head}</tr>{body}</table>")
    if sec.details:
        items = "".join(f"<li>{html.escape(str(d))}</li>" for d in sec.details)
        parts.append(f"<details><summary>{html.escape(sec.details_title)}</summary><ul>{items}</ul></details>")
    if sec.source:
        parts.append(f"<p class='meta'>from plugin {html.escape(sec.source)}</p>")
    return "".join(parts) + "</div>"


def _short_json(text: Any, limit: int = 160) -> str:
    try:
        out = json.dumps(json.loads(text), sort_keys=True) if text else ""
    except (TypeError, ValueError):
        out = str(text)
    return out if len(out) <= limit else out[: limit - 3] + "..."


def model_and_data(results: Sequence[ReportResult], sections: Sequence[Section]) -> str:
    """The Model and data section: every model the files name (with checkpoint and parameters) and the
    plugins' ``topic="model"`` sections (what it was trained on, how well it agrees with its data)."""
    groups: dict[tuple[str, str, str, str], list[ReportResult]] = {}
    for r in results:
        a = r.dataset.attrs
        key = (
            str(a.get("model_label", "")),
            str(a.get("model", "")),
            str(a.get("model_checkpoint_sha256", "")),
            _short_json(a.get("model_parameters")),
        )
        groups.setdefault(key, []).append(r)
    rows = []
    for (_, model, sha, params), members in groups.items():
        a = members[0].dataset.attrs
        where = " ".join(f"{a.get('model_distribution', '')} {a.get('model_version', '')}".split())
        ckpt = f"sha256 {sha[:16]}..." if sha else "none: weights not from a checkpoint file"
        links = ", ".join(
            f"<a href='#{html.escape(m.key)}'>{html.escape(m.experiment or m.path.stem)}</a>" for m in members
        )
        label = str(a.get("model_label", "") or "")  # several models ran: each has a label
        rows.append(
            "<tr><td>"
            + (f"<b>{html.escape(label)}</b>: " if label else "")
            + f"<code>{html.escape(model or '(not recorded)')}</code> "
            f"<span class='meta'>{html.escape(where)}</span></td><td><code>{html.escape(ckpt)}</code></td>"
            f"<td><code>{html.escape(params)}</code></td><td>{links}</td></tr>"
        )
    about = [s for s in sections if not s.result and s.topic == "model"]
    told = "".join(render_section(s) for s in about) or (
        "<p class='na'>The result files do not say what the model was trained on, and no installed plugin "
        "describes it.</p>"
    )
    return (
        f"<section class='page-section' id='{MODEL_ANCHOR}'><h3 class='page'>Model and data</h3>"
        "<table><tr><th>model</th><th>checkpoint</th><th>parameters</th><th>results</th></tr>"
        + "".join(rows)
        + "</table>"
        + told
        + "</section>"
    )


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
    two files of one experiment do not share (and overwrite) one folder, prefixed by the ``model_label``
    attr when the file has one (``a-osr``: one experiment on several models); ``-2``, ``-3`` ... when the
    name is ``taken`` already (compared ignoring case, as macOS and Windows do). The name is added
    to ``taken``.
    """
    stem = slug(source.stem)
    experiment = slug(str(ds.attrs.get("experiment") or ""), default="")
    base = stem if experiment in ("", stem) else slug(f"{stem}-{experiment}")
    label = slug(str(ds.attrs.get("model_label") or ""), default="")
    if label:  # one experiment on several models (mechlens.experiments.run_models): DIR/<label>/<experiment>.nc
        base = slug(f"{label}-{base}")
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
        ("model label", ds.attrs.get("model_label", "")),
        ("checkpoint", ds.attrs.get("model_checkpoint", "")),
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


def _figures(ds: xr.Dataset, key: str, outdir: Path, registry: Any = None) -> tuple[list[Path], list[str]]:
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
        from mechlens import registry as _registry

        reg = registry if registry is not None else _registry.default()
        try:
            cls = reg.get("experiment", str(exp_name))
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


def _failure_note(ds: xr.Dataset) -> str:
    """What a failed measure means, in the core's neutral words (a plugin's section says more)."""
    return (
        "<p class='fail-note'>The model does not show the phenomenon by this experiment's own rule "
        f"({_measure_text(ds)}; target: {_fmt(ds.attrs.get('measure_target', ''))}). The attribution and the "
        "kept types below explain the response the model gives, which is not the phenomenon.</p>"
    )


def _incomplete_note(ds: xr.Dataset) -> str:
    """The warning of a result whose attributions do not add up to the response (``completeness_ok = 0``)."""
    return (
        "<p class='fail-note'><b>The attributions do not account for the response</b>: they miss the response "
        f"change by up to {_fmt(ds.attrs.get('completeness_error_rel', ''), 2)} of the response range, over the "
        f"tolerance {_fmt(ds.attrs.get('completeness_tolerance', ''))} (mechlens.completeness). The kept types and "
        "contributions below are therefore not a mechanism of this response; rerun with an exact or finer "
        "attributor.</p>"
    )


def section(
    ds: xr.Dataset,
    source: Path,
    outdir: Path,
    key: str | None = None,
    embed: bool = False,
    extra: Sequence[Section] = (),
    registry: Any = None,
) -> tuple[str, str]:
    """The summary-table row and the report section of one result Dataset (figures drawn into ``outdir``).

    ``key`` names its figures folder and anchor (default: :func:`figures_folder` of ``source``);
    with ``embed`` the figures are written into the page as data URIs instead of linked; ``extra``:
    the plugins' sections for this result (:func:`plugin_sections`), shown after the measure.
    """
    name = str(ds.attrs.get("experiment") or source.stem)
    if ds.attrs.get("model_label"):  # several models ran: say on which
        name = f"{name} on {model_label(ds)}"
    key = key or figures_folder(source, ds, {MODEL_ANCHOR, COMPARE_ANCHOR})
    anchor = html.escape(key)
    nums, failed_summary = _summary(ds)
    title = ds.attrs.get("experiment_title") or ds.attrs.get("title") or name
    sentence, compact = mechanism_summary(ds, nums)
    # mechlens.completeness records whether the attributions add up to the response change
    incomplete = str(ds.attrs.get("completeness_ok", "")).strip() in ("0", "False")
    row = (
        f"<tr><td><a href='#{anchor}'>{html.escape(name)}</a></td>"
        f"<td>{_measure_text(ds)}</td><td>{_fmt(ds.attrs.get('measure_target', ''))}</td><td>{_verdict(ds)}</td>"
        f"<td>{html.escape(compact) or '&ndash;'}</td>"
        f"<td class='num{' fail' if incomplete else ''}'>{_fmt(nums['completeness_error_rel'], 2)}"
        f"{' (over tolerance)' if incomplete else ''}</td>"
        f"<td class='num'>{_fmt(nums['explained_fraction_mean'], 2)}</td>"
        f"<td class='num'>{_fmt(nums['reduced_r_mean'], 3)}</td></tr>"
    )
    figs = []
    paths, problems = _figures(ds, key, outdir, registry)
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
    failed = str(ds.attrs.get("measure_pass", "")).strip() in ("0", "False")
    explained_by_plugin = any(e.tone == "fail" for e in extra)
    body = (
        f"<h2 id='{anchor}'>{html.escape(str(title))} <span class='meta'>({html.escape(name)})</span></h2>"
        + (f"<div class='mechanism'>{html.escape(sentence)}</div>" if sentence else "")
        + (_incomplete_note(ds) if incomplete else "")
        + f"<p>Measure: {_measure_text(ds)} &mdash; target: {_fmt(ds.attrs.get('measure_target', ''))} "
        f"&mdash; {_verdict(ds)}.<br>{numbers}.</p>"
        + (_failure_note(ds) if failed and not explained_by_plugin else "")
        + "".join(render_section(e) for e in extra)
        + "".join(figs)
        + mechanism_table(ds, nums)
        + f"<details><summary>Provenance</summary>{_provenance(ds, source)}</details>"
    )
    return row, body


def build(
    files: Sequence[str | os.PathLike[str]],
    outdir: str | os.PathLike[str],
    self_contained: bool = False,
    registry: Any = None,
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
    registry : mechlens.registry.Registry, optional
        Where experiments (their extra figures) and ``mechlens_report_sections`` hooks are looked up;
        default the installed plugins.

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
    results: list[ReportResult] = []
    taken: set[str] = {MODEL_ANCHOR, COMPARE_ANCHOR}
    for f in list(files):
        path = Path(f)
        ds = io.load(path)
        log.info("report: %s", path)
        results.append(ReportResult(path, figures_folder(path, ds, taken), ds))
    sections, hook_problems = plugin_sections(results, registry)
    rows, bodies = [], []
    for r in bar(results, desc="report", unit="file"):
        mine = [s for s in sections if s.result == r.key]
        row, body = section(r.dataset, r.path, outdir, r.key, embed=self_contained, extra=mine, registry=registry)
        rows.append(row)
        bodies.append(body)
    page_sections = "".join(
        f"<section class='page-section'>{render_section(s, 'h3')}</section>"
        for s in sections
        if not s.result and s.topic != "model"
    )
    if hook_problems:
        items = "".join(f"<li>{html.escape(p)}</li>" for p in hook_problems)
        page_sections += f"<div class='na'>Plugin sections that could not be shown:<ul>{items}</ul></div>"
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
full model's; all over each experiment's time window. A kept type's sign is + (excites) or - (inhibits); its
timing is the span where its contribution is at least half its largest, from the window's start. A label that
several channels share is followed by its channel (<i>ON-fast [channel 7]</i>), the same in every figure.</p>
{comparison([(r.key, r.path.stem, r.dataset) for r in results])}
<table>
<tr><th>experiment</th><th>measure</th><th>target</th><th>pass</th><th>kept types (sign)</th>
<th>completeness</th><th>explained</th><th>reduced r</th></tr>
{"".join(rows)}
</table>
{model_and_data(results, sections)}
{page_sections}
{"".join(bodies)}
</body></html>
"""
    out = outdir / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out
