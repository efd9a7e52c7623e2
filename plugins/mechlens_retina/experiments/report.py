"""What ``mechlens report`` says about retina results: the model's training data, the paper, failures, ground truth.

The core report is domain-neutral; this module is the retina plugin's ``mechlens_report_sections``
hook (:mod:`mechlens.hookspecs`). For every result of a retina model it adds:

- under **Model and data**: what the model was trained on (the checkpoint's ``recipe``, ``training``
  and ``metrics``) and its probe-agreement gate against the synthetic retina, read from the result
  file's ``model_training`` attr (written at run time by :func:`model_record`), else from the
  checkpoint file itself when its weights' sha256 is the one the result records;
- per experiment of :data:`FINDINGS`: the paper's finding beside this model's, in words and numbers;
  for a failed measure, its value, its target and what the failure means;
- where the model was trained on the synthetic retina (or is it): the circuit's own mechanism
  (:data:`mechlens_retina.phenomena.ground_truth.MECHANISMS`) and its decomposition of the same stimulus
  (``gt_attribution``); the ablation table itself runs the circuit, so the section says where it is.

Nothing here runs a model: every number comes from the files (and the checkpoint's JSON header).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

#: the result attr the retina experiments store the model's training record in (JSON)
ATTR = "model_training"
#: models of this plugin
MODELS = ("retina-cnn", "synthetic-retina")
#: how many cell types the paper's reduced models keep (Tanaka et al. 2019)
PAPER_TYPES = (2, 3)
PAPER = "Tanaka et al. 2019 (NeurIPS), 'From deep learning to mechanistic understanding in neuroscience'"


@dataclass(frozen=True)
class Finding:
    """The paper's account of one experiment, and what this experiment's failure means.

    Attributes
    ----------
    paper : str
        What the paper's CNN shows (phenomenon and, where the paper reduces it, the mechanism).
    failure : str
        What a failed measure means for the model (the value and the target are added from the file).
    ground_truth : str
        The :data:`mechlens_retina.phenomena.ground_truth.MECHANISMS` key of the phenomenon, or ``""``.
    reduced : bool
        Whether the paper reduces this phenomenon to a few cell types (then its 2-3 is compared).
    """

    paper: str
    failure: str
    ground_truth: str = ""
    reduced: bool = True


#: experiment name -> the paper's finding (docs/retina-walkthrough.md, 'Point by point')
FINDINGS: dict[str, Finding] = {
    "latency-coding": Finding(
        "Reproduced: stronger dark flashes evoke earlier responses (Gollisch & Meister 2008). The reduced "
        "model: OFF excitation and ON inhibition converge on the ganglion cell.",
        "the latency does not shorten steadily as the flashes get stronger in any analysed cell, so the "
        "model does not code intensity by latency.",
        "latency_coding",
    ),
    "omitted-stimulus": Finding(
        "Reproduced: when one flash of a periodic train is missing the cell fires at a fixed delay after "
        "the expected flash, whatever the period (Schwartz et al. 2007). The reduced model: a few cell types "
        "of different polarity and kinetics, not an oscillator.",
        "the response after the missing flash does not come at a fixed delay after the expected flash (its "
        "latency spreads with the period beyond the target), or is not clearly larger than the per-flash "
        "response: the model does not predict when the missing flash was due.",
        "omitted_stimulus_response",
    ),
    "motion-anticipation": Finding(
        "Reproduced: the response to a moving bar peaks before the bar reaches the receptive-field centre "
        "(Berry et al. 1999); the reduced model is consistent with contrast gain control.",
        "the response peaks when the bar has already passed the receptive-field centre (it lags instead of "
        "leading), so the model does not anticipate the moving bar.",
        "motion_anticipation",
    ),
    "motion-reversal": Finding(
        "Reproduced: a synchronous burst at a fixed delay after a moving bar reverses (Schwartz et al. 2007); "
        "the reduced model is consistent with dual ON and OFF pathways (Chen et al. 2014).",
        "the population's burst after the reversal is not clearly larger than its response before it, or "
        "does not come at a fixed delay after the reversal wherever the bar reverses (its burst time varies "
        "beyond the target): the model does not signal the reversal as one synchronous event.",
        "motion_reversal",
    ),
    "contrast-adaptation": Finding(
        "Maheswaranathan et al. 2023 (Neuron): CNNs trained on natural scenes adapt to contrast; after a step "
        "from low to high contrast the firing rate is high and then decays.",
        "the rate after the step to high contrast does not decay (the early/late ratio stays under the "
        "target), so the model does not adapt to contrast within the step.",
        reduced=False,
    ),
    "natural-scenes": Finding(
        "Maheswaranathan et al. 2023 (Neuron): under natural scenes more cell types carry the response over "
        "time than under white noise.",
        "natural scenes do not engage more cell types than white noise in this model.",
        reduced=False,
    ),
}


# -- the training record ------------------------------------------------------------------------
def training_record(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a checkpoint's metadata a report needs: data, recipe, held-out r, probe-agreement gate."""
    recipe = meta.get("recipe") or {}
    first_stage = (recipe.get("first_stage") or {}) if isinstance(recipe, Mapping) else {}
    training = meta.get("training") or {}
    metrics = meta.get("metrics") or {}
    evaluation = metrics.get("evaluation") or {}
    cc = [float(c) for c in evaluation.get("cc") or [] if isinstance(c, (int, float))]
    out: dict[str, Any] = {
        "simulate": recipe.get("simulate") if isinstance(recipe, Mapping) else None,
        # a two-stage recipe (docs/training.md): the data of the stage the fine-tune started from
        "first_stage_simulate": first_stage.get("simulate"),
        "data": training.get("data"),
        "data_sha256": training.get("data_sha256"),
        "created": training.get("created"),
        "best_epoch": metrics.get("best_epoch"),
        "epochs_run": metrics.get("epochs_run"),
        "evaluated_on": metrics.get("evaluated_on"),
        "cc_median": float(np.median(cc)) if cc else None,
        "n_cells": len(cc) or len(meta.get("cells") or []),
        "weights_sha256": meta.get("weights_sha256"),
    }
    gate = meta.get("probe_agreement")
    if isinstance(gate, Mapping):
        out["probe_agreement"] = {
            "passed": bool(gate.get("passed")),
            "truth": gate.get("truth"),
            "r_min_target": gate.get("r_min_target"),
            "peak_error_ms_max": gate.get("peak_error_ms_max"),
            "stimuli": {
                str(name): {k: s.get(k) for k in ("r_median", "r_min", "peak_error_ms", "passed", "phenomenon")}
                for name, s in (gate.get("stimuli") or {}).items()
                if isinstance(s, Mapping)
            },
        }
    return {k: v for k, v in out.items() if v is not None}


