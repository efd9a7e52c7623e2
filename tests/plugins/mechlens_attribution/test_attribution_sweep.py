"""exact-integrated-gradients, algorithm=sweep: agreement with the refinement algorithm, geometry, fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from attribution_test_models import SeqModel, full_field_stimulus, seeded, single_relu_model, stimulus_for
from mechlens_attribution import sweep as sweep_module
from mechlens_attribution.exact import ExactIntegratedGradients
from mechlens_attribution.structure import UnsupportedModelError, piecewise_plan
from mechlens_attribution.sweep import Sweep, sweep_plan
from torch import nn

from mechlens.toymodels import ToyCNN


def _conv_model(
    mid: nn.Module, size: int = 12, seed: int = 0, final: nn.Module | None = None, cells: int = 3
) -> SeqModel:
    """conv (the layer, 3 channels) -> BN -> ReLU -> ``mid`` -> BN -> ReLU -> dense ``cells`` [-> final]."""
    below = nn.Sequential(nn.Conv2d(2, 3, 3))
    with torch.no_grad():
        n_out = mid(torch.zeros(1, 3, size - 2, size - 2)).numel()
    parts = [nn.BatchNorm2d(3), nn.ReLU(), mid, nn.Flatten(), nn.BatchNorm1d(n_out), nn.ReLU(), nn.Linear(n_out, cells)]
    if final is not None:
        parts.append(final)
    above = seeded(nn.Sequential(*parts), seed + 1)
    with torch.no_grad():  # one negative scale on each side of the mixing layer
        above[0].weight[1] = -above[0].weight[1]
        above[4].weight[::3] = -above[4].weight[::3]
    return SeqModel(seeded(below, seed), above, size=size)


def _both(model: SeqModel, stim, **params):
    sweep = ExactIntegratedGradients(algorithm="sweep", **params).attribute(model, stim)
    refine = ExactIntegratedGradients(algorithm="refine", precision="float64", **params).attribute(model, stim)
    return sweep, refine


def _assert_per_unit_agrees(model: SeqModel, stim, **params) -> None:
    """keep_space through the sweep: equal to the refinement per unit, and summing to the channel sums."""
    sweep, refine = _both(model, stim, keep_space=True, **params)
    _assert_agree(sweep, refine)
    assert sweep["attribution"].dims == refine["attribution"].dims
    sums = ExactIntegratedGradients(algorithm="sweep", **params).attribute(model, stim)["attribution"]
    spatial = [d for d in sweep["attribution"].dims if d in ("unit_y", "unit_x")]
    scale = float(np.abs(sums).max())
    np.testing.assert_allclose(sweep["attribution"].sum(spatial).values, sums.values, atol=1e-6 * scale)


def _assert_agree(sweep, refine, rtol: float = 2e-6) -> None:
    assert sweep["attribution"].attrs["algorithm"] == "sweep"
    assert refine["attribution"].attrs["algorithm"] == "refine"
    scale = float(np.abs(refine["attribution"]).max())
    np.testing.assert_allclose(sweep["attribution"].values, refine["attribution"].values, atol=rtol * scale)
    span = float(np.ptp(sweep["response"].values))
    assert float(np.abs(sweep["completeness_error"]).max()) < 1e-5 * span


@pytest.mark.parametrize(
    "mid",
    [
        lambda: nn.Conv2d(3, 4, 3),
        lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1),
        lambda: nn.Conv2d(3, 2, (3, 2), stride=(1, 2), padding=(2, 0), dilation=(2, 1)),
        lambda: nn.Conv2d(3, 2, 3, stride=(2, 1), padding=1, dilation=(1, 2)),
        lambda: nn.Conv2d(3, 2, 5, stride=(1, 2), padding=2),
    ],
    # the sweep walks runs of adjacent output columns: one run per kernel row (stride 1), runs of
    # one column (x dilation > x stride), and runs whose kernel taps are not adjacent (x stride 2)
    ids=["plain", "stride-padding", "anisotropic-dilated", "x-dilated", "wide-x-strided"],
)
def test_sweep_matches_refinement_for_convolutions(mid):
    model = _conv_model(mid(), final=nn.Softplus())
    stim = stimulus_for(model, n_times=5, seed=1)
    sweep, refine = _both(model, stim)
    _assert_agree(sweep, refine)
    _assert_per_unit_agrees(model, stim)


def test_sweep_matches_refinement_for_a_dense_middle_layer_and_a_sigmoid():
    below = nn.Sequential(nn.Conv2d(2, 3, 2))  # (3, 3, 3) layer
    above = nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(27, 6), nn.ReLU(), nn.Linear(6, 2), nn.Sigmoid())
    model = SeqModel(seeded(below, 3), seeded(above, 4))
    stim = stimulus_for(model, n_times=6, seed=2)
    _assert_agree(*_both(model, stim))
    _assert_per_unit_agrees(model, stim)


def test_sweep_matches_refinement_for_conv1d_without_final_nonlinearity():
    below = nn.Sequential(nn.Conv2d(2, 3, (4, 1)), nn.Flatten(2))  # layer (3, 4)
    above = nn.Sequential(nn.ReLU(), nn.Conv1d(3, 2, 2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(10, 2))
    model = SeqModel(seeded(below, 5), seeded(above, 6))
    stim = stimulus_for(model, n_times=6, seed=3)
    sweep, refine = _both(model, stim)
    _assert_agree(sweep, refine)
    assert sweep["attribution"].attrs["final_nonlinearity"] == "none"
    _assert_per_unit_agrees(model, stim)


def test_sweep_with_cells_baseline_and_conditions():
    model = ToyCNN(seed=3)
    stim = stimulus_for(model, n_times=5, seed=4)
    params = {"baseline": "value", "baseline_value": -0.2}
    sweep = ExactIntegratedGradients(algorithm="sweep", **params).attribute(model, stim, cells=["gc02", "gc00"])
    refine = ExactIntegratedGradients(algorithm="refine", precision="float64", **params).attribute(
        model, stim, cells=["gc02", "gc00"]
    )
    assert list(sweep["cell"].values) == ["gc02", "gc00"]
    _assert_agree(sweep, refine)
    kept = ExactIntegratedGradients(algorithm="sweep", keep_space=True, **params).attribute(
        model, stim, cells=["gc02", "gc00"]
    )
    kept_refine = ExactIntegratedGradients(
        algorithm="refine", precision="float64", keep_space=True, **params
    ).attribute(model, stim, cells=["gc02", "gc00"])
    _assert_agree(kept, kept_refine)


def test_dense_white_noise_through_the_retina_architecture():
    cnn = pytest.importorskip("mechlens_retina.models.cnn")
    model = cnn.RetinaCNN(
        checkpoint="random", history=6, image_size=20, kernel1=5, kernel2=5, channels1=4, channels2=4, n_cells=3
    )
    stim = stimulus_for(model, n_times=4)
    attributor = ExactIntegratedGradients(algorithm="sweep")
    sweep = attributor.attribute(model, stim, layer="conv1")
    refine = ExactIntegratedGradients(algorithm="refine", precision="float64").attribute(model, stim, layer="conv1")
    _assert_agree(sweep, refine)
    # the path crosses many linear regions: the case the sweep is for
    assert attributor.stats["segments"] > 20 * stim.sizes["time"]
    # where the time went (bench/attribution.py prints it): CPU seconds of the loop and of the rest
    assert attributor.stats["sweep_cpu_s"] > 0 and attributor.stats["rest_cpu_s"] > 0
    kept = ExactIntegratedGradients(algorithm="sweep", keep_space=True).attribute(model, stim, layer="conv1")
    kept_refine = ExactIntegratedGradients(algorithm="refine", precision="float64", keep_space=True).attribute(
        model, stim, layer="conv1"
    )
    _assert_agree(kept, kept_refine)


def test_auto_picks_the_sweep_where_it_applies_and_refinement_elsewhere():
    model = ToyCNN(seed=0)
    stim = stimulus_for(model, n_times=3)
    assert ExactIntegratedGradients().attribute(model, stim)["attribution"].attrs["algorithm"] == "sweep"
    kept = ExactIntegratedGradients(keep_space=True).attribute(model, stim)
    assert kept["attribution"].attrs["algorithm"] == "sweep"
    one_kink = single_relu_model(seed=1)
    got = ExactIntegratedGradients().attribute(one_kink, stimulus_for(one_kink, n_times=3))
    assert got["attribution"].attrs["algorithm"] == "refine"


def test_asking_for_the_sweep_where_it_cannot_run_is_refused():
    one_kink = single_relu_model(seed=1)
    with pytest.raises(UnsupportedModelError, match="exactly two ReLU stages"):
        ExactIntegratedGradients(algorithm="sweep").attribute(one_kink, stimulus_for(one_kink, n_times=2))


def test_without_numba_auto_falls_back_and_sweep_says_why(monkeypatch):
    monkeypatch.setattr(sweep_module, "sweep_available", lambda: False)
    model = ToyCNN(seed=0)
    stim = stimulus_for(model, n_times=2)
    assert ExactIntegratedGradients().attribute(model, stim)["attribution"].attrs["algorithm"] == "refine"
    with pytest.raises(UnsupportedModelError, match="numba"):
        ExactIntegratedGradients(algorithm="sweep").attribute(model, stim)


@pytest.mark.parametrize(
    ("above", "reason"),
    [
        (lambda: nn.Sequential(nn.Flatten(), nn.LeakyReLU(), nn.Linear(18, 3), nn.ReLU(), nn.Linear(3, 1)), "ReLU"),
        (
            lambda: nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(18, 3), nn.ReLU()),
            "elementwise",
        ),
        (
            lambda: nn.Sequential(nn.ReLU(), nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1), nn.ReLU(), nn.Flatten()),
            "one Conv1d/Conv2d",
        ),
    ],
)
def test_sweep_plan_names_what_does_not_fit(above, reason):
    plan, why = sweep_plan(piecewise_plan(above()))
    assert plan is None
    assert reason in why


def test_crossing_table_grows_when_a_chunk_needs_more():
    model = ToyCNN(seed=4, channels=4)
    stim = stimulus_for(model, n_times=6, seed=5)
    x = model.windows(stim["stimulus"])
    below, above = model.split("conv1")
    with torch.no_grad():
        z, z0 = below(x), below(torch.zeros_like(x[:1]))
    plan, _ = sweep_plan(piecewise_plan(above))
    cells = torch.arange(len(model.cells))
    reference = Sweep(plan, z0, cells, 4).attribute(z - z0)
    small = Sweep(plan, z0, cells, 4)
    small.crossings_per_row = 0.01
    got = small.attribute(z - z0)
    assert small.crossings_per_row > 0.01
    np.testing.assert_array_equal(got.numpy(), reference.numpy())
    assert small.stats["crossings"] > 0


def test_a_stimulus_equal_to_the_baseline_gets_zero_attribution():
    model = ToyCNN(seed=1)
    stim = stimulus_for(model, n_times=3)
    stim["stimulus"].values[:] = 0.0
    ds = ExactIntegratedGradients(algorithm="sweep").attribute(model, stim)
    assert np.all(ds["attribution"].values == 0.0)
    kept = ExactIntegratedGradients(algorithm="sweep", keep_space=True).attribute(model, stim)
    assert np.all(kept["attribution"].values == 0.0)


def test_per_unit_where_switches_and_crossings_coincide():
    """Full-field flicker: all units of a channel switch at the same alpha, second-layer crossings with them.

    The per-unit terms count a crossing before a unit's switch exactly when the sweep's dR of that switch
    does (the event at which the sweep found it), so ties between the two cost nothing.
    """
    model = _conv_model(nn.Conv2d(3, 4, 3), final=nn.Softplus())
    stim = full_field_stimulus(model, n_times=8, seed=2)
    _assert_per_unit_agrees(model, stim)
    attributor = ExactIntegratedGradients(algorithm="sweep", keep_space=True)
    attributor.attribute(model, stim)
    stats = attributor._sweep.stats
    assert stats["crossings"] > 0
    assert stats["regions"] < stats["breakpoints"] / 2  # the switches come in coinciding groups


def test_per_unit_with_units_at_the_kinks_at_the_baseline():
    """First-layer units exactly at zero at the baseline (they never switch inside the path) and second-layer
    units exactly at zero there (on or off just after alpha = 0 depending on the time point)."""
    model = _conv_model(nn.Conv2d(3, 4, 3), final=nn.Softplus())
    conv0, bn1 = model.below[0], model.above[0]
    mix, bn2 = model.above[2], model.above[4]
    plane = bn2.num_features // 4
    with torch.no_grad():
        # layer channel 0: a = 0 exactly (zero baseline stimulus, no bias, BN centred on zero, no shift)
        conv0.bias[0] = 0.0
        bn1.running_mean[0] = 0.0
        bn1.bias[0] = 0.0
        # mixing output 0 reads channel 0 only: h2 = 0 exactly at the baseline for its units
        mix.weight[0, 1:] = 0.0
        mix.bias[0] = 0.0
        bn2.running_mean[:plane] = 0.0
        bn2.bias[:plane] = 0.0
    stim = stimulus_for(model, n_times=6, seed=7)
    _assert_per_unit_agrees(model, stim)
    sweep = Sweep(
        sweep_plan(piecewise_plan(model.above))[0], model.below(torch.zeros(1, 2, 12, 12)), torch.arange(3), 3
    )
    assert sweep.zero_units.size == plane and np.all(sweep.a[: sweep.n1 // 3] == 0.0)


def test_per_unit_white_noise_through_the_retina_architecture_sums_to_the_channels_and_the_response():
    """keep_space on dense white noise (thousands of switches and crossings): completeness per unit sums and
    the space sums equal the channel attributions (float64 sums of the float32 output)."""
    cnn = pytest.importorskip("mechlens_retina.models.cnn")
    model = cnn.RetinaCNN(
        checkpoint="random", history=6, image_size=20, kernel1=5, kernel2=5, channels1=4, channels2=4, n_cells=3
    )
    stim = stimulus_for(model, n_times=6, seed=3)
    kept = ExactIntegratedGradients(algorithm="sweep", keep_space=True).attribute(model, stim, layer="conv1")
    sums = ExactIntegratedGradients(algorithm="sweep").attribute(model, stim, layer="conv1")
    attr = kept["attribution"].values.astype(np.float64)  # (time, cell, channel, y, x)
    change = kept["response"].values.astype(np.float64) - kept["baseline_response"].values.astype(np.float64)
    span = float(np.ptp(kept["response"].values))
    np.testing.assert_allclose(attr.sum((2, 3, 4)), change, atol=1e-5 * span)
    scale = float(np.abs(sums["attribution"]).max())
    np.testing.assert_allclose(attr.sum((3, 4)), sums["attribution"].values, atol=1e-6 * scale)


@pytest.mark.parametrize(("beta", "threshold"), [(1.0, 20.0), (2.5, 3.0)])
def test_compiled_softplus_integral_matches_torch(beta, threshold):
    """The sweep's closed-form Softplus integrals = the generic torch path (torch's own module)."""
    from mechlens_attribution.structure import final_integral
    from mechlens_attribution.sweep import softplus_terms
    from mechlens_attribution.sweep_kernels import softplus_pieces

    rng = np.random.default_rng(0)
    steps = rng.choice([0.0, 1e-9, 1e-3, 2.0], size=(400, 3))  # flat, tiny and large moves
    p = np.cumsum(np.concatenate([rng.uniform(-6, 6, (1, 3)), 3 * steps]), 0)
    # two rows of 200 consecutive pieces (201 breakpoints each); the second row starts elsewhere
    second = p[200:].copy()
    second[0] = p[201] - 0.5
    breakpoints = np.concatenate([p[:201], second])
    ptr = np.array([0, 199, 398])  # events (inner breakpoints) per row: 199
    p_a = np.concatenate([breakpoints[:200], breakpoints[201:401]])
    p_b = np.concatenate([breakpoints[1:201], breakpoints[202:]])
    length = rng.uniform(1e-4, 0.1, 400)
    final = nn.Softplus(beta=beta, threshold=threshold).double()
    e, lg = softplus_terms(breakpoints, beta)
    got = softplus_pieces(ptr, breakpoints, e, lg, length, beta, threshold)
    want = final_integral(final, torch.from_numpy(p_a), torch.from_numpy(p_b), torch.from_numpy(length[:, None]))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-9, atol=1e-15)


def test_sweep_matches_refinement_for_more_cells_than_one_pass_sums():
    """The sweep sums each event's dR for eight cells per pass: 11 cells take two (the second padded)."""
    model = _conv_model(nn.Conv2d(3, 4, 3), final=nn.Softplus(), cells=11)
    stim = stimulus_for(model, n_times=5, seed=6)
    sweep, refine = _both(model, stim)
    assert sweep["attribution"].sizes["cell"] == 11
    _assert_agree(sweep, refine)
    _assert_per_unit_agrees(model, stim)  # per unit: eight cells per visit, two groups (the second padded)


