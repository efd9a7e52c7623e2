"""Mechanism recovery on the synthetic retina, with controls: one table, phenomenon x test.

For each phenomenon the probe stimulus of the agreement gate (``mechlens_retina.phenomena.agreement``: every
condition of its sweep) is attributed on the circuit (``synthetic-retina``, layer ``bipolar``,
sampled integrated gradients) and on each CNN (layer ``conv1``, exact integrated gradients). The
CNN's attributions are pooled per matched bipolar type; at each (condition, time) the mean over types
is removed (the *type split*: the response's own time course, which any model that predicts the
response shares, is taken out), and the result is correlated with the circuit's, per cell that
shows the phenomenon in the circuit (by the measure's per-cell rule, :func:`shown_cells`), over
(condition x time x type). One correlation over all types is led by the largest, so the score
also asks the phenomenon's own types (the ablation table) to carry the circuit's contribution: per
cell, the lower of the type split and those types' raw attribution correlated with the circuit's
(``mechlens_retina.experiments.recovery.mechanism_score``); a score is the median over the cells.
Test A's two parts are printed beside it. ``--show-ungated`` also prints each part alone, the raw
pooled score and the scores over every responding cell (>= 2 Hz in the circuit). For the OSR and the reversal the
script also prints, for diagnosis, the same score read only in the phenomenon's own window
(:data:`WINDOWS`), for test A, test B, the control CNNs and the control circuits; and the rate
difference its measure thresholds (the reversal's burst over the peak before, the OSR's peak over
the last flash's tail) attributed per type (:func:`measure_contrast`), with the types that raise it
(:func:`driving_types`), for the circuit, test A and the phenomenon's control CNN and circuit.

* **test A** -- ``bench/data/recovery-fixed.safetensors``: ``conv1`` fixed to the circuit's filters, so CNN
  channel c is circuit channel c (``python bench/recovery.py --rebuild`` retrains it and every
  control CNN with :data:`RECIPE`, ``--train-missing`` only those missing; deterministic on the CPU
  with 2 threads: 15 simulated minutes and 6 epochs each, 10-15 minutes each on the 2-core machine;
  for circuit versions 3 to 6 in the two stages of the bundled recipes, :func:`two_stage_sets`,
  about twice as long);
* **test B** -- the bundled CNN, or ``--checkpoint PATH`` (free ``conv1``), channels matched by kernel
  cosine + Hungarian assignment (>= 0.5, else unmatched), each kernel signed by the polarity its
  channel reaches its ReLU with (``matching.channel_polarity``: an OFF channel matches only OFF filters).
  Issue 17's other matching, a map fitted on natural scenes, is printed as a diagnosis
  (:func:`print_fitted_map`; it names no type: docs/retina-walkthrough.md, "Test B's matching").
  The circuit everything is scored against is the one test B was trained on (its recipe:
  ``trained_circuit``); for a circuit other than the default (e.g. ``{circuit="v3"}``) the test-A
  and other-circuit checkpoints carry its name (``recovery-fixed-v3.safetensors``) and ``--rebuild``
  trains them on it;
* **controls**, scored like test A: a random CNN with the circuit's ``conv1`` (random above it); the
  trivial attribution putting the whole response change into one type (mean over the four types);
  the ground truth with its types shuffled (mean over the 9 derangements); and, per phenomenon, a CNN
  trained the same way as test A on a circuit *without that phenomenon's mechanism* (its types in the
  ablation table silenced, :func:`control_silenced`: OFF-fast for latency coding and anticipation,
  ``bench/data/recovery-other.safetensors``; ON-slow for the reversal; OFF-fast, ON-fast and ON-slow for
  the OSR). The first such control, the OFF-fast-silenced CNN, is still scored on every phenomenon and
  printed beside the circuit silenced the same way scored against the intact one (how different that
  control's mechanism truly is), but it counts only where OFF-fast is the whole mechanism: the ON-OFF
  cells' OSR barely draws on OFF-fast, so a CNN of a circuit without it rightly scores high there.

A test's score is printed only where that CNN passes the agreement gate on that stimulus
("gate fails: not scored" otherwise). The kept types are the cell-types reduction (80 % explained) of
test A's attributions on the cells that show the phenomenon in the circuit, against the ablation
table of the circuit scored (``mechlens_retina.phenomena.ground_truth.smallest_sets``: the smallest
sets whose silencing abolishes the phenomenon and which alone keep it; ``MECHANISMS`` names the
default circuit's, printed beside it where it differs), and the lesion check: the phenomenon's measure on
test A intact, with only the kept types' ``conv1`` channels active, and with them silenced
(:mod:`mechlens.lesion`).

Usage: python bench/recovery.py [--checkpoint PATH] [--steps N] [--show-ungated] [--rebuild | --train-missing]
                                [--probes P ...] [--figure PATH]

``--figure PATH`` also draws, per probe, one cell's attributions per type over time for the circuit,
test A and the control CNN (:func:`trace_panel`), and the measure's rate difference per type.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from mechlens_retina.experiments import EXPLAINED, basis
from mechlens_retina.experiments import matching as M
from mechlens_retina.experiments import recovery as R
from mechlens_retina.phenomena import measure_all, verdict
from mechlens_retina.phenomena.agreement import probe_agreement, probe_stimuli, trained_circuit
from mechlens_retina.phenomena.ground_truth import MECHANISMS, smallest_sets
from mechlens_retina.phenomena.targets import REVERSAL_BEFORE_S, REVERSAL_WINDOW_S
from mechlens_retina.training.bundle import RECIPES

from mechlens import registry
from mechlens.dryrun import toml_value
from mechlens.lesion import lesion_channels

DATA = Path(__file__).resolve().parent / "data"
#: the type silenced in the first control circuit (scored on every phenomenon; see :func:`control_silenced`)
OTHER_SILENCED = ("OFF-fast",)


def control_silenced(phenomenon: str) -> tuple[str, ...]:
    """The types silenced in a phenomenon's control circuit: its own types in the ablation table.

    The ablation table (``MECHANISMS``) is measured on the circuit: silencing these types abolishes the
    phenomenon, so the circuit without them is known not to have the mechanism being recovered, and a
    recovery score that cannot tell its CNN from test A cannot tell mechanisms apart. Fixed by the
    table before any CNN is scored, never chosen by the scores.
    """
    return tuple(MECHANISMS[phenomenon].types)


#: the small CPU recipe of the test-A checkpoints (deterministic on the CPU for a given thread count)
RECIPE = [
    "--device", "cpu", "--recipe", "cpu", "--minutes", "15", "--test-minutes", "0.5", "--epochs", "6",
    "--set", "simulate.stimulus_params={image_s=0.15}", "--set", 'simulate.compression="none"',
    "--set", "simulate.repeats=2", "--set", 'model.first_layer="synthetic-retina"', "--set", "train.threads=2",
]  # fmt: skip
#: the train values of a two-stage recipe's first stage that test A takes over (the rest is RECIPE's)
_FIRST_STAGE_TRAIN = ("l2", "l1", "noise", "freeze_bn_epoch")


def two_stage_sets(version: str) -> tuple[list[str], list[str]] | None:
    """``--set`` arguments that make test A train like the bundled model's two-stage recipe, or None.

    For a circuit version with a two-stage recipe (``mechlens_retina.training.bundle.RECIPES``,
    ``cpu-v3`` to ``cpu-v6``; docs/training.md, "Two stages"): the first stage's movie and its
    regularisation and held batch-norm statistics, and the second stage's values except its epoch count
    (``{start}`` stands for the first stage's checkpoint). Length and epochs stay RECIPE's, so test A
    and test B differ in the first layer and the amount of training only.
    """
    recipe = RECIPES.get(f"cpu-{version}")
    if not recipe or "fine_tune" not in recipe:
        return None
    first = ["--set", f"simulate.stimulus_params={_toml(recipe['simulate']['stimulus_params'])}"]
    for name in _FIRST_STAGE_TRAIN:
        first += ["--set", f"train.{name}={toml_value(recipe['train'][name])}"]
    tune = recipe["fine_tune"]
    second = [a for k, v in tune["simulate"].items() for a in ("--set", f"simulate.{k}={_value(v)}")]
    second += [a for k, v in tune["train"].items() if k != "epochs" for a in ("--set", f"train.{k}={toml_value(v)}")]
    return first, [*second, "--set", 'train.init_from="{start}"']


CONTROL_MAX, MARGIN = 0.3, 0.4


def circuit_tag(circuit: dict[str, Any]) -> str:
    """File-name suffix of the test-A checkpoints for a circuit: ``""`` (default) or ``"-v3"``."""
    if set(circuit) - {"circuit"}:
        raise SystemExit(
            f"test B was trained on a modified circuit {circuit}; recovery is scored against an unmodified "
            "circuit version (synthetic-retina's `circuit` parameter) only"
        )
    return f"-{circuit['circuit']}" if circuit.get("circuit") else ""


def test_a_paths(circuit: dict[str, Any]) -> tuple[Path, Path]:
    """The test-A (fixed ``conv1``) and first other-circuit (OFF-fast silenced) checkpoints for a circuit."""
    tag = circuit_tag(circuit)
    return DATA / f"recovery-fixed{tag}.safetensors", DATA / f"recovery-other{tag}.safetensors"


def other_path(circuit: dict[str, Any], silenced: tuple[str, ...] = OTHER_SILENCED) -> Path:
    """The control checkpoint trained on ``circuit`` with ``silenced`` silenced.

    :data:`OTHER_SILENCED` keeps its first name (``recovery-other[-v3].safetensors``); any other set is
    named by its types, e.g. ``recovery-other-on-slow-v3.safetensors``.
    """
    if tuple(silenced) == OTHER_SILENCED:
        return test_a_paths(circuit)[1]
    slug = "-".join(t.lower() for t in silenced)
    return DATA / f"recovery-other-{slug}{circuit_tag(circuit)}.safetensors"


def other_circuit(circuit: dict[str, Any], silenced: tuple[str, ...] = OTHER_SILENCED) -> dict[str, Any]:
    """A control's circuit: ``circuit`` with ``silenced`` (default :data:`OTHER_SILENCED`) silenced."""
    return {**circuit, "silence": list(silenced)}


def control_sets() -> list[tuple[str, ...]]:
    """Every distinct control circuit: :data:`OTHER_SILENCED` first, then each phenomenon's own."""
    out: list[tuple[str, ...]] = [OTHER_SILENCED]
    for name in MECHANISMS:
        if control_silenced(name) not in out:
            out.append(control_silenced(name))
    return out


def _toml(params: dict[str, Any]) -> str:
    """``params`` as a TOML inline table, the form ``--set simulate.model_params=...`` reads."""
    return "{" + ", ".join(f"{k}={_value(v)}" for k, v in params.items()) + "}"


def _value(v: Any) -> str:
    """One ``--set`` value in TOML (a mapping as an inline table)."""
    return _toml(v) if isinstance(v, dict) else toml_value(v)


def rebuild(which: str, circuit: dict[str, Any], silenced: tuple[str, ...] = OTHER_SILENCED) -> None:
    """Retrain a test-A checkpoint with :data:`RECIPE` (``which``: ``fixed`` or ``other``) on ``circuit``
    (``other``: with ``silenced`` silenced)."""
    if which == "fixed":
        out, params = test_a_paths(circuit)[0], circuit
    else:
        out, params = other_path(circuit, silenced), other_circuit(circuit, silenced)
    extra = ["--set", f"simulate.model_params={_toml(params)}"] if params else []
    stages = two_stage_sets(str(circuit.get("circuit", "")))
    extra += stages[0] if stages else []
    tune = stages[1] if stages else None
    workdir = Path(f"build/{out.stem}")
    cmd = [sys.executable, "-m", "mechlens_retina.training.bundle", *RECIPE, *extra]
    first = workdir / "stage1.safetensors" if tune else out
    subprocess.run([*cmd, "--workdir", str(workdir), "-o", str(first)], check=True)
    if tune:
        # the same recipe with the fine-tune's settings last (a later --set wins)
        second = [*cmd, *(a.replace("{start}", str(first)) for a in tune)]
        subprocess.run([*second, "--workdir", str(workdir / "near-grey"), "-o", str(out)], check=True)


#: probe -> (event, window length in s) of the phenomenon's own window, as the experiments' reductions
#: read it (the OSR: 0..0.25 s after the omitted flash; the reversal: 0..0.3 s after the reversal)
WINDOWS = {"osr": ("omitted_time", 0.25), "motion-reversal": ("reversal_time", REVERSAL_WINDOW_S)}


def attribute_probe(model: Any, runs: list[tuple[str, dict]], attributor: Any, layer: str) -> xr.Dataset:
    """Attribute every run of a probe and join them along ``condition`` (renumbered 0..n-1)."""
    parts = []
    for name, params in runs:
        stim = registry.get("stimulus", name)(**params).generate(0)
        ds = attributor.attribute(model, stim, layer)
        events = {ev: stim[ev] for ev, _ in WINDOWS.values() if ev in stim and "time" not in stim[ev].dims}
        ds = ds[["attribution", "response", "baseline_response"]].assign(events)
        if "condition" not in ds["attribution"].dims:
            ds = ds.expand_dims(condition=1)
        parts.append(ds)
    ds = xr.concat(parts, dim="condition") if len(parts) > 1 else parts[0]
    return ds.assign_coords(condition=np.arange(ds.sizes["condition"]))


def in_window(pooled: xr.DataArray, event: xr.DataArray, length_s: float) -> xr.DataArray:
    """``pooled`` (condition, time, ...) cut to ``event`` .. ``event + length_s`` per condition, time from 0 s."""
    parts = []
    for k, t0 in enumerate(np.broadcast_to(event.values, (pooled.sizes["condition"],))):
        t = pooled["time"].values
        sel = np.flatnonzero((t >= t0 - 1e-6) & (t <= t0 + length_s + 1e-6))
        parts.append(pooled.isel(condition=k, time=sel).drop_vars("time"))
    n = min(x.sizes["time"] for x in parts)
    dt = float(np.median(np.diff(pooled["time"].values)))
    out = xr.concat([x.isel(time=slice(0, n)) for x in parts], dim="condition")
    return out.assign_coords(time=np.arange(n) * dt)


def window_scores(
    pooled: dict[str, xr.DataArray], truth_pooled: xr.DataArray, event: xr.DataArray, length_s: float, cells: list[str]
) -> dict[str, float]:
    """Each pooled attribution's type-split score (median over ``cells``) read in the event's window only."""
    truth = in_window(truth_pooled, event, length_s)
    return {
        k: float(np.nanmedian(R.score_pooled(in_window(v, event, length_s), truth, cells).values))
        for k, v in pooled.items()
    }


#: probe -> the window before its event whose largest rate its measure compares the peak with (the
#: reversal's), or None where it compares with the rate at the event (the OSR: the last flash's tail);
#: the window after the event is the probe's in :data:`WINDOWS`
CONTRASTS: dict[str, float | None] = {"osr": None, "motion-reversal": REVERSAL_BEFORE_S}


def measure_contrast(
    pooled: xr.DataArray, response: xr.DataArray, event: xr.DataArray, probe: str, cells: list[str]
) -> xr.DataArray:
    """The probe's measured rate difference per type (:func:`R.measure_contrast` with its windows)."""
    return R.measure_contrast(pooled, response, event, cells, WINDOWS[probe][1], CONTRASTS[probe])


def driving_types(contrast: xr.DataArray, names: list[str]) -> list[str]:
    """The types that raise a rate difference, at the experiments' threshold (:func:`R.driving_types`)."""
    return R.driving_types(contrast, names, EXPLAINED)


def trace_panel(
    pooled: dict[str, xr.DataArray],
    truth_pooled: xr.DataArray,
    cell: str,
    event: xr.DataArray | None,
    after_s: float = 0.3,
) -> tuple[int, dict[str, xr.DataArray]]:
    """What the figure draws for one probe: one cell's type-pooled attributions over time, one condition.

    Without an ``event`` the condition is the one where the circuit's attribution for ``cell`` is
    largest (RMS). With one (the omitted flash, the reversal) it is the one where the circuit's
    summed attribution peaks highest within ``after_s`` after the event (where the phenomenon shows:
    the reversal's largest condition may be a bar passing the cell without a burst), and the time
    axis is cut to 0.5 s before .. 0.6 s after the event and counted from it.

    Returns
    -------
    (int, dict)
        The condition's index, and label -> (time, unit_channel) Hz for the circuit and each entry of
        ``pooled``.
    """
    x = truth_pooled.sel(cell=cell).transpose("condition", "time", "unit_channel")
    n = truth_pooled.sizes["condition"]
    if event is None:
        k = int(np.argmax(((x**2).mean(["time", "unit_channel"]) ** 0.5).values))
    else:
        t, events = x["time"].values, np.broadcast_to(event.values, (n,))
        summed = x.sum("unit_channel").values
        peaks = [
            summed[j, (t > t0 + 1e-6) & (t <= t0 + after_s + 1e-6)].max(initial=-np.inf) for j, t0 in enumerate(events)
        ]
        k = int(np.argmax(peaks))
    out = {}
    for label, p in {"circuit": truth_pooled, **pooled}.items():
        tr = p.sel(cell=cell).isel(condition=k).transpose("time", "unit_channel")
        if event is not None:
            t0 = float(np.broadcast_to(event.values, (n,))[k])
            tr = tr.sel(time=(tr["time"] >= t0 - 0.5) & (tr["time"] <= t0 + 0.6))
            tr = tr.assign_coords(time=tr["time"].values - t0)
        out[label] = tr
    return k, out


def plot_figure(rows: list[dict], names: list[str], path: Path) -> None:
    """One row per probe: the circuit's, test A's and the control CNN's attributions per type over time
    (one cell, one condition; same y-axis), and, for the OSR and the reversal, the measure's rate
    difference per type (:func:`measure_contrast`). Written to ``path`` (format from its suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = dict(zip(names, ("#1f4e9c", "#7fa6e0", "#c0392b", "#f0a08c")))
    fig, axes = plt.subplots(len(rows), 4, figsize=(17, 3.1 * len(rows)), squeeze=False)
    for ax_row, row in zip(axes, rows):
        fig_data = row["figure"]
        traces = fig_data["traces"]
        lo = min(float(v.min()) for v in traces.values())
        hi = max(float(v.max()) for v in traces.values())
        pad = 0.05 * (hi - lo or 1.0)
        for ax, (label, tr) in zip(ax_row[:3], traces.items()):
            for c, name in enumerate(names):
                ax.plot(tr["time"].values, tr.isel(unit_channel=c).values, color=colours[name], lw=1.4, label=name)
            ax.set_ylim(lo - pad, hi + pad)
            ax.axhline(0, color="0.7", lw=0.6)
            ax.set_title(f"{row['probe']}, {fig_data['cell']}, condition {fig_data['condition']}: {label}", fontsize=9)
            ax.set_xlabel(f"time from {fig_data['event']} (s)" if fig_data["event"] else "time (s)", fontsize=8)
        ax_row[0].set_ylabel("attribution (Hz)", fontsize=8)
        ax_row[0].legend(fontsize=7, frameon=False)
        ax = ax_row[3]
        if row["contrasts"]:
            labels = list(row["contrasts"])
            width = 0.8 / len(labels)
            for j, label in enumerate(labels):
                vals = row["contrasts"][label].mean("cell").values
                ax.bar(np.arange(len(names)) + (j - (len(labels) - 1) / 2) * width, vals, width, label=label)
            ax.set_xticks(np.arange(len(names)), names, fontsize=8)
            ax.axhline(0, color="0.3", lw=0.6)
            ax.set_title(f"{row['probe']}: the measure's rate difference per type", fontsize=9)
            ax.set_ylabel("Hz (mean over the cells showing it)", fontsize=8)
            ax.legend(fontsize=7, frameon=False)
        else:
            s = row["scores"]
            ax.axis("off")
            ax.text(
                0.0,
                0.5,
                f"score: test A {s['A']:.2f}, test B {s['B']:.2f}\ncontrols: random {s['random']:.2f}, trivial "
                f"{s['trivial']:.2f},\nshuffled {s['shuffled']:.2f}, circuit without its types {s['own']:.2f}\n"
                "(ungated; the table says which the gate allows)",
                fontsize=8,
                va="center",
            )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def shown_cells(truth: Any) -> dict[str, list[str]]:
    """Per phenomenon, the cells that show it in the circuit, each by the measure's per-cell rule.

    Only where no cell shows it alone (a phenomenon of the population only) is every cell taken. The
    motion reversal is judged on the population, but its burst is the ON-OFF cells' (version 3: 3
    of 8 cells; two cells do not respond to the bar at all), and a score over cells without the
    burst scores their other responses, not the reversal's mechanism.
    """
    out = {}
    for name, ds in measure_all(truth).items():
        cells = [str(c) for c, p in zip(ds["cell"].values, ds["passed"].values) if p]
        out[name] = cells or [str(c) for c in ds["cell"].values]
    return out


def kept_types(attr: xr.Dataset, match: M.TypeMatch, names: list[str], cells: list[str]) -> list[str]:
    """The cell-types reduction (``EXPLAINED``: 80 % of the response deviation, as in the experiments)
    of a CNN attribution, as type names."""
    # an unmatched channel is its own group, so the reduction may keep it (and the table shows it did)
    labels = [names[k] if k >= 0 else f"unmatched {c}" for c, k in enumerate(match.assignment)]
    ds = attr.sel(cell=cells).assign_coords(unit_group=("unit_channel", labels))
    red = registry.get("reducer", "cell-types")(explained=EXPLAINED, characterise=False).reduce(ds)
    kept = [str(x) for x in red["component_label"].values] if "component_label" in red else []
    return sorted(kept, key=names.index) if all(k in names for k in kept) else kept


#: the scores a row can be read with: the headline (``mechanism``, :func:`R.mechanism_score`), its
#: type-split part alone (``split``) and the raw pooled attribution (``raw``, diagnosis only)
KINDS = ("mechanism", "split", "raw")


def score(
    kind: str, pooled: xr.DataArray, truth_pooled: xr.DataArray, cells: list[str], mech: list[int]
) -> xr.DataArray:
    """One (cell,) score of a type-pooled attribution against the circuit's (``kind`` in :data:`KINDS`)."""
    if kind == "mechanism":
        return R.mechanism_score(pooled, truth_pooled, mech, cells)
    return R.score_pooled(pooled, truth_pooled, cells, split=kind == "split")