def model_record(model: Any) -> dict[str, str]:
    """A result's ``model_training`` attr (:func:`training_record` as JSON), when the model has checkpoint metadata."""
    meta = getattr(model, "metadata", None)
    if not isinstance(meta, Mapping) or not meta:
        return {}
    return {ATTR: json.dumps(training_record(meta), sort_keys=True)}


def _checkpoint_of(attrs: Mapping[str, Any]) -> Path | None:
    try:
        params = json.loads(str(attrs.get("model_parameters") or "{}"))
    except ValueError:
        return None
    where = str(params.get("checkpoint") or "") if isinstance(params, dict) else ""
    if where in ("", "none"):
        return None
    if where == "bundled":
        return Path(__file__).resolve().parents[1] / "data" / "default.safetensors"
    return Path(where)


def record_of(ds: xr.Dataset) -> tuple[dict[str, Any] | None, str]:
    """The training record of a result's model, and where it was read from (``""``: nowhere)."""
    text = ds.attrs.get(ATTR)
    if text:
        try:
            got = json.loads(str(text))
        except ValueError:
            got = None
        if isinstance(got, dict):
            return got, f"the result files' {ATTR} attr"
    sha = str(ds.attrs.get("model_checkpoint_sha256") or "")
    path = _checkpoint_of(ds.attrs)
    if not sha or path is None or path.suffix != ".safetensors" or not path.is_file():
        return None, ""
    from mechlens_retina.models.checkpoint import read_header

    try:
        meta, _ = read_header(path)
    except Exception:  # noqa: BLE001 - an unreadable checkpoint: the report says nothing about it
        return None, ""
    if str(meta.get("weights_sha256", "")) != sha:
        return None, ""  # not the weights the result was computed with
    return training_record(meta), f"the checkpoint {path.name} (its weights' sha256 is the one the files record)"


def trained_on_circuit(ds: xr.Dataset) -> bool:
    """Whether the result's model is the synthetic retina or was trained on its responses."""
    if str(ds.attrs.get("model", "")) == "synthetic-retina":
        return True
    rec, _ = record_of(ds)
    return bool(rec and (rec.get("simulate") or {}).get("model") == "synthetic-retina")