def test_sweep_rows_in_groups_and_over_threads_give_the_same_result(monkeypatch: pytest.MonkeyPatch):
    """Rows go through in groups (3 here), spread over torch's threads when there are several."""
    from mechlens_attribution.sweep import Sweep

    model = _conv_model(nn.Conv2d(3, 4, 3), final=nn.Softplus())
    stim = stimulus_for(model, n_times=20, seed=4)
    rows = stim.sizes["time"] - model.history + 1
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        monkeypatch.setattr(Sweep, "rows_per_group", rows)
        whole = ExactIntegratedGradients(algorithm="sweep").attribute(model, stim)
        whole_kept = ExactIntegratedGradients(algorithm="sweep", keep_space=True).attribute(model, stim)
        monkeypatch.setattr(Sweep, "rows_per_group", -(-rows // 3))
        serial = ExactIntegratedGradients(algorithm="sweep").attribute(model, stim)
        torch.set_num_threads(3)
        parallel = ExactIntegratedGradients(algorithm="sweep").attribute(model, stim)
        parallel_kept = ExactIntegratedGradients(algorithm="sweep", keep_space=True).attribute(model, stim)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(serial["attribution"].values, whole["attribution"].values)
    np.testing.assert_array_equal(parallel["attribution"].values, serial["attribution"].values)
    np.testing.assert_array_equal(parallel_kept["attribution"].values, whole_kept["attribution"].values)


def test_switch_order_keeps_the_switches_inside_the_path_in_order():
    from mechlens_attribution.sweep import switch_order

    a = np.array([-0.5, 0.25, 0.0, 1.0, -2.0, 0.0])
    b = np.array([[1.0, -1.0, 1.0, -1.0, 1.0, 0.0], [2.0, 0.0, -1.0, -2.0, 16.0, 0.0]])
    switch, order, n_switch = switch_order(a, b)
    # row 0: units 0 and 1 switch inside (at 0.5, 0.25); not at 0 (a = 0), at 1 (a = -b) or at 2, nor
    # with b = 0; row 1: 0.25, 0.5 and 0.125
    assert n_switch.tolist() == [2, 3]
    assert order[0, :2].tolist() == [1, 0]
    assert order[1, :3].tolist() == [4, 0, 3]
    np.testing.assert_allclose(switch[1, order[1, :3]], [0.125, 0.25, 0.5])
    assert np.isinf(switch[0, [2, 3, 4, 5]]).all()


def test_crossing_order_sorts_each_row_within_its_own_range():
    """Crossings come out of the loop per row in the order found; each row is sorted in place."""
    from mechlens_attribution.sweep import crossing_order

    cr_alpha = np.array([0.7, 0.2, 0.9, 0.1, 0.5, 0.3])
    ptr2 = np.array([0, 3, 3, 6])  # rows of 3, 0 and 3 crossings
    order = crossing_order(ptr2, cr_alpha)
    assert order.tolist() == [1, 0, 2, 3, 5, 4]


def _four_products(a, b, out):  # pragma: no cover - compiled
    """Four independent products, loads before stores: what the superword vectoriser packs."""
    x0 = a[0] * b[0]
    x1 = a[1] * b[1]
    x2 = a[2] * b[2]
    x3 = a[3] * b[3]
    out[0] = x0
    out[1] = x1
    out[2] = x2
    out[3] = x3


def _vector_ops(dispatcher) -> int:
    """Vector (packed double) values in the optimised LLVM IR of the dispatcher's one compilation."""
    (sig,) = dispatcher.signatures
    return dispatcher.inspect_llvm(sig).count("x double>")


def test_superword_compiles_only_its_own_kernels_with_the_slp_vectoriser(monkeypatch):
    """The SLP vectoriser is on for a superword kernel's compilation and nowhere else; numba's flag is untouched."""
    import numba
    from mechlens_attribution.sweep_kernels import _kernel, _SuperwordCompiler
    from numba.core import config

    monkeypatch.setattr(config, "SLP_VECTORIZE", 0)  # numba's default (NUMBA_SLP_VECTORIZE may be set)
    x, out = np.arange(4.0), np.zeros(4)
    superword = _kernel(superword=True, cache=False)(_four_products)
    superword(x, x, out)
    # compiled after the superword kernel (and, below, with numba's own default), in the same process
    plain = numba.njit(_four_products)
    plain(x, x, out)
    np.testing.assert_array_equal(out, x * x)
    assert config.SLP_VECTORIZE == 0
    assert _vector_ops(superword) > 0
    assert _vector_ops(plain) == 0
    assert superword._compiler.pipeline_class is _SuperwordCompiler


def test_sweep_kernels_are_bound_once_and_leave_numba_config_alone():
    """The kernels are module-level dispatchers (no rebinding at run time); a run leaves numba's config as it was."""
    from mechlens_attribution import sweep_kernels
    from mechlens_attribution.sweep_kernels import SUPERWORD, _SuperwordCompiler
    from numba.core import config
    from numba.core.errors import TypingError

    names = (
        "sweep", "pieces", "accumulate", "softplus_pieces", "per_unit", "record_crossing", "column_runs",
        "breakpoint_integrals", "kernel_ranges",
    )  # fmt: skip
    bound = {name: getattr(sweep_kernels, name) for name in names}
    before = config.SLP_VECTORIZE
    model = _conv_model(nn.Conv2d(3, 4, 3), final=nn.Softplus())
    stim = stimulus_for(model, n_times=4, seed=2)
    for keep_space in (False, True):
        ExactIntegratedGradients(algorithm="sweep", keep_space=keep_space).attribute(model, stim)
    assert config.SLP_VECTORIZE == before
    assert {name: getattr(sweep_kernels, name) for name in names} == bound
    for name in names:
        pipeline = bound[name]._compiler.pipeline_class
        assert (pipeline is _SuperwordCompiler) == (name in SUPERWORD), name
    for name in SUPERWORD:
        assert bound[name].signatures, name  # compiled (or loaded from the cache) by the run above
    with pytest.raises(TypingError):
        sweep_kernels.accumulate(*(["not an array"] * 10))
    assert config.SLP_VECTORIZE == before