def score_set(
    pooled: dict[str, xr.DataArray],
    truth_ds: xr.Dataset,
    truth_pooled: xr.DataArray,
    cells: list[str],
    kind: str,
    mech: list[int],
) -> dict[str, Any]:
    """Every model's score and the two attribution controls on ``cells`` (median over cells)."""
    n_types = truth_pooled.sizes["unit_channel"]
    out: dict[str, Any] = {}
    for key, p in pooled.items():
        out[key] = float(np.nanmedian(score(kind, p, truth_pooled, cells, mech).values))
    trivial = [
        float(np.nanmedian(score(kind, R.trivial_attribution(truth_ds, n_types, k), truth_pooled, cells, mech)))
        for k in range(n_types)
    ]
    shuffled = [
        float(np.nanmedian(score(kind, R.shuffled_types(truth_pooled, p), truth_pooled, cells, mech)))
        for p in R.derangements(n_types)
    ]
    out.update(trivial=float(np.mean(trivial)), trivial_each=trivial, shuffled=float(np.mean(shuffled)))
    out["shuffled_max"] = max(shuffled)
    return out


def lesion_verdicts(
    model: Any, groups: np.ndarray, names: list[str], kept: list[str], phen: str, cells: list[str]
) -> dict[str, bool]:
    """The phenomenon's verdict on the CNN intact, with only the kept types, and with them silenced.

    A type is silenced by clamping its ``conv1`` channels (direct and delayed) to their value under
    the mean-grey screen (:class:`mechlens.lesion.Lesioned`); the measure runs all its own stimuli
    (every speed, every reversal position) on the lesioned model. The verdict is read on ``cells``,
    those that show the phenomenon in the circuit (the cells the recovery score is computed on), so
    another cell class showing it by another route cannot pass the check; motion reversal keeps its
    population rule.
    """
    kept_channels = [c for c, k in enumerate(groups) if names[k] in kept]
    rest = [c for c in range(len(groups)) if c not in kept_channels]
    out = {}
    for label, m in (
        ("intact", model),
        ("kept only", lesion_channels(model, "conv1", kept_channels)),
        ("kept silenced", lesion_channels(model, "conv1", rest)),
    ):
        ds = measure_all(m, only=[phen])[phen]
        shown = ds["passed"].sel(cell=cells)
        out[label] = verdict(ds) if ds.attrs.get("measure") == "motion_reversal" else bool(shown.any())
    return out