# -- the sections ------------------------------------------------------------------------------
def _n(value: Any, fmt: str = ".3g") -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "?"
    return format(v, fmt) if math.isfinite(v) else "?"


def model_sections(results: Sequence[Any]) -> list[Any]:
    """One Model-and-data section per distinct retina model (checkpoint) among the results."""
    from mechlens.report import Section

    out = []
    seen: set[tuple[str, str]] = set()
    for r in results:
        a = r.dataset.attrs
        model = str(a.get("model", ""))
        if model not in MODELS:
            continue
        sha = str(a.get("model_checkpoint_sha256") or "")
        if (model, sha) in seen:
            continue
        seen.add((model, sha))
        if model == "synthetic-retina":
            out.append(
                Section(
                    "synthetic-retina: the known circuit itself",
                    [
                        "The model is the synthetic retina (docs/synthetic-retina.md): a simulated circuit of four "
                        "bipolar types with a divisive gain control, built so that each phenomenon arises from a "
                        "few named types. Its own mechanism is the ground truth under each experiment."
                    ],
                    topic="model",
                )
            )
            continue
        rec, where = record_of(r.dataset)
        title = f"{model}, checkpoint {sha[:12] or '(none)'}: what it was trained on"
        if rec is None:
            text = (
                f"The result files record the checkpoint (sha256 {sha[:12]}...) but not what it was trained on, "
                "and that checkpoint is not at hand; 'mechlens info retina-cnn' (or 'mechlens info CHECKPOINT') "
                "prints a checkpoint's training data, recipe and probe-agreement gate."
                if sha
                else "The model's weights do not come from a checkpoint file (random or in-memory weights): "
                "it was not trained, as far as the files say."
            )
            out.append(Section(title, [text], topic="model", tone="note"))
            continue
        out.append(_training_section(title, rec, where))
    return out


def _training_section(title: str, rec: Mapping[str, Any], where: str) -> Any:
    from mechlens.report import Section

    sim = rec.get("simulate") or {}
    first = rec.get("first_stage_simulate") or {}
    paragraphs = []

    def data(stage: Mapping[str, Any]) -> str:
        params = ", ".join(f"{k} {v}" for k, v in (stage.get("stimulus_params") or {}).items())
        return (
            f"{_n(stage.get('minutes'), 'g')} minutes of the {stage.get('model', '?')}'s responses to "
            f"{stage.get('stimulus', '?')}{f' ({params})' if params else ''}, simulated with seed "
            f"{stage.get('seed', '?')}"
        )

    if sim and first:
        paragraphs.append(
            f"Trained in two stages: first on {data(first)}, then fine-tuned on {data(sim)}; data sha256 "
            f"{str(rec.get('data_sha256', ''))[:12]}... (second stage), trained {rec.get('created', '?')}."
        )
    elif sim:
        paragraphs.append(
            f"Trained on {data(sim)}; data sha256 {str(rec.get('data_sha256', ''))[:12]}..., trained "
            f"{rec.get('created', '?')}."
        )
    elif rec.get("data"):
        paragraphs.append(f"Trained on {rec['data']} (sha256 {str(rec.get('data_sha256', ''))[:12]}...).")
    if rec.get("cc_median") is not None:
        paragraphs.append(
            f"Held-out fit: median Pearson r {_n(rec['cc_median'])} over {rec.get('n_cells', '?')} cells on the "
            f"{rec.get('evaluated_on', 'held-out')} movie (best epoch {rec.get('best_epoch', '?')} of "
            f"{rec.get('epochs_run', '?')})."
        )
    if sim.get("model") == "synthetic-retina":
        paragraphs.append(
            "Its data came from the synthetic retina, a circuit whose mechanism is known, so each experiment "
            "below is also compared with the circuit's own mechanism (ground truth)."
        )
    table: list[list[str]] = []
    gate = rec.get("probe_agreement")
    if isinstance(gate, Mapping):
        verdict = "passed" if gate.get("passed") else "NOT passed"
        paragraphs.append(
            f"Probe-agreement gate against the {gate.get('truth') or 'circuit'} (median r >= "
            f"{_n(gate.get('r_min_target'), 'g')} and peak-time error <= "
            f"{_n(gate.get('peak_error_ms_max'), 'g')} ms on every probe): {verdict}."
            + (
                ""
                if gate.get("passed")
                else " The model's responses to the probe stimuli differ from the circuit's, so a phenomenon "
                "below is the model's, not necessarily the circuit's."
            )
        )
        table = [["probe", "phenomenon", "r median", "r min", "peak-time error (ms)", "passed"]]
        for name, s in (gate.get("stimuli") or {}).items():
            table.append(
                [
                    name,
                    str(s.get("phenomenon") or "").replace("_", " "),
                    _n(s.get("r_median"), ".2f"),
                    _n(s.get("r_min"), ".2f"),
                    _n(s.get("peak_error_ms"), ".0f"),
                    "yes" if s.get("passed") else "no",
                ]
            )
    paragraphs.append(f"(Read from {where}.)")
    tone = "fail" if isinstance(gate, Mapping) and not gate.get("passed") else ""
    return Section(title, paragraphs, table=table if len(table) > 1 else (), topic="model", tone=tone)


