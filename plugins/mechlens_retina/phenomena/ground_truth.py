"""The synthetic retina's ground truth: which bipolar types generate each phenomenon, shown by ablation.

The synthetic retina (:mod:`mechlens_retina.models.synthetic`) was built so that each of the four
phenomena of :mod:`mechlens_retina.phenomena` arises from a few named bipolar types. "Arises from"
is a claim that can be checked on the circuit itself: silencing the named types
(``SyntheticRetina(silence=[...])`` zeroes their direct and delayed channels) must abolish the
phenomenon's measure, and silencing every *other* type must keep it. :data:`MECHANISMS` is that
table; :func:`ablation_table` re-measures it and ``python -m mechlens_retina.phenomena.ground_truth`` prints
it. It is the ground truth that mechanism recovery (attribution + reduction on a CNN trained on
the circuit) is scored against; docs/synthetic-retina.md explains each row.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: the bipolar types of the default circuit, in channel order
TYPES = ("OFF-fast", "OFF-slow", "ON-fast", "ON-slow")


@dataclass(frozen=True)
class Mechanism:
    """How the circuit generates one phenomenon.

    Attributes
    ----------
    phenomenon : str
        A measure of :data:`mechlens_retina.phenomena.MEASURES`.
    types : tuple of str
        The bipolar types that generate it (silencing them abolishes the measure; silencing the
        others keeps it).
    roles : dict
        Type -> its role, with sign: ``"excitation"`` (+, through the subunits),
        ``"gain control"`` (divisive, through the delayed copy), ``"inhibition"`` (-, amacrine).
    account : str
        One sentence: how the types make the phenomenon.
    source : str
        The literature the mechanism follows.
    """

    phenomenon: str
    types: tuple[str, ...]
    roles: dict[str, str]
    account: str
    source: str


#: phenomenon -> the types that generate it in the default circuit (checked by :func:`ablation_table`).
#: Each row names the smallest set that passes both ablations; "a type" includes its delayed copy
#: (channel ``n_types + c``), so a one-type row is two channels of the attributed layer.
MECHANISMS: dict[str, Mechanism] = {
    "latency_coding": Mechanism(
        "latency_coding",
        ("OFF-fast",),
        {"OFF-fast": "excitation (+) cut by its own delayed divisive gain control"},
        "A stronger dark flash drives OFF-fast's delayed gain signal up sooner and higher, so the "
        "divisive gain control cuts the subunit response earlier and its peak moves forward.",
        "Gollisch & Meister 2008 (latency code); gain-control form after Berry et al. 1999",
    ),
    "omitted_stimulus_response": Mechanism(
        "omitted_stimulus_response",
        ("OFF-fast", "ON-fast", "ON-slow"),
        {
            "OFF-fast": "excitation (+): the per-flash response during the train",
            "ON-slow": "excitation (+): its transient rebound, released when the expected flash is missing",
            "ON-fast": "excitation (+): sustained ON drive that sets when the rebound crosses threshold",
        },
        "During the train each dark flash holds the ON-OFF cell's ON-slow rebound under threshold; "
        "when a flash is missing its rebound, lifted by the sustained ON-fast drive, is released at a "
        "fixed delay after the expected flash, while OFF-fast answers each flash.",
        "Schwartz et al. 2007; Werner et al. 2008 (an ON-pathway account without an oscillator)",
    ),
    "motion_anticipation": Mechanism(
        "motion_anticipation",
        ("OFF-fast",),
        {"OFF-fast": "excitation (+) divided by the ganglion cell's gain signal (its delayed copy pooled over the RF)"},
        "The bar's leading edge excites OFF-fast subunits in the periphery of the receptive field; "
        "the cell's own gain control, pooled over the field, cuts the response shortly after it "
        "starts, so the response peaks before the bar reaches the centre.",
        "Berry et al. 1999 (contrast gain control)",
    ),
    "motion_reversal": Mechanism(
        "motion_reversal",
        ("ON-slow",),
        {"ON-slow": "excitation (+): a transient burst of the expansive ON-OFF cells after the reversal"},
        "When the bar reverses, the trailing edge that now leads uncovers ON-slow subunits that the "
        "bar had just darkened, and their transient ON response, through the ON-OFF cells' expansive "
        "output, is a synchronous burst at a fixed delay after the reversal.",
        "Schwartz et al. 2007 (reversal burst); Chen et al. 2014 name ON/OFF convergence, which this "
        "circuit does not need (see docs/synthetic-retina.md)",
    ),
}


def _model(silence: Sequence[str], registry: Any = None, model_params: Mapping[str, Any] | None = None) -> Any:
    from mechlens import registry as _registry

    reg = registry or _registry.default()
    return reg.get("model", "synthetic-retina")(**dict(model_params or {}), silence=list(silence))


def ablate(
    phenomenon: str, silence: Sequence[str], registry: Any = None, model_params: Mapping[str, Any] | None = None
) -> Any:
    """The phenomenon's measure on the circuit with some types silenced.

    Parameters
    ----------
    phenomenon : str
        A measure name (:data:`mechlens_retina.phenomena.MEASURES`).
    silence : sequence of str
        Bipolar types to silence (their direct and delayed channels set to 0).
    registry : mechlens.registry.Registry, optional
        Where the model and stimuli are looked up.
    model_params : mapping, optional
        Other parameters of the circuit, e.g. ``{"circuit": "v3"}``.

    Returns
    -------
    xarray.Dataset
        The measure's result (:func:`mechlens_retina.phenomena.verdict` says whether it passed).
    """
    from mechlens_retina import phenomena

    model = _model(silence, registry, model_params)
    return phenomena.measure_all(model, registry, only=[phenomenon])[phenomenon]


def ablation_table(
    mechanisms: dict[str, Mechanism] | None = None,
    registry: Any = None,
    types: Sequence[str] = TYPES,
    model_params: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Measure every row of the ground-truth table on the circuit: intact, named types silenced, others silenced.

    Parameters
    ----------
    mechanisms : dict, optional
        Phenomenon -> :class:`Mechanism` (default :data:`MECHANISMS`).
    registry : mechlens.registry.Registry, optional
        Where the model and stimuli are looked up.
    types : sequence of str
        All bipolar types of the circuit (the complement of a row's types is silenced).
    model_params : mapping, optional
        Other parameters of the circuit (``{"circuit": "v3"}``: the table on version 3).

    Returns
    -------
    list of dict
        One per phenomenon: ``phenomenon``, ``types``, ``intact`` / ``named_silenced`` /
        ``others_silenced`` (bool: the measure passed), ``holds`` (intact passes, silencing the
        named types abolishes it, silencing the others keeps it) and ``seconds``.
    """
    from mechlens_retina import phenomena

    rows = []
    for name, mech in (mechanisms if mechanisms is not None else MECHANISMS).items():
        t0 = time.perf_counter()
        others = [t for t in types if t not in mech.types]
        intact = phenomena.verdict(ablate(name, [], registry, model_params))
        named = phenomena.verdict(ablate(name, mech.types, registry, model_params))
        rest = phenomena.verdict(ablate(name, others, registry, model_params)) if others else intact
        rows.append(
            {
                "phenomenon": name,
                "types": list(mech.types),
                "intact": intact,
                "named_silenced": named,
                "others_silenced": rest,
                "holds": intact and not named and rest,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    return rows


def smallest_sets(
    phenomenon: str,
    registry: Any = None,
    types: Sequence[str] = TYPES,
    model_params: Mapping[str, Any] | None = None,
) -> list[tuple[str, ...]]:
    """The smallest sets of types that pass both ablations of the table on this circuit.

    :data:`MECHANISMS` names the smallest such set on the default circuit; another version (e.g.
    ``{"circuit": "v3"}``) may need fewer types (on versions 3 and 5 the OSR is abolished by
    silencing OFF-fast and ON-slow and kept with only them, ON-fast not needed). Sets are tried by
    size, one type first, and every set of the first size with any is returned.

    Parameters
    ----------
    phenomenon : str
        A measure name (:data:`mechlens_retina.phenomena.MEASURES`).
    registry : mechlens.registry.Registry, optional
        Where the model and stimuli are looked up.
    types : sequence of str
        All bipolar types of the circuit.
    model_params : mapping, optional
        Other parameters of the circuit, e.g. ``{"circuit": "v3"}``.

    Returns
    -------
    list of tuple of str
        Each set in ``types`` order; empty when the intact circuit does not show the phenomenon or no
        proper subset passes (2^n - 2 ablation pairs at most: 14 for four types).
    """
    from mechlens_retina import phenomena

    if not phenomena.verdict(ablate(phenomenon, [], registry, model_params)):
        return []
    for size in range(1, len(types)):
        found = []
        for named in itertools.combinations(types, size):
            others = [t for t in types if t not in named]
            if phenomena.verdict(ablate(phenomenon, named, registry, model_params)):
                continue
            if phenomena.verdict(ablate(phenomenon, others, registry, model_params)):
                found.append(tuple(named))
        if found:
            return found
    return []


def format_ablation_table(rows: Sequence[dict[str, Any]]) -> str:
    """The ablation table as markdown (phenomenon | types | intact | named silenced | others silenced | holds)."""

    def yn(v: bool) -> str:
        return "shown" if v else "abolished"

    lines = [
        "| phenomenon | generating types | intact circuit | named types silenced | all other types silenced | holds |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['phenomenon'].replace('_', ' ')} | {', '.join(r['types'])} | {yn(r['intact'])} | "
            f"{yn(r['named_silenced'])} | {yn(r['others_silenced'])} | {'yes' if r['holds'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mechlens_retina.phenomena.ground_truth``: re-measure and print the ablation table."""
    parser = argparse.ArgumentParser(prog="python -m mechlens_retina.phenomena.ground_truth", description=main.__doc__)
    parser.parse_args(argv)
    t0 = time.perf_counter()
    rows = ablation_table()
    sys.stdout.write(format_ablation_table(rows) + "\n")
    for name, mech in MECHANISMS.items():
        roles = ", ".join(f"{t} ({r})" for t, r in mech.roles.items())
        sys.stdout.write(f"\n{name}: {roles}. {mech.account} [{mech.source}]\n")
    sys.stdout.write(f"\n({time.perf_counter() - t0:.0f} s)\n")
    return 0 if all(r["holds"] for r in rows) else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