def _gated(row: dict, key: str) -> str:
    """A test's score, or why the gate withholds it."""
    g = row["gate"][key]
    return f"{row['scores'][key]:.2f}" if g["passed"] else "gate fails: not scored"


def _agreement(row: dict, key: str) -> str:
    """A test's agreement gate on the row's probe, in one cell of the table."""
    g = row["gate"][key]
    return f"r {g['r_median']:.2f}, {g['peak_error_ms']:.0f} ms {'pass' if g['passed'] else 'FAIL'}"


def _verdicts(lesions: dict[str, bool]) -> str:
    """A lesion check in words: intact / kept only / kept silenced."""
    return " / ".join("shows it" if lesions[k] else "lost" for k in ("intact", "kept only", "kept silenced"))


def _smallest(row: dict) -> str:
    """This circuit's smallest ablation sets, and the default circuit's row where it differs."""
    sets = " or ".join(", ".join(s) for s in row["smallest"]) or "none"
    return sets if [tuple(row["truth"])] == row["smallest"] else f"{sets} ({', '.join(row['truth'])})"


def print_table(rows: list[dict], names: list[str], free: bool) -> None:
    """The table (phenomenon x test, controls, gate, kept types, lesion check) and its footnote."""
    print(
        "\n| phenomenon (probe, cells showing it) | test A (fixed conv1) | test A: type split / own types "
        "| test A agreement "
        f"| test B ({'free conv1' if free else 'bundled'}) "
        "| test B agreement | random CNN | trivial one type | shuffled types | circuit without its types "
        "| OFF-fast silenced | controls "
        "| kept types (test A) | ablation table: this circuit's smallest set (the default circuit's row) "
        "| kept = smallest set | test A intact / kept only / kept silenced | s |"
    )
    print("|" + " --- |" * 17)
    for row in rows:
        s = row["scores"]
        ctrl = [s["random"], s["trivial"], s["shuffled"], s["own"]]
        worst = max(ctrl)
        first = f"{s['other']:.2f}" + ("" if row["own"] == OTHER_SILENCED else " (not counted)")
        controls = "low" if worst <= CONTROL_MAX and (s["A"] - worst) >= MARGIN else "HIGH: test fails"
        les = row["lesions"]
        print(
            f"| {row['phenomenon'].replace('_', ' ')} ({row['probe']}, {row['cells']}) | {_gated(row, 'A')} | "
            f"{row['split']['A']:.2f} / {row['own_types']['A']:.2f} | {_agreement(row, 'A')} | "
            f"{_gated(row, 'B')} | {_agreement(row, 'B')} | "
            + " | ".join(f"{v:.2f}" for v in ctrl)
            + f" | {first} | {controls} | {', '.join(row['kept']) or '-'} | {_smallest(row)} | "
            f"{'yes' if tuple(row['kept']) in row['smallest'] else 'no'} | {_verdicts(les)} | {row['seconds']:.0f} |"
        )
    print(
        "\nscore: per cell, the lower of the type split and the raw attribution of the phenomenon's own types"
        " (the ablation table), median over the cells showing it; test A's two parts are shown beside it. "
        "Controls must be <= 0.3 and at least 0.4 below test A; 'trivial one type' is the mean over the four "
        "types (per type, "
        + "; ".join(f"{r['probe']}: " + " ".join(f"{v:.2f}" for v in r["trivial_each"]) for r in rows)
        + f", in the order {', '.join(names)}); shuffled types: mean over derangements (max "
        + ", ".join(f"{r['shuffled_max']:.2f}" for r in rows)
        + "). 'circuit without its types': a CNN trained like test A on the circuit with the phenomenon's"
        " ablation-table types silenced ("
        + "; ".join(f"{r['probe']}: {', '.join(r['own'])}" for r in rows)
        + "); 'OFF-fast silenced', the first such control, counts only where OFF-fast is the whole mechanism."
        " Each control circuit scored against the intact one (how different its mechanism is; score, and"
        " the type split alone): "
        + "; ".join(
            f"{r['probe']}: "
            + ", ".join(
                f"{'+'.join(k)} {v['mechanism']:.2f} (split {v['split']:.2f})" for k, v in r["circuit_vs"].items()
            )
            for r in rows
        )
        + ". The ablation table is re-measured on this circuit: its smallest sets of types that abolish the"
        " phenomenon when silenced and keep it alone (the default circuit's row in brackets where it differs)."
        " A mechanism passes the lesion check when test A shows the phenomenon intact and with only the"
        " kept types, and loses it with them silenced (read on the cells that show it in the circuit; reversal:"
        " the population)."
    )