def _bare(label: str) -> str:
    """``"ON-fast [channel 7]"`` -> ``"ON-fast"``."""
    return re.sub(r"\s*\[channel \d+\]$", "", label)


def _kept(ds: xr.Dataset) -> tuple[list[str], list[int]]:
    """The kept components' labels and signs for the focus cell (largest net contribution first)."""
    if "weights" not in ds or "components" not in ds:
        return [], []
    from mechlens.mechanism import component_table

    try:
        cells = [str(c) for c in ds["weights"]["cell"].values]
        cell = str(ds.attrs.get("focus_cell", ""))
        rows = component_table(ds, cell if cell in cells else cells[0])
    except Exception:  # noqa: BLE001 - odd data in a file: no kept types to compare
        return [], []
    return [str(r["label"]) for r in rows], [int(r["sign"]) for r in rows]


def _passed(ds: xr.Dataset) -> bool | None:
    try:
        return bool(int(ds.attrs["measure_pass"]))
    except (KeyError, TypeError, ValueError):
        return None


def _measure(ds: xr.Dataset) -> str:
    a = ds.attrs
    units = str(a.get("measure_units") or "")
    return f"{a.get('measure_name', 'the measure')} = {_n(a.get('measure_value'))}{f' {units}' if units else ''}"


def _value(ds: xr.Dataset) -> str:
    units = str(ds.attrs.get("measure_units") or "")
    return f"{_n(ds.attrs.get('measure_value'))}{f' {units}' if units else ''}"


def paper_section(r: Any, finding: Finding) -> Any:
    """The paper's finding beside this model's, for one result."""
    from mechlens.report import Section

    ds = r.dataset
    passed = _passed(ds)
    shown = {True: "shown", False: "not shown", None: "no verdict"}[passed]
    labels, _ = _kept(ds)
    try:
        n_types = int(ds.attrs.get("n_types", 0)) or None
    except (TypeError, ValueError):
        n_types = None
    try:
        explained = float(ds.attrs.get("explained_fraction_mean", float("nan")))
    except (TypeError, ValueError):
        explained = float("nan")
    lo, hi = PAPER_TYPES
    kept = (
        f"{len(labels)}{f' of {n_types}' if n_types else ''} types kept"
        + (f", {explained:.0%} of the response deviation" if math.isfinite(explained) else "")
        if labels
        else "no reduction in the file"
    )
    table = [
        ["", f"paper ({ds.attrs.get('experiment_reference') or PAPER})", "this model"],
        ["phenomenon", finding.paper, f"{shown} ({_value(ds)}; the measure above)"],
    ]
    agrees = [f"phenomenon {'yes' if passed else 'no'}"] if passed is not None else []
    if finding.reduced:
        table.append(["cell types", f"{lo}-{hi} cell types", kept])
        if labels:
            agrees.append(f"number of types {'yes' if lo <= len(labels) <= hi else 'no'} ({len(labels)} vs {lo}-{hi})")
    else:
        table.append(["cell types", "no reduction reported", kept])
    table.append(["agrees?", "", "; ".join(agrees) or "?"])
    return Section("The paper and this model", table=table, result=r.key)


