from __future__ import annotations

from dataclasses import dataclass

import pytest

from mechlens.errors import ParameterError
from mechlens.parameters import build, param, specs, swept, to_json, type_name


@dataclass(frozen=True)
class P:
    period: float | list[float] = param(0.1, "flash period", units="s", gt=0, sweepable=True)
    n: int = param(3, "count", min=1, max=10)
    mode: str = param("dark", "polarity", choices=["dark", "bright"])
    flag: bool = param(False, "a switch")
    sizes: list[int] = param([1, 2], "sizes", min=0)

    def __post_init__(self) -> None:
        if self.mode == "bright" and self.n > 5:
            raise ParameterError("n", "must be <= 5 when mode is bright")


def test_defaults_and_specs():
    p = build(P, {})
    assert p.period == 0.1 and p.sizes == [1, 2]
    s = {x.name: x for x in specs(P)}
    assert s["period"].units == "s" and s["period"].sweepable
    assert s["n"].range_text() == "in [1, 10]"
    assert type_name(s["period"].type) == "float | list[float]"


def test_int_becomes_float_and_sweep_is_detected():
    p = build(P, {"period": [1, 0.2]})
    assert p.period == [1.0, 0.2]
    assert swept(p) == ("period", [1.0, 0.2])
    assert swept(build(P, {})) is None


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"periood": 0.1}, r"periood: unknown parameter; did you mean period\?"),
        ({"period": -1}, r"period: got -1.0 s; allowed range > 0 s"),
        ({"period": [0.1, 0.0]}, r"period\[1\]: got 0.0"),
        ({"n": 2.5}, "n: expected an integer"),
        ({"n": 11}, r"allowed range in \[1, 10\]"),
        ({"mode": "grey"}, "allowed: one of 'dark', 'bright'"),
        ({"flag": "yes"}, "expected true or false"),
        ({"period": "fast"}, "expected float | list"),
        ({"mode": "bright", "n": 7}, "must be <= 5 when mode is bright"),
        ({"period": []}, "empty sweep"),
    ],
)
def test_bad_values_are_rejected_with_the_parameter_named(values, match):
    with pytest.raises(ParameterError, match=match):
        build(P, values, where="")


def test_where_prefixes_the_path():
    with pytest.raises(ParameterError, match=r"^stimulus\.n:"):
        build(P, {"n": 0}, where="stimulus")


def test_json_is_stable():
    assert to_json(build(P, {})) == to_json(build(P, {}))
    assert '"period": 0.1' in to_json(build(P, {}))


def test_infinite_numbers_are_refused_with_the_range():
    from dataclasses import dataclass

    from mechlens.errors import ParameterError
    from mechlens.parameters import build, param

    @dataclass(frozen=True)
    class P:
        pixel_um: float = param(55.0, "pixel size", units="um", gt=0)

    for value in (float("inf"), float("-inf")):
        with pytest.raises(ParameterError, match=r"pixel_um.*finite number"):
            build(P, {"pixel_um": value}, where="stimulus")
    assert build(P, {"pixel_um": 1e30}).pixel_um == 1e30