def print_diagnoses(rows: list[dict], names: list[str]) -> None:
    """The diagnosis lines under the table (ungated): own types, measure differences, windows."""
    for row in rows:
        print(
            f"diagnosis, {row['probe']}, the attribution of {', '.join(row['truth'])} alone, raw "
            "(the score's second part; ungated): " + ", ".join(f"{k} {v:.2f}" for k, v in row["own_types"].items())
        )
        if row["contrasts"]:
            ev, after_s = WINDOWS[row["probe"]]
            before_s = CONTRASTS[row["probe"]]
            what = f"largest rate 0..{after_s} s after {ev} minus the " + (
                f"largest in the {before_s} s before" if before_s is not None else f"rate at {ev}"
            )
            print(
                f"diagnosis, {row['probe']}, the measure's rate difference ({what}) attributed per type, mean over "
                "the cells showing it (Hz; ungated): "
                + "; ".join(
                    f"{k} " + ", ".join(f"{n} {v:+.1f}" for n, v in zip(names, c.mean("cell").values))
                    for k, c in row["contrasts"].items()
                )
                + ". Raised by (positive parts, >= 80 % of their sum): "
                + "; ".join(f"{k} {', '.join(driving_types(c, names)) or '-'}" for k, c in row["contrasts"].items())
            )
            if row["driving_lesions"]:
                les = row["driving_lesions"]
                print(
                    f"diagnosis, {row['probe']}, the lesion check of test A with the types that raise it "
                    f"({', '.join(row['driving'])}; ablation table: {', '.join(row['truth'])}): intact / kept only / "
                    f"kept silenced: {_verdicts(les)}"
                )
        if row["windowed"]:
            ev, length = WINDOWS[row["probe"]]
            print(
                f"diagnosis, {row['probe']}, the type split read 0..{length} s after {ev} only (ungated): "
                + ", ".join(f"{k} {v:.2f}" for k, v in row["windowed"].items())
            )
            for c, (rms, own_r) in row["per_cell"].items():
                print(
                    f"  {c}: RMS attribution in the window (Hz) "
                    + ", ".join(f"{n} {v:.1f}" for n, v in zip(names, rms))
                    + f"; circuit without {'+'.join(row['own'])} scores {own_r:.2f}"
                )


