"""The CF-1.11 and ACDD-1.3 attrs of the files mechlens writes, and their provenance layout.

In memory a mechlens Dataset carries flat provenance attrs (``model``, ``model_parameters``,
``frame_period_s``, ``measure_value`` ...; docs/contract.md). A file keeps CF and ACDD attrs at the
top and groups the rest into one JSON attr per stage (:func:`file_attrs`; docs/data-model.md,
"Files"); :func:`memory_attrs` turns a file's attrs back into the flat names, so every reader sees
what the pipeline made, and files written before the layout read as they are.
:func:`variable_attrs` gives each variable the ``long_name``, ``units`` and
``coverage_content_type`` it lacks. ``tests/mechlens/test_compliance.py`` checks every kind of
output with the IOOS compliance checker.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from mechlens import schema
from mechlens.errors import FileFormatError

#: the conventions every file follows (its ``Conventions`` attr is ``"CF-1.11, ACDD-1.3"``)
CONVENTIONS = "CF-1.11"
ACDD = "ACDD-1.3"


def safe_attr(value: Any) -> Any:
    """Convert an attr value to a type netCDF4 accepts.

    None becomes ``""``, a bool 0/1, a dict or a list holding non-numbers a JSON string, a Path a str.
    """
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray) and value.dtype.kind in "iuf":
        return value
    if (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in value)
    ):
        return np.asarray(value)
    return json.dumps(value, default=str, sort_keys=True)


def safe_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k): safe_attr(v) for k, v in attrs.items()}


#: ``(units, long_name)`` of the coords of docs/contract.md; ``None``: no units (strings)
COORD_ATTRS: dict[str, tuple[str | None, str]] = {
    "time": ("s", "time"),
    "y": ("um", "pixel centre, vertical"),
    "x": ("um", "pixel centre, horizontal"),
    "lag": ("s", "time of the history frame before the output time"),
    "cell": (None, "model output cell"),
    "unit_channel": ("1", "channel of the hidden unit in the attributed layer"),
    "unit_y": ("1", "row of the hidden unit in the attributed layer"),
    "unit_x": ("1", "column of the hidden unit in the attributed layer"),
    "component": ("1", "component kept by the reducer"),
    "n_types": ("1", "number of cell types kept, in rank order"),
    "gt_unit": (None, "unit of the ground-truth decomposition"),
    "unit_type": (None, "cell type of the channel"),
    "unit_group": ("1", "cell type (group of channels) of the channel"),
}

#: ``(units, long_name)`` of the stage variables of docs/contract.md, for a plugin that set none
VARIABLE_ATTRS: dict[str, tuple[str, str]] = {
    "stimulus": ("1", "contrast (z-scored; 0 = mean grey, negative = dark)"),
    "response": ("Hz", "model firing rate"),
    "attribution": ("Hz", "contribution of each hidden unit to the cell's rate"),
    "baseline_response": ("Hz", "model firing rate for the baseline window"),
    "completeness_error": ("Hz", "sum of attributions minus (response - baseline_response)"),
    "weights": ("Hz", "attribution carried by each component"),
    "components": ("1", "loading of each hidden unit on the component"),
    "reduced_response": ("Hz", "model firing rate with only the kept units active"),
    "in_window": ("1", "1 = time point inside the window of interest"),
    "reduction_window": ("1", "1 = time point inside the reducer's window"),
    "kept": ("1", "1 = unit kept active in the reduced model"),
}

#: ACDD ``coverage_content_type`` (ISO 19115-1) of the variables that are not model results
CONTENT_TYPES = {
    "stimulus": "image",
    "completeness_error": "qualityInformation",
    "in_window": "auxiliaryInformation",
    "reduction_window": "auxiliaryInformation",
    "kept": "auxiliaryInformation",
    "gt_attribution": "referenceInformation",
}


def variable_attrs(name: str, var: xr.DataArray, is_coord: bool) -> dict[str, Any]:
    """CF / ACDD attrs ``var`` lacks: ``long_name``, ``units`` where known, ``coverage_content_type``.

    Values a plugin set are kept. A variable of no known name gets its name in words as
    ``long_name``, and ``units = "1"`` only when it holds integers (flags, counts, indices): the units
    of unknown float data cannot be guessed, so a plugin must set them.
    """
    add: dict[str, Any] = {}
    units, long_name = COORD_ATTRS.get(name, (None, "")) if is_coord else VARIABLE_ATTRS.get(name, (None, ""))
    if not is_coord and not units:
        declared = getattr(schema, "REDUCTION_VARIABLES", {}).get(name)
        if declared is not None:
            units, long_name = declared.units, declared.meaning
    if name == "condition":
        long_name = str(var.attrs.get("swept", "")) or "condition"
    numeric = var.dtype.kind in "fiub"
    if "long_name" not in var.attrs and "standard_name" not in var.attrs:
        add["long_name"] = long_name or name.replace("_", " ")
    if numeric and "units" not in var.attrs:
        if units:
            add["units"] = units
        elif var.dtype.kind in "iub":
            add["units"] = "1"
    if is_coord:
        if var.dims == (name,):
            add.setdefault("coverage_content_type", "coordinate")
    elif "coverage_content_type" not in var.attrs:
        add["coverage_content_type"] = CONTENT_TYPES.get(name, "modelResult")
    return {k: v for k, v in add.items() if k not in var.attrs}


# -- the file's attrs: CF and ACDD at the top, mechlens provenance grouped per stage -------------------

#: the layout version of the global attrs (absent in files written before the layout existed)
FORMAT = 2

#: the stages whose provenance is grouped into one JSON attr ``mechlens_<stage>`` each
STAGE_GROUPS = ("model", "stimulus", "attributor", "reducer", "experiment")

#: unprefixed attrs that belong to a stage's group (docs/contract.md); any other unprefixed attr a
#: plugin sets goes to ``mechlens_attrs``
STAGE_ATTRS: dict[str, tuple[str, ...]] = {
    "stimulus": ("frame_period_s", "pre_s", "pixel_um", "swept", "seed"),
    "attributor": ("attribution_info", "layer", "completeness_tolerance", "completeness_ok", "completeness_error_rel"),
    "reducer": (
        "all_kept",
        "reduction_check",
        "check_fraction",
        "check_kept",
        "check_complement",
        "n_types",
        "n_kept_types",
        "criterion_met",
        "explained_pooled",
        "explained_threshold",
        "ranking",
        "window",
    ),
}

#: the attrs of an experiment's result (docs/contract.md, "Experiment results") that are not its provenance
RESULT_ATTRS = (
    "window_doc",
    "analysed_cells",
    "focus_cell",
    "focus_condition",
    "mechanism",
    "mechanism_per_cell",
    "mechanism_details",
    "explained_fraction_mean",
    "reduced_r_mean",
    "reduced_peak_shift_s",
    "complement_r_mean",
)

#: global attrs kept as they are: CF, ACDD 1.3 and the file's own identification
TOP_ATTRS = frozenset(
    {
        "Conventions",
        "title",
        "summary",
        "keywords",
        "keywords_vocabulary",
        "history",
        "source",
        "comment",
        "references",
        "institution",
        "project",
        "license",
        "id",
        "naming_authority",
        "processing_level",
        "acknowledgment",
        "date_created",
        "date_modified",
        "date_issued",
        "creator_name",
        "creator_email",
        "creator_url",
        "creator_type",
        "creator_institution",
        "publisher_name",
        "publisher_email",
        "publisher_url",
        "product_version",
        "mechlens_version",
        "mechlens_format",
    }
)

#: ACDD attrs a user may give through the environment (``MECHLENS_CREATOR_NAME=...``): who made the
#: data is not something mechlens can know
ACDD_FROM_ENVIRONMENT = (
    "creator_name",
    "creator_email",
    "creator_url",
    "institution",
    "project",
    "license",
    "publisher_name",
    "publisher_email",
    "publisher_url",
)

_STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d")


def _group_of(key: str) -> tuple[str, str]:
    """``(group, key inside it)`` for an in-memory attr name; group ``""`` for a top-level attr."""
    if key in TOP_ATTRS or key.startswith("mechlens_"):  # mechlens's own markers (mechlens_unfinished) too
        return "", key
    for stage in STAGE_GROUPS:
        if key == stage:
            return stage, "plugin"
        if key.startswith(f"{stage}_"):
            inner = key[len(stage) + 1 :]
            return (stage, inner) if inner not in ("plugin", "attrs") else (stage, f"attrs.{key}")
    for stage, names in STAGE_ATTRS.items():
        if key in names:
            return stage, f"attrs.{key}"
    if key in RESULT_ATTRS or key.startswith("measure_"):
        return "result", key
    return "attrs", key


def _to_json(value: Any) -> Any:
    """A netCDF-safe attr value as a JSON value that :func:`_from_json` turns back into it exactly."""
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None  # strict JSON has no NaN
    if isinstance(value, np.ndarray):
        return _to_json(value.item()) if value.ndim == 0 else [_to_json(v) for v in value.tolist()]
    if isinstance(value, str) and value[:1] in "{[":
        # a JSON string (parameters, info) is stored as its object, when that gives back the same string
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        numbers = isinstance(parsed, list) and all(_is_number(v) for v in parsed)
        if not numbers and json.dumps(parsed, sort_keys=True) == value:
            return parsed
    return value


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _from_json(value: Any) -> Any:
    if value is None:
        return float("nan")
    if isinstance(value, list) and value and all(_is_number(v) for v in value):
        return np.asarray([np.nan if v is None else v for v in value])
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _describe_run(attrs: Mapping[str, Any], ds: xr.Dataset | None) -> tuple[str, str, str]:
    """``(title, summary, source)`` in words, from the stages recorded in ``attrs``."""
    from mechlens import __version__

    def who(stage: str) -> str:
        dist, version = attrs.get(f"{stage}_distribution", ""), attrs.get(f"{stage}_version", "")
        return f"{attrs[stage]!r}" + (f" ({dist} {version})".rstrip() if dist else "")

    present = [s for s in STAGE_GROUPS if attrs.get(s)]
    source = f"mechlens {attrs.get('mechlens_version', __version__)}" + (
        ": " + ", ".join(f"{s} {who(s)}" for s in present) if present else ""
    )
    parts = []
    if attrs.get("stimulus") and attrs.get("model"):
        swept = f" (swept: {attrs['swept']})" if attrs.get("swept") else ""
        parts.append(f"Responses of the model {who('model')} to the stimulus {who('stimulus')}{swept}")
    elif attrs.get("stimulus"):
        parts.append(f"The stimulus {who('stimulus')}")
    elif attrs.get("model"):
        parts.append(f"Output of the model {who('model')}")
    if attrs.get("attributor"):
        layer = f" of layer {attrs['layer']!r}" if attrs.get("layer") else ""
        parts.append(f"attributed to the hidden units{layer} by {who('attributor')}")
    if attrs.get("reducer"):
        parts.append(f"reduced by {who('reducer')}")
    summary = ", ".join(parts) + "." if parts else ""
    if ds is not None and not parts:
        summary = "Variables " + ", ".join(map(str, ds.data_vars)) + " written by mechlens."
    if attrs.get("experiment"):
        summary = f"Experiment {who('experiment')}: {attrs.get('experiment_title', '')}. " + summary
        if attrs.get("measure_name"):
            value = attrs.get("measure_value", "")
            shown = f"{value:.4g}" if isinstance(value, (float, np.floating)) else str(value)
            summary += f" Measure: {attrs['measure_name']} = {shown}."
    title = "mechlens: " + " on ".join(str(attrs[s]) for s in ("model", "stimulus") if attrs.get(s))
    title = title if present else "mechlens dataset"
    return title, summary.strip() or "A dataset written by mechlens.", source


def file_attrs(attrs: Mapping[str, Any], ds: xr.Dataset | None = None) -> dict[str, Any]:
    """The global attrs of a file, from a Dataset's attrs (the inverse of :func:`memory_attrs`).

    CF and ACDD 1.3 attrs stay at the top (``Conventions``, ``title``, ``summary``, ``keywords``,
    ``history`` with ISO 8601 timestamps, ``date_created``, ``source``, ``comment``, ``references``,
    ``creator_name`` ... when known, ``mechlens_version``, ``mechlens_format``); the rest is grouped into
    one JSON object per stage, ``mechlens_<stage>`` (``plugin``, ``distribution``, ``version``,
    ``parameters``, its other ``<stage>_*`` attrs by their suffix and its unprefixed attrs under
    ``attrs``), ``mechlens_result`` (an experiment's measure and summary) and ``mechlens_attrs`` (any
    other attr). See docs/data-model.md, "Files".

    Parameters
    ----------
    attrs : mapping
        A Dataset's attrs as the pipeline makes them (docs/contract.md), or already in this layout.
    ds : xarray.Dataset, optional
        The Dataset, to name its variables in the summary when no stage is recorded.
    """
    from mechlens import __version__

    flat = safe_attrs(memory_attrs(attrs))
    flat.setdefault("mechlens_version", __version__)
    created = str(flat.pop("created", "") or flat.get("date_created", "") or _now())
    title, summary, source = _describe_run(flat, ds)
    out: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        group, inner = _group_of(key)
        if not group:
            out[key] = value
        elif inner.startswith("attrs."):
            groups.setdefault(group, {}).setdefault("attrs", {})[inner[len("attrs.") :]] = _to_json(value)
        else:
            groups.setdefault(group, {})[inner] = _to_json(value)
    conventions = [c.strip() for c in str(out.get("Conventions", "")).split(",") if c.strip()]
    conventions = [c for c in conventions if not c.startswith(("CF-", "ACDD-"))]
    out["Conventions"] = ", ".join([CONVENTIONS, ACDD, *conventions])
    out.setdefault("title", title)
    out.setdefault("summary", summary)
    out["source"] = source
    words = ["mechlens", "neural circuit model"]
    words += [str(flat[s]) for s in STAGE_GROUPS if flat.get(s)]
    words += ["attribution"] if flat.get("attributor") else []
    out["keywords"] = ", ".join(dict.fromkeys(words))
    out["date_created"] = created
    history = [line for line in str(out.get("history", "")).splitlines() if line.strip()]
    history = [line if _STAMPED.match(line) else f"{created}: {line}" for line in history]
    out["history"] = "\n".join(history or [f"{created}: mechlens {flat['mechlens_version']} (Python API)"])
    out.setdefault(
        "comment",
        "mechlens provenance: the JSON attrs mechlens_<stage> hold each stage's plugin, distribution, version "
        "and parameters, mechlens_result an experiment's measure; see the mechlens data model (Files).",
    )
    # the core cites nothing of its own; a file carries the literature of the experiment it ran
    if flat.get("experiment_reference"):
        out.setdefault("references", str(flat["experiment_reference"]))
    for name in ACDD_FROM_ENVIRONMENT:
        value = os.environ.get(f"MECHLENS_{name.upper()}", "")
        if value:
            out.setdefault(name, value)
    out["mechlens_format"] = FORMAT
    for group in (*STAGE_GROUPS, "result", "attrs"):
        if group in groups:
            out[f"mechlens_{group}"] = json.dumps(groups[group], sort_keys=True, allow_nan=False)
    return out


def memory_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A Dataset's attrs as the pipeline makes them, from a file's global attrs (see :func:`file_attrs`).

    Attrs of a file written before the grouped layout (no ``mechlens_format``) are returned as they
    are. Each ``mechlens_<group>`` JSON attr is spread back into the flat names of docs/contract.md
    (``model``, ``model_distribution``, ``model_parameters`` as a JSON string, ``frame_period_s`` ...),
    ``date_created`` becomes ``created`` again; the other top-level attrs are kept. A flat attr
    given beside the groups (added after the file was written) wins over a grouped one.
    """
    out: dict[str, Any] = {}
    if "mechlens_format" not in attrs:
        return dict(attrs)
    for group in (*STAGE_GROUPS, "result", "attrs"):
        raw = attrs.get(f"mechlens_{group}")
        if raw is None:
            continue
        try:
            content = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError as err:
            raise FileFormatError(f"attr mechlens_{group} is not valid JSON ({err}): {str(raw)[:200]!r}") from None
        if not isinstance(content, dict):
            raise FileFormatError(f"attr mechlens_{group} is not a JSON object: {str(raw)[:200]!r}")
        for key, value in content.items():
            if group in STAGE_GROUPS and key == "attrs" and isinstance(value, dict):
                out.update({k: _from_json(v) for k, v in value.items()})
            elif group in STAGE_GROUPS:
                out[group if key == "plugin" else f"{group}_{key}"] = _from_json(value)
            else:
                out[key] = _from_json(value)
    for key, value in attrs.items():
        if key == "mechlens_format" or (
            key.startswith("mechlens_")
            and key[len("mechlens_") :]
            in (
                *STAGE_GROUPS,
                "result",
                "attrs",
            )
        ):
            continue
        out["created" if key == "date_created" else key] = value
    return out