def failure_section(r: Any, finding: Finding) -> Any:
    """Why a measure fails: the value, the target and what it means."""
    from mechlens.report import Section

    a = r.dataset.attrs
    paragraphs = [
        f"{_measure(r.dataset)}; the target is {a.get('measure_target', '?')}. So {finding.failure}",
    ]
    red, comp = a.get("measure_pass_reduced"), a.get("measure_pass_complement")
    units = f" {a['measure_units']}" if a.get("measure_units") else ""
    if red is not None and comp is not None:
        paragraphs.append(
            f"The reduced model (kept types only) gives {_n(a.get('measure_value_reduced'))}{units}, the model "
            f"without them {_n(a.get('measure_value_complement'))}{units}: the kept types explain the response "
            "the model gives, and that response lacks the phenomenon."
        )
    if finding.ground_truth and trained_on_circuit(r.dataset):  # the four phenomena the gate has probes for
        paragraphs.append(
            "The model's probe-agreement gate (Model and data) says how far its responses to this phenomenon's "
            "probe stimulus are from the circuit's."
        )
    return Section("Why the measure fails", paragraphs, result=r.key, tone="fail")


def _gt_shares(ds: xr.Dataset) -> list[tuple[str, float]]:
    """The circuit's own attribution to each bipolar type, as shares of |attribution| over the window (focus cell)."""
    if "gt_attribution" not in ds:
        return []
    gt = ds["gt_attribution"]
    cells = [str(c) for c in gt["cell"].values]
    cell = str(ds.attrs.get("focus_cell", ""))
    gt = gt.sel(cell=cell if cell in cells else cells[0])
    if "in_window" in ds:
        gt = gt.where(ds["in_window"].astype(bool).broadcast_like(gt))
    mag = abs(gt).sum([d for d in gt.dims if d != "gt_unit"], skipna=True).values.astype(float)
    total = float(np.nansum(mag))
    if not total > 0:
        return []
    shares = [(str(u), float(m) / total) for u, m in zip(gt["gt_unit"].values, mag)]
    return sorted(shares, key=lambda x: -x[1])


def ground_truth_section(r: Any, finding: Finding) -> Any:
    """The synthetic retina's own mechanism beside the model's kept types."""
    from mechlens.report import Section
    from mechlens_retina.phenomena.ground_truth import MECHANISMS

    ds = r.dataset
    paragraphs = []
    mech = MECHANISMS.get(finding.ground_truth) if finding.ground_truth else None
    if mech is not None:
        roles = "; ".join(f"{t}: {role}" for t, role in mech.roles.items())
        paragraphs.append(f"The circuit generates it with {', '.join(mech.types)} ({roles}). {mech.account}")
    else:
        paragraphs.append(
            "The ground-truth table covers latency coding, the omitted stimulus response, motion anticipation and "
            "motion reversal; it has no row for this experiment."
        )
    shares = _gt_shares(ds)
    if shares:
        paragraphs.append(
            "On this stimulus the circuit's own attribution (focus cell, over the window) is divided among its "
            "bipolar types as " + ", ".join(f"{u} {s:.0%}" for u, s in shares) + "."
        )
    labels, _ = _kept(ds)
    if mech is not None and labels:
        named = sorted({_bare(lab) for lab in labels})
        same = set(named) == set(mech.types)
        paragraphs.append(
            f"This model keeps {', '.join(labels)} (by their nearest type label); the circuit's generating "
            f"type{'s' if len(mech.types) > 1 else ''}: {', '.join(mech.types)}. "
            + ("The labels match." if same else "The labels differ: the model's mechanism is not the circuit's.")
        )
    paragraphs.append(
        "The ablation table (silencing the named types abolishes the phenomenon, silencing the others keeps it) "
        "runs the circuit and is not repeated here: 'python -m mechlens_retina.phenomena.ground_truth' re-measures "
        "it and "
        "docs/synthetic-retina.md explains each row; 'python bench/phenomena.py' measures the circuit beside the CNN."
    )
    return Section("Ground truth: the synthetic retina's own mechanism", paragraphs, result=r.key)


def report_sections(results: Sequence[Any]) -> list[Any]:
    """The retina plugin's sections for a report (the ``mechlens_report_sections`` hook)."""
    out = model_sections(results)
    for r in results:
        if str(r.dataset.attrs.get("model", "")) not in MODELS:
            continue
        finding = FINDINGS.get(r.experiment)
        if finding is None:
            continue
        out.append(paper_section(r, finding))
        if _passed(r.dataset) is False:
            out.append(failure_section(r, finding))
        if trained_on_circuit(r.dataset):
            out.append(ground_truth_section(r, finding))
    return out