def print_ungated(ungated: list[tuple[str, dict]]) -> None:
    """Every score the gate withholds, per kind of score and cell set (``--show-ungated``)."""
    keys = ("A", "B", "random", "trivial", "shuffled", "own", "other")
    labels = {
        "mechanism": "the score (the headline's)",
        "split": "type split alone",
        "raw": "raw pooled attribution",
    }
    for cs, cells_label in (("shown", "cells showing the phenomenon"), ("responding", "every responding cell")):
        for kind in KINDS:
            print(f"\nungated scores (diagnosis only), {labels[kind]}, {cells_label}:")
            print(f"  {'phenomenon':<28} " + " ".join(f"{k:>9}" for k in keys))
            for phen, every in ungated:
                print(f"  {phen:<28} " + " ".join(f"{every[(cs, kind)][k]:>9.2f}" for k in keys))


def print_fitted_map(cnn: Any, circuit_w: np.ndarray) -> None:
    """Issue 17's other matching, a map fitted on natural scenes, as a diagnosis: how much of each test-B
    channel the circuit's filters carry on natural scenes and under white noise, beside a random kernel's."""
    from mechlens.testing import noise_stimulus

    movies = {
        "natural scenes": registry.get("stimulus", "natural-scenes")(duration=20.0).generate(seed=123, grid=cnn.grid),
        "white noise": noise_stimulus(cnn, n_times=1000, seed=0),
    }
    # a reference: eight white-noise kernels, fitted the same way on the same windows
    random_kernels = np.random.default_rng(0).standard_normal(tuple(cnn.module.conv1.weight.shape))
    fits = {}
    for label, movie in movies.items():
        fits[label] = basis.fit_circuit_basis(cnn, circuit_w, movie["stimulus"], stride=10)
        windows = cnn.windows(movie["stimulus"])
        fits[label + " (random)"] = basis.fit_kernels(random_kernels, circuit_w, windows, stride=10)
    print(
        "a map fitted instead (diagnosis: mechlens_retina.experiments.basis, least squares of each channel on the "
        "circuit's 8 filters at the same position), the fraction of each test-B channel's variance they carry:"
    )
    for label in movies:
        own, rand = fits[label].explained, fits[label + " (random)"].explained
        print(
            f"  {label}: "
            + " ".join(f"{v:.2f}" for v in own)
            + f"; 8 white-noise kernels: median {np.median(rand):.2f}"
            f"; largest |mixing coefficient| {np.abs(fits[label].mixing).max():.3g}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", help="test B's CNN (default: the bundled one); scored against the circuit it was trained on"
    )
    parser.add_argument("--steps", type=int, default=8, help="integrated-gradients nodes per time point (circuit)")
    parser.add_argument("--show-ungated", action="store_true", help="also print scores the gate does not allow")
    parser.add_argument("--rebuild", action="store_true", help="retrain test A and every control CNN first")
    parser.add_argument(
        "--train-missing", action="store_true", help="train only the test-A and control CNNs that are missing"
    )
    parser.add_argument("--probes", nargs="*", help="only these probes (flash, osr, moving-bar, motion-reversal)")
    parser.add_argument(
        "--figure", type=Path, help="also draw the attributions per type and the measures' differences to this file"
    )
    args = parser.parse_args()
    t_start = time.perf_counter()
    cnn_cls = registry.get("model", "retina-cnn")
    model_b = cnn_cls(checkpoint=args.checkpoint or "bundled", device="cpu")
    circuit = trained_circuit(model_b)
    if circuit is None:
        raise SystemExit(
            f"{args.checkpoint or 'the bundled model'} records no synthetic-retina recipe to score against"
        )
    fixed_path = test_a_paths(circuit)[0]
    if args.rebuild or (args.train_missing and not fixed_path.is_file()):
        rebuild("fixed", circuit)
    for silenced in control_sets():
        if args.rebuild or (args.train_missing and not other_path(circuit, silenced).is_file()):
            rebuild("other", circuit, silenced)

    # "A" and one entry per control circuit (keyed by its silenced types)
    paths: dict[str | tuple[str, ...], tuple[Path, dict[str, Any]]] = {"A": (fixed_path, circuit)}
    paths.update({sil: (other_path(circuit, sil), other_circuit(circuit, sil)) for sil in control_sets()})
    again = f"python bench/recovery.py --train-missing{' --checkpoint ' + args.checkpoint if args.checkpoint else ''}"
    for path, _ in paths.values():
        if not path.is_file():
            raise SystemExit(f"{path} is missing: make it with `{again}` (10-30 CPU minutes per CNN)")
    models = {
        "A": cnn_cls(checkpoint=str(fixed_path), device="cpu"),
        "B": model_b,
        "random": cnn_cls(checkpoint="random", first_layer="synthetic-retina", n_cells=8, seed=1, device="cpu"),
    }
    control_cnns = {sil: cnn_cls(checkpoint=str(paths[sil][0]), device="cpu") for sil in control_sets()}
    for key, (path, want) in paths.items():
        got = trained_circuit(models["A"] if isinstance(key, str) else control_cnns[key])
        if got != want:
            raise SystemExit(
                f"{path} was trained on the circuit {got}, not {want}: remake it with "
                f"`python bench/recovery.py --rebuild{' --checkpoint ' + args.checkpoint if args.checkpoint else ''}`"
            )
    truth = registry.get("model", "synthetic-retina")(**circuit)
    truth_without = {
        sil: registry.get("model", "synthetic-retina")(**other_circuit(circuit, sil)) for sil in control_sets()
    }
    print(f"circuit: synthetic-retina {circuit or '(default)'}; test B: {args.checkpoint or 'the bundled model'}")
    groups, names = M.type_groups(truth)
    n_types = len(names)
    circuit_w = truth.conv.weight.detach().numpy()
    matches = {k: M.identity_match(groups) for k in ("A", "random", "other", "own")}
    weight_b = models["B"].module.conv1.weight.detach().numpy()
    polarity, consistency = M.channel_polarity(models["B"])
    matches["B"] = M.match_kernels(weight_b, circuit_w, groups, polarity=polarity)
    # before 2026-12-07 (late) the match ignored the polarity: printed beside it, for comparison
    unsigned = M.match_kernels(weight_b, circuit_w, groups)
    channel_names = [t["name"] for t in truth.ground_truth_types()]

    print(
        "test B matching (its conv1 -> circuit filter; cosine of the kernel signed by the channel's polarity at its "
        "ReLU >= 0.5 to match; in brackets the sign-invariant |cos| match):"
    )
    for c, (ch, cos) in enumerate(zip(matches["B"].channel, matches["B"].strength())):
        best = matches["B"].correlation[c].max()
        to = f"{channel_names[ch]:<17} cos {cos:+.2f}" if ch >= 0 else f"unmatched          (largest {best:+.2f})"
        old = unsigned.channel[c]
        was = f"{channel_names[old]} {unsigned.strength()[c]:+.2f}" if old >= 0 else "unmatched"
        print(f"  conv1 channel {c} (polarity {polarity[c]:+.0f}, {consistency[c]:.0%} of its units) -> {to} [{was}]")
    print_fitted_map(models["B"], circuit_w)
    fixed_dev = float(np.abs(models["A"].module.conv1.weight.detach().numpy() - circuit_w).max())
    print(f"test A: conv1 equals the circuit's filters to {fixed_dev:.1e} (frozen in training)")

    t0 = time.perf_counter()
    gates = {k: probe_agreement(models[k], truth)["stimuli"] for k in ("A", "B")}
    shown = shown_cells(truth)
    print(f"agreement gate and the circuit's measures: {time.perf_counter() - t0:.0f} s")

    exact = registry.get("attributor", "exact-integrated-gradients")()
    ig = registry.get("attributor", "integrated-gradients")(n_steps=args.steps)
    rows, ungated = [], []
    for probe, spec in probe_stimuli().items():
        if args.probes and probe not in args.probes:
            continue
        t0 = time.perf_counter()
        phen = spec["phenomenon"]
        truth_ds = attribute_probe(truth, spec["runs"], ig, "bipolar")
        truth_pooled = R.pooled_attribution(truth_ds["attribution"], M.TypeMatch(groups, np.zeros(0)), n_types)
        own = control_silenced(phen)
        # "other": the first control (OFF-fast silenced), scored everywhere; "own": this phenomenon's
        # (the same CNN, attributed once, where the phenomenon's types are OFF-fast alone)
        attrs = {key: attribute_probe(model, spec["runs"], exact, "conv1") for key, model in models.items()}
        attrs["other"] = attribute_probe(control_cnns[OTHER_SILENCED], spec["runs"], exact, "conv1")
        attrs["own"] = (
            attrs["other"]
            if own == OTHER_SILENCED
            else attribute_probe(control_cnns[own], spec["runs"], exact, "conv1")
        )
        mech = [names.index(t) for t in MECHANISMS[phen].types]
        # how different each control circuit's own mechanism is: the silenced circuit scored against
        # the intact one, on the same cells (the headline score, and its type split alone)
        circuit_vs, without_pooled, without_response = {}, {}, {}
        for sil in dict.fromkeys((OTHER_SILENCED, own)):
            without_ds = attribute_probe(truth_without[sil], spec["runs"], ig, "bipolar")
            without_response[sil] = without_ds["response"]
            without = without_ds["attribution"]
            without_pooled[sil] = R.pooled_attribution(without, M.TypeMatch(groups, np.zeros(0)), n_types)
            circuit_vs[sil] = {
                kind: float(np.nanmedian(score(kind, without_pooled[sil], truth_pooled, shown[phen], mech).values))
                for kind in ("mechanism", "split")
            }
        windowed: dict[str, float] = {}
        per_cell: dict[str, tuple[np.ndarray, float]] = {}
        pooled_by = {
            k: R.pooled_attribution(attrs[k]["attribution"], matches[k], n_types)
            for k in ("A", "B", "random", "own", "other")
        }
        pooled_by.update({"circuit without " + "+".join(k): v for k, v in without_pooled.items()})
        # the mechanism score's second part: the attribution of the phenomenon's own types alone,
        # raw, against the circuit's (does the model give those types the circuit's contribution?)
        own_types = {
            k: float(
                np.nanmedian(
                    R.score_pooled(
                        v.isel(unit_channel=mech), truth_pooled.isel(unit_channel=mech), shown[phen], split=False
                    ).values
                )
            )
            for k, v in pooled_by.items()
        }
        if probe in WINDOWS:
            # diagnosis only: the same type split read in the phenomenon's own window
            ev, length = WINDOWS[probe]
            windowed = window_scores(pooled_by, truth_pooled, truth_ds[ev], length, shown[phen])
            # per cell: how much of each type the circuit uses in the window, and how the circuit
            # without the phenomenon's types scores there (what sets the median above)
            truth_cut = in_window(truth_pooled, truth_ds[ev], length)
            cut = truth_cut.sel(cell=shown[phen])
            rms = (cut**2).mean([d for d in cut.dims if d not in ("cell", "unit_channel")]) ** 0.5
            own_cells = R.score_pooled(in_window(without_pooled[own], truth_ds[ev], length), truth_cut, shown[phen])
            per_cell = {str(c): (rms.sel(cell=c).values, float(own_cells.sel(cell=c))) for c in rms["cell"].values}
        event = truth_ds[WINDOWS[probe][0]] if probe in WINDOWS else None
        contrasts: dict[str, xr.DataArray] = {}
        if probe in CONTRASTS and event is not None:
            # diagnosis only: which types raise the rate difference the phenomenon's measure reads
            for label, p, resp in (
                ("circuit", truth_pooled, truth_ds["response"]),
                ("test A", pooled_by["A"], attrs["A"]["response"]),
                ("CNN without " + "+".join(own), pooled_by["own"], attrs["own"]["response"]),
                ("circuit without " + "+".join(own), without_pooled[own], without_response[own]),
            ):
                contrasts[label] = measure_contrast(p, resp, event, probe, shown[phen])
        cell_sets = {"shown": shown[phen], "responding": R.responding_cells(truth_ds)}
        # the headline: the mechanism score on the cells that show the phenomenon in the circuit;
        # the other variants are printed for diagnosis
        models_pooled = {k: pooled_by[k] for k in ("A", "B", "random", "other", "own")}
        every = {
            (cs, kind): score_set(models_pooled, truth_ds, truth_pooled, cells, kind, mech)
            for cs, cells in cell_sets.items()
            for kind in KINDS
        }
        scores = every[("shown", "mechanism")]
        kept = kept_types(attrs["A"], matches["A"], names, shown[phen])
        # the ablation table of *this* circuit: MECHANISMS names the default circuit's smallest sets
        smallest = smallest_sets(phen, model_params=circuit)
        lesions = lesion_verdicts(models["A"], groups, names, kept, phen, shown[phen])
        # diagnosis only: the same lesion check for the types that raise the measure's difference
        driving = driving_types(contrasts["test A"], names) if contrasts else []
        driving_lesions = lesion_verdicts(models["A"], groups, names, driving, phen, shown[phen]) if driving else {}
        condition, traces = trace_panel(
            {"test A": pooled_by["A"], "CNN without " + "+".join(own): pooled_by["own"]},
            truth_pooled,
            shown[phen][0],
            event,
            WINDOWS[probe][1] if probe in WINDOWS else REVERSAL_WINDOW_S,
        )
        figure = {
            "traces": traces,
            "cell": shown[phen][0],
            "condition": condition,
            "event": WINDOWS[probe][0] if event is not None else None,
        }
        rows.append(
            {
                "probe": probe, "phenomenon": phen, "scores": scores, "gate": {k: gates[k][probe] for k in gates},
                "kept": kept, "truth": list(MECHANISMS[phen].types), "cells": len(cell_sets["shown"]),
                "trivial_each": scores["trivial_each"], "shuffled_max": scores["shuffled_max"],
                "lesions": lesions, "seconds": time.perf_counter() - t0, "own": own, "circuit_vs": circuit_vs,
                "windowed": windowed, "per_cell": per_cell, "own_types": own_types,
                "split": every[("shown", "split")], "contrasts": contrasts, "figure": figure,
                "driving": driving, "driving_lesions": driving_lesions, "smallest": smallest,
            }
        )  # fmt: skip
        ungated.append((phen, every))

    print_table(rows, names, bool(args.checkpoint))
    print_diagnoses(rows, names)
    if args.show_ungated:
        print_ungated(ungated)
    if args.figure:
        plot_figure(rows, names, args.figure)
        print(f"\nfigure: {args.figure}")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s (circuit IG {args.steps} nodes per time point)")


if __name__ == "__main__":
    main()
