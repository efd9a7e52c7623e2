"""Compiled loops of the path sweep (see :mod:`mechlens_attribution.sweep` for the mathematics).

Plain Python functions over NumPy arrays, made numba dispatchers when this module is imported
(:func:`_kernel`; the sweep imports it only when it runs), compiled on their first call and cached on
disk. They are written for numba: explicit loops, no Python objects. Arrays are float64 unless said
otherwise; ``n`` is the number of cells, ``C`` the channels of the attributed layer.

The middle affine map is a convolution given by its geometry (a Linear layer is a 1x1 convolution
of a 1x1 image with one input channel per unit), so a convolution's weights stay in cache instead of
a sparse matrix of 5 million (index, weight) pairs (84 MB for the retina CNN) being read per time point.

Why one file (1190 lines): the kernels share one compilation set-up (their own SLP-vectorised code
library) and one memory layout of the convolution geometry; numba's on-disk cache is keyed on this
file, and a change of layout has to be made in every kernel at once, which one file keeps in view.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba.core.compiler import CompilerBase, DefaultPassBuilder
from numba.core.compiler_machinery import LoweringPass, register_pass
from numba.core.typed_passes import AnnotateTypes


class _SuperwordCodegen:
    """numba's CPU code generator, but building its LLVM optimisation passes with the SLP vectoriser on.

    numba leaves LLVM's superword (SLP) vectoriser off unless ``numba.config.SLP_VECTORIZE`` is set,
    which is process-wide: raising it around a call would also change every other function numba
    compiles meanwhile, in any thread. A code library reads the flag only as the default of its pass
    managers (``_module_pass_manager``, ``_function_pass_manager``), so a library made with this
    proxy in place of the codegen optimises its own module with the vectoriser on, whatever the flag
    says, and nothing else changes: every other attribute (the JIT engine, the target machine, the
    linker) is the shared codegen's own. An explicit ``slp_vectorize`` (numba's cheap pre-pass turns
    it off) is kept. The two methods are numba's private API (as of numba 0.68): should a release rename
    them, the kernels compile as plain ones (same results, slower), and
    ``test_superword_compiles_only_its_own_kernels_with_the_slp_vectoriser`` fails.
    """

    def __init__(self, codegen: Any) -> None:
        self._codegen = codegen

    def __getattr__(self, name: str) -> Any:
        return getattr(self._codegen, name)

    def _module_pass_manager(self, **kwargs: Any) -> Any:
        kwargs.setdefault("slp_vectorize", True)
        return self._codegen._module_pass_manager(**kwargs)

    def _function_pass_manager(self, **kwargs: Any) -> Any:
        kwargs.setdefault("slp_vectorize", True)
        return self._codegen._function_pass_manager(**kwargs)


@register_pass(mutates_CFG=False, analysis_only=False)
class _SuperwordLibrary(LoweringPass):
    """Give the compilation a code library of its own that is optimised with the SLP vectoriser on.

    Runs just before numba's lowering, which makes a plain library only where none is set yet.
    """

    _name = "mechlens_superword_library"

    def __init__(self) -> None:
        LoweringPass.__init__(self)

    def run_pass(self, state: Any) -> bool:
        codegen = state.targetctx.codegen()
        library = type(codegen)._library_class(_SuperwordCodegen(codegen), state.func_id.func_qualname)
        library.enable_object_caching()  # as numba's lowering does: cache=True serialises the object code
        state.library = library
        return True


class _SuperwordCompiler(CompilerBase):
    """numba's nopython pipeline with :class:`_SuperwordLibrary` before the lowering (``pipeline_class``)."""

    def define_pipelines(self) -> list[Any]:
        pm = DefaultPassBuilder.define_nopython_pipeline(self.state)
        pm.add_pass_after(_SuperwordLibrary, AnnotateTypes)
        pm.finalize()
        return [pm]


def _kernel(*, superword: bool = False, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``numba.njit`` as every kernel here is compiled: cached on disk, releasing the GIL.

    The dispatchers are made when this module is imported (the sweep imports it only when it runs), and
    compile on their first call per argument types; kernels that call other kernels find them bound
    to their names here.

    Parameters
    ----------
    superword : bool
        Compile with LLVM's superword (SLP) vectoriser on, for this kernel only (see
        :class:`_SuperwordCodegen`); everything else numba compiles keeps its own setting.
    **options
        Further ``numba.njit`` options (or others than the defaults).
    """
    options = {"cache": True, "nogil": True, **options}
    if superword:
        options["pipeline_class"] = _SuperwordCompiler
    return numba.njit(**options)


#: the superword kernels: the sweep's block loops are written out eight state columns at a time
#: (:func:`bend_block`, :func:`dr_block`), and :func:`pieces` and :func:`accumulate` hold eight cells in
#: scalars along a row; the vectoriser makes vector instructions of them, without the loop vectoriser's
#: per-loop alias checks and remainder dispatch. Timed in turn in one process on saved white-noise inputs
#: of the retina CNN: the sweep's loop 0.84x the time of its loop-vectorised version, pieces 0.72x,
#: accumulate 0.66x. :func:`per_unit` adds eight cells per visit of a crossing's receptive field.
SUPERWORD = ("sweep", "pieces", "accumulate", "per_unit")


@_kernel()
def record_crossing(
    found, cap_cr, alpha, j, on, cst, jj, det, cr_alpha, cr_unit, cr_sign, cr_sc, cr_det
):  # pragma: no cover
    """Write crossing number ``found`` (second-layer unit ``j``, which was ``on``) if it fits.

    Its slope per channel of origin is column ``jj`` of ``cst``; ``det`` is the number (in the row's
    order) of the first-layer event at which the sweep found it (the row's event count: after the last).
    """
    if found < cap_cr:
        cr_alpha[found] = alpha
        cr_unit[found] = j
        cr_sign[found] = 1.0 - 2.0 * on
        cr_det[found] = det
        for cc in range(cr_sc.shape[1]):
            cr_sc[found, cc] = cst[cc, jj]


@_kernel()
def column_runs(geom, kw):  # pragma: no cover
    """For each input column ``x``, the runs of consecutive output columns it feeds.

    Returns ``count`` (W,) and, per run ``(x, i)``, its first output column ``ox0``, its length, the
    flipped kernel column ``t0 = kw - 1 - kx`` of its first tap and the step of ``t`` per output column.
    """
    ww, wo, sx, px, dx_ = geom[2], geom[5], geom[7], geom[9], geom[11]
    count = np.zeros(ww, np.int64)
    ox0 = np.empty((ww, kw), np.int64)
    length = np.empty((ww, kw), np.int64)
    t0 = np.empty((ww, kw), np.int64)
    tstep = sx // dx_ if sx % dx_ == 0 else 0
    for x in range(ww):
        last = -2
        for kx in range(kw - 1, -1, -1):  # output columns increase as kx decreases
            o = x + px - kx * dx_
            if o < 0 or o % sx != 0 or o // sx >= wo:
                continue
            o //= sx
            i = count[x]
            if o == last + 1 and i > 0:
                length[x, i - 1] += 1
            else:
                ox0[x, i] = o
                length[x, i] = 1
                t0[x, i] = kw - 1 - kx
                count[x] += 1
            last = o
    return count, ox0, length, t0, tstep


# inlined into the sweep by numba (a call per block, with its arrays' reference counting, cost ~5 %)
@_kernel(inline="always")
def bend_block(st, cst, kfl, kb, b0, nbu, cs, dd, al):  # pragma: no cover
    """Bend the pieces of state columns ``b0 : b0 + nbu`` at ``al`` (see :func:`sweep`).

    Column ``j`` changes slope by ``dl = kfl[kb + j - b0] * dd * dout_j`` (the state's row 3); its
    intercept by ``-dl * al``, so that the new piece meets the old one at ``al``; its slope from channel
    ``cs`` by ``dl``. Eight columns at a time, written out (loads, then stores) so that the superword
    vectoriser makes vector instructions of them; indices unsigned (no wraparound checks).
    """
    one, two, three, four, five, six, seven, eight = (
        np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4), np.uint64(5), np.uint64(6), np.uint64(7), np.uint64(8),
    )  # fmt: skip
    nb8 = nbu - nbu % eight
    q = np.uint64(0)
    while q < nb8:
        j = b0 + q
        k = kb + q
        d0 = kfl[k] * dd * st[3, j]
        d1 = kfl[k + one] * dd * st[3, j + one]
        d2 = kfl[k + two] * dd * st[3, j + two]
        d3 = kfl[k + three] * dd * st[3, j + three]
        d4 = kfl[k + four] * dd * st[3, j + four]
        d5 = kfl[k + five] * dd * st[3, j + five]
        d6 = kfl[k + six] * dd * st[3, j + six]
        d7 = kfl[k + seven] * dd * st[3, j + seven]
        q0 = st[0, j] - d0 * al
        q1 = st[0, j + one] - d1 * al
        q2 = st[0, j + two] - d2 * al
        q3 = st[0, j + three] - d3 * al
        q4 = st[0, j + four] - d4 * al
        q5 = st[0, j + five] - d5 * al
        q6 = st[0, j + six] - d6 * al
        q7 = st[0, j + seven] - d7 * al
        s0 = st[1, j] + d0
        s1 = st[1, j + one] + d1
        s2 = st[1, j + two] + d2
        s3 = st[1, j + three] + d3
        s4 = st[1, j + four] + d4
        s5 = st[1, j + five] + d5
        s6 = st[1, j + six] + d6
        s7 = st[1, j + seven] + d7
        c0 = cst[cs, j] + d0
        c1 = cst[cs, j + one] + d1
        c2 = cst[cs, j + two] + d2
        c3 = cst[cs, j + three] + d3
        c4 = cst[cs, j + four] + d4
        c5 = cst[cs, j + five] + d5
        c6 = cst[cs, j + six] + d6
        c7 = cst[cs, j + seven] + d7
        st[0, j] = q0
        st[0, j + one] = q1
        st[0, j + two] = q2
        st[0, j + three] = q3
        st[0, j + four] = q4
        st[0, j + five] = q5
        st[0, j + six] = q6
        st[0, j + seven] = q7
        st[1, j] = s0
        st[1, j + one] = s1
        st[1, j + two] = s2
        st[1, j + three] = s3
        st[1, j + four] = s4
        st[1, j + five] = s5
        st[1, j + six] = s6
        st[1, j + seven] = s7
        cst[cs, j] = c0
        cst[cs, j + one] = c1
        cst[cs, j + two] = c2
        cst[cs, j + three] = c3
        cst[cs, j + four] = c4
        cst[cs, j + five] = c5
        cst[cs, j + six] = c6
        cst[cs, j + seven] = c7
        q += eight
    for j in range(b0 + nb8, b0 + nbu):
        dl = kfl[kb + j - b0] * dd * st[3, j]
        st[0, j] -= dl * al
        st[1, j] += dl
        cst[cs, j] += dl


@_kernel(inline="always")
def dr_block(z, kfl, kb, b0, nbu, g):  # pragma: no cover
    """``sum_q kfl[kb + q] * z[b0 + q, g : g + 8]`` over a block of ``nbu`` state columns (see :func:`sweep`).

    Eight cells, contiguous in ``z``: the superword vectoriser makes each column's eight products one
    vector operation. Four partial sums (columns in turn) keep four independent chains of additions in
    flight. Returns the eight sums.
    """
    one, two, three, four = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    five, six, seven = np.uint64(5), np.uint64(6), np.uint64(7)
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    b0_ = b1 = b2 = b3 = b4 = b5 = b6 = b7 = 0.0
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = 0.0
    d0 = d1 = d2 = d3 = d4 = d5 = d6 = d7 = 0.0
    q = np.uint64(0)
    while q + three < nbu:
        kq = kfl[kb + q]
        j = b0 + q
        a0 += kq * z[j, g]
        a1 += kq * z[j, g + one]
        a2 += kq * z[j, g + two]
        a3 += kq * z[j, g + three]
        a4 += kq * z[j, g + four]
        a5 += kq * z[j, g + five]
        a6 += kq * z[j, g + six]
        a7 += kq * z[j, g + seven]
        kq = kfl[kb + q + one]
        j = b0 + q + one
        b0_ += kq * z[j, g]
        b1 += kq * z[j, g + one]
        b2 += kq * z[j, g + two]
        b3 += kq * z[j, g + three]
        b4 += kq * z[j, g + four]
        b5 += kq * z[j, g + five]
        b6 += kq * z[j, g + six]
        b7 += kq * z[j, g + seven]
        kq = kfl[kb + q + two]
        j = b0 + q + two
        c0 += kq * z[j, g]
        c1 += kq * z[j, g + one]
        c2 += kq * z[j, g + two]
        c3 += kq * z[j, g + three]
        c4 += kq * z[j, g + four]
        c5 += kq * z[j, g + five]
        c6 += kq * z[j, g + six]
        c7 += kq * z[j, g + seven]
        kq = kfl[kb + q + three]
        j = b0 + q + three
        d0 += kq * z[j, g]
        d1 += kq * z[j, g + one]
        d2 += kq * z[j, g + two]
        d3 += kq * z[j, g + three]
        d4 += kq * z[j, g + four]
        d5 += kq * z[j, g + five]
        d6 += kq * z[j, g + six]
        d7 += kq * z[j, g + seven]
        q += four
    while q < nbu:
        kq = kfl[kb + q]
        j = b0 + q
        a0 += kq * z[j, g]
        a1 += kq * z[j, g + one]
        a2 += kq * z[j, g + two]
        a3 += kq * z[j, g + three]
        a4 += kq * z[j, g + four]
        a5 += kq * z[j, g + five]
        a6 += kq * z[j, g + six]
        a7 += kq * z[j, g + seven]
        q += one
    return (
        a0 + b0_ + c0 + d0,
        a1 + b1 + c1 + d1,
        a2 + b2 + c2 + d2,
        a3 + b3 + c3 + d3,
        a4 + b4 + c4 + d4,
        a5 + b5 + c5 + d5,
        a6 + b6 + c6 + d6,
        a7 + b7 + c7 + d7,
    )


# the vector loops are sums over a block (each cell's dR): reassociating them lets the compiler use
# vector instructions; rounding changes at the 1e-16 level
@_kernel(superword=True, fastmath={"reassoc", "contract", "nsz"})
def sweep(a, b, switch, order, n_switch, chan, din, dout, wt, geom, h0, s0, w3, cap_cr):  # pragma: no cover
    """Sweep every row's path once; return its breakpoints in order with what changes at each.

    Parameters
    ----------
    a : (N1,)
        First-layer inputs (before the first ReLU) at the baseline.
    b : (rows, N1)
        Their change from the baseline to each row's end point.
    switch : (rows, N1)
        Where each first-layer unit switches, ``-a / b`` (any value outside (0, 1) for units that
        do not switch inside the path).
    order : (rows, N1) int64
        Each row's units by ``switch``: the first ``n_switch[r]`` switch inside (0, 1), in order.
        (NumPy's sort, several times faster than a compiled one, makes it:
        :func:`mechlens_attribution.sweep.switch_order`.)
    n_switch : (rows,) int64
    chan : (N1,) int64
        Channel of the attributed layer owning each unit.
    din : (N1,), dout : (N2,)
        Elementwise scales before and after the mixing map.
    wt : (Cm, O, kh, kw)
        The mixing map's kernel, input-channel first.
    geom : (12,) int64
        Cm, H, W (its input), O, Ho, Wo (its output), stride y, stride x, padding y, padding x,
        dilation y, dilation x.
    h0 : (N2,)
        Second-layer inputs (before the second ReLU) at the baseline.
    s0 : (rows, C, N2)
        Their slope along the path just after alpha = 0, per channel of origin.
    w3 : (N2, n)
        The last linear map (to the inputs of the final nonlinearity), selected cells.
    cap_cr : int
        Capacity of the table of second-layer crossings.

    Returns
    -------
    ptr1 : (rows + 1,) int64
        Row ``r``'s first-layer events are ``ptr1[r]:ptr1[r+1]`` of the three arrays below, by alpha.
    ev_alpha : (E1,)
    ev_unit : (E1,) int64
        The first-layer unit that switched.
    ev_dr : (E1, n rounded up to a multiple of 8)
        Change of each cell's ``dR[:, channel of the unit]`` (also its change of dp/dalpha); the
        columns past ``n`` are zero.
    ptr2 : (rows + 1,) int64
        Row ``r``'s crossings are ``ptr2[r]:ptr2[r+1]`` of the four arrays below, in no order
        (:func:`mechlens_attribution.sweep.crossing_order` sorts them).
    cr_alpha : (X,)
    cr_unit : (X,) int64
        The second-layer unit that crossed zero.
    cr_sign : (X,)
        +1 where the crossing unit turned on, -1 where it turned off.
    cr_sc : (X, C)
        Slope of ``h2_j`` per channel of origin at the crossing.
    cr_det : (X,) int64
        The row's first-layer event (its number in the row's order) at which the crossing was found,
        before that event's ``dR`` was summed (``n_switch[r]``: after the last event). The per-unit
        attributions (:func:`crossing_terms`) count a crossing before an event exactly when this does.
    found : int
        Crossings found; if more than ``cap_cr`` the tables are incomplete: call again with more.

    Notes
    -----
    The state of the second-layer units is kept position-major (column ``jj = position * O + o``)
    and visited one output row at a time: an event feeds a row through contiguous blocks (a run of
    output columns times all O outputs, 88 values for the retina CNN), which the compiler turns into
    vector instructions, and one row's state stays in the L1 cache while that row's events are
    applied. Rows of the output are independent (a unit only changes at the events of its own
    receptive field), so applying the events row by row, each row's in order, is the same sweep.
    The block loops index the state with unsigned integers rather than through array views: no
    wraparound checks, so they vectorise, and no views, whose reference counting costs a call and an
    atomic operation each (a few per block made up a quarter of the sweep's time). The bend and the
    dR sums are written out eight columns or cells at a time (:func:`bend_block`, :func:`dr_block`)
    for the superword vectoriser (see :data:`SUPERWORD`); the kernel is read in place. An event's dR
    is the kernel row against ``dout * on * w3`` of the block, which changes only where a unit crosses
    zero, for eight cells (contiguous in ``z``) per vector operation.
    """
    rows, n1 = b.shape
    n2, n = w3.shape
    n_ch = s0.shape[1]
    c_in, hh, ww, oo, ho, wo = geom[0], geom[1], geom[2], geom[3], geom[4], geom[5]
    sy, py, dy_ = geom[6], geom[8], geom[10]
    kh, kw = wt.shape[2], wt.shape[3]
    plane = ho * wo
    # the kernel flipped along x, output-minor: a run of output columns reads one contiguous slice; entry
    # (ci, ky, t, o) at (ci * kh + ky) * krow + t * oo + o, then room for one block's weights gathered
    # where a run's are not contiguous (strides), so that the block loops read one array
    krow = kw * oo
    ktail = c_in * kh * krow
    if kh == 1 and kw == 1:
        kfl = wt.reshape(-1)  # already so (a Linear layer's weights: no copy; its runs are contiguous)
    else:
        kfl = np.empty(ktail + krow, np.float64)
        for ci in range(c_in):
            for o in range(oo):
                for ky in range(kh):
                    for t in range(kw):
                        kfl[(ci * kh + ky) * krow + t * oo + o] = wt[ci, o, ky, kw - 1 - t]
    n_runs, run_ox0, run_len, run_t0, tstep = column_runs(geom, kw)
    # the output rows each input row feeds, and through which kernel row; each unit's channel, row
    # and column (integer division is slow enough to matter in the per-event loops)
    n_feeds = np.zeros(hh, np.int64)
    feeds_oy = np.empty((hh, kh), np.int64)
    feeds_ky = np.empty((hh, kh), np.int64)
    for y in range(hh):
        for ky in range(kh):
            oy = y + py - ky * dy_
            if oy >= 0 and oy % sy == 0 and oy // sy < ho:
                feeds_oy[y, n_feeds[y]] = oy // sy
                feeds_ky[y, n_feeds[y]] = ky
                n_feeds[y] += 1
    unit_ci = np.empty(n1, np.int64)
    unit_y = np.empty(n1, np.int64)
    unit_x = np.empty(n1, np.int64)
    for u in range(n1):
        unit_ci[u] = u // (hh * ww)
        unit_y[u] = (u // ww) % hh
        unit_x[u] = u % ww
    # state rows: 0 intercept q and 1 slope s of the current piece h2 = q + s alpha, 2 on (1.0 / 0.0),
    # 3 elementwise output scale; cst: the slope from each channel; z: what a unit's bend adds to dR
    # per unit of its kernel weight, dout * on * w3 (changes only where the unit crosses zero), cells
    # contiguous
    st = np.empty((4, n2), np.float64)
    cst = np.empty((n_ch, n2), np.float64)
    m8 = (n + 7) // 8 * 8  # cells padded to whole groups of 8 (the dR loop's accumulators)
    z = np.zeros((n2, m8), np.float64)
    w3p = np.empty((n, n2), np.float64)
    orig = np.empty(n2, np.int64)
    for o in range(oo):
        for pos in range(plane):
            jj = pos * oo + o
            orig[jj] = o * plane + pos
            st[3, jj] = dout[o * plane + pos]
            for i in range(n):
                w3p[i, jj] = w3[o * plane + pos, i]
    ptr1 = np.zeros(rows + 1, np.int64)
    for r in range(rows):
        ptr1[r + 1] = ptr1[r] + n_switch[r]
    ev_alpha = np.empty(ptr1[rows], np.float64)
    ev_unit = np.empty(ptr1[rows], np.int64)
    ev_dr = np.zeros((ptr1[rows], m8), np.float64)
    ptr2 = np.zeros(rows + 1, np.int64)
    cr_sc = np.empty((cap_cr, n_ch), np.float64)
    cr_unit = np.empty(cap_cr, np.int64)
    cr_sign = np.empty(cap_cr, np.float64)
    cr_alpha = np.empty(cap_cr, np.float64)
    cr_det = np.empty(cap_cr, np.int64)
    ev_d = np.empty(n1, np.float64)
    # each event's unit's channel, input channel of the mixing map, row and column, in event order: the
    # per-row loops read them in turn instead of looking them up by unit (scattered loads)
    ev_cs = np.empty(n1, np.int64)
    ev_ci = np.empty(n1, np.int64)
    ev_y = np.empty(n1, np.int64)
    ev_x = np.empty(n1, np.int64)
    row_count = np.empty(ho + 1, np.int64)
    row_ev = np.empty(n1 * kh, np.int64)  # per output row, the events feeding it (in order) ...
    row_ky = np.empty(n1 * kh, np.int64)  # ... and the kernel row joining them
    found = 0
    for r in range(rows):
        m = n_switch[r]
        e1 = ptr1[r]  # this row's events are numbers e1 ... e1 + m - 1 of the outputs
        ev_u = ev_unit[e1 : e1 + m]
        ev_al = ev_alpha[e1 : e1 + m]
        row_count[:] = 0
        for k in range(m):
            u = order[r, k]
            ev_u[k] = u
            ev_al[k] = switch[r, u]
            # on at the baseline (a > 0) and switching: its contribution b_u leaves; else it arrives
            ev_d[k] = (-b[r, u] if a[u] > 0.0 else b[r, u]) * din[u]
            ev_cs[k] = chan[u]
            ev_ci[k] = unit_ci[u]
            ev_x[k] = unit_x[u]
            y = ev_y[k] = unit_y[u]
            for i_f in range(n_feeds[y]):
                row_count[feeds_oy[y, i_f] + 1] += 1
        for oy in range(ho):
            row_count[oy + 1] += row_count[oy]
        fill = row_count[:ho].copy()
        for k in range(m):
            y = ev_y[k]
            for i_f in range(n_feeds[y]):
                oy = feeds_oy[y, i_f]
                row_ev[fill[oy]] = k
                row_ky[fill[oy]] = feeds_ky[y, i_f]
                fill[oy] += 1
        for jj in range(n2):
            j = orig[jj]
            tot = 0.0
            for c in range(n_ch):
                cst[c, jj] = s0[r, c, j]
                tot += s0[r, c, j]
            st[0, jj] = h0[j]
            st[1, jj] = tot
            st[2, jj] = 1.0 if (h0[j] > 0.0 or (h0[j] == 0.0 and tot > 0.0)) else 0.0
            for i in range(n):
                z[jj, i] = st[2, jj] * st[3, jj] * w3p[i, jj]
        for oy in range(ho):
            for e in range(row_count[oy], row_count[oy + 1]):
                k = row_ev[e]
                ky = row_ky[e]
                al = ev_al[k]
                dd = ev_d[k]
                cs = ev_cs[k]
                ci = ev_ci[k]
                x = ev_x[k]
                for i_run in range(n_runs[x]):
                    j0 = (oy * wo + run_ox0[x, i_run]) * oo
                    nb = run_len[x, i_run] * oo
                    k0 = run_t0[x, i_run] * oo
                    # the block: state columns b0 : b0 + nbu, indexed with unsigned integers (no
                    # wraparound checks, so the loops vectorise; no array views, whose reference counting
                    # costs a call and an atomic operation each); its kernel weights from kfl[kb]
                    b0 = np.uint64(j0)
                    nbu = np.uint64(nb)
                    kst = (ci * kh + ky) * krow + k0
                    if tstep == 1 or nb == oo:
                        kb = np.uint64(kst)
                    else:
                        kb = np.uint64(ktail)
                        for tt in range(run_len[x, i_run]):
                            for o in range(oo):
                                kfl[ktail + tt * oo + o] = kfl[kst + tt * tstep * oo + o]
                    # crossings since the units' last bend: rare, so counted first (a vector loop)
                    cnt = 0
                    at = np.uint64(0)
                    for q in range(nbu):
                        jq = b0 + q
                        crossed = (st[0, jq] + st[1, jq] * al > 0.0) != (st[2, jq] > 0.5)
                        cnt += crossed
                        at += q if crossed else np.uint64(0)
                    if cnt > 0:
                        # one unit crossed (the usual case): it is the one at ``at``; else look through the block
                        lo = b0 + at if cnt == 1 else b0
                        for q in range(lo, lo + np.uint64(1) if cnt == 1 else b0 + nbu):
                            hq = st[0, q]
                            hs = st[1, q]
                            hn = hq + hs * al
                            if (hn > 0.0) != (st[2, q] > 0.5) and hn != 0.0:
                                # at the root of the piece that just ended
                                record_crossing(
                                    found, cap_cr, min(-hq / hs, al), orig[q], st[2, q], cst, q, k,
                                    cr_alpha, cr_unit, cr_sign, cr_sc, cr_det,
                                )  # fmt: skip
                                found += 1
                                st[2, q] = 1.0 - st[2, q]
                                for i in range(n):
                                    z[q, i] = st[2, q] * st[3, q] * w3p[i, q]
                    bend_block(st, cst, kfl, kb, b0, nbu, np.uint64(cs), dd, al)
                    # dR of each cell: the kernel row against the block's dout * on * w3, eight cells per pass
                    # (z is zero-padded to whole groups)
                    erow = np.uint64(e1 + k)
                    for g in range(0, m8, 8):
                        gu = np.uint64(g)
                        r0, r1, r2, r3, r4, r5, r6, r7 = dr_block(z, kfl, kb, b0, nbu, gu)
                        ev_dr[erow, gu] += dd * r0
                        ev_dr[erow, gu + np.uint64(1)] += dd * r1
                        ev_dr[erow, gu + np.uint64(2)] += dd * r2
                        ev_dr[erow, gu + np.uint64(3)] += dd * r3
                        ev_dr[erow, gu + np.uint64(4)] += dd * r4
                        ev_dr[erow, gu + np.uint64(5)] += dd * r5
                        ev_dr[erow, gu + np.uint64(6)] += dd * r6
                        ev_dr[erow, gu + np.uint64(7)] += dd * r7
        # the last linear piece, up to alpha = 1
        for jj in range(n2):
            hn = st[0, jj] + st[1, jj]
            if (hn > 0.0) != (st[2, jj] > 0.5) and hn != 0.0:
                record_crossing(
                    found, cap_cr, min(-st[0, jj] / st[1, jj], 1.0), orig[jj], st[2, jj], cst, jj, m,
                    cr_alpha, cr_unit, cr_sign, cr_sc, cr_det,
                )  # fmt: skip
                found += 1
        ptr2[r + 1] = found
        if found > cap_cr:
            break
    k = min(found, cap_cr)
    return ptr1, ev_alpha, ev_unit, ev_dr, ptr2, cr_alpha[:k], cr_unit[:k], cr_sign[:k], cr_sc[:k], cr_det[:k], found


@_kernel(superword=True)
def pieces(
    ptr1, ev_alpha, ev_unit, ev_dr, ptr2, cr_alpha, cr_order, cr_unit, cr_sign, cr_sc, chan, w3, slope0, p0
):  # pragma: no cover
    """Merge each row's first-layer events and crossings by alpha; ``p`` at every breakpoint.

    Parameters
    ----------
    ptr1, ev_alpha, ev_unit, ev_dr, ptr2, cr_alpha, cr_unit, cr_sign, cr_sc
        From :func:`sweep`.
    cr_order : (X,) int64
        The crossings sorted by alpha within each row (each row's numbers stay in its range).
    chan : (N1,) int64
        Channel of each first-layer unit.
    w3 : (N2, m8)
        As for :func:`sweep`, cells zero-padded to a multiple of 8 (``m8``).
    slope0 : (rows, m8)
        dp/dalpha just after alpha = 0 (zero-padded).
    p0 : (m8,)
        p at the baseline (zero-padded).

    Returns
    -------
    ptr : (rows + 1,) int64
        Row ``r``'s breakpoints (events) are ``ptr[r]:ptr[r+1]`` of ``kind``, ``unit``, ``ref``; its
        linear pieces ``ptr[r] + r : ptr[r+1] + r + 1`` of ``length`` (the piece before each event,
        then the last); its values of ``p`` ``ptr[r] + 2r : ptr[r+1] + 2r + 2`` of ``p`` (alpha = 0,
        each event, alpha = 1).
    p : (E + 2 rows, m8)
    length : (E + rows,)
    kind : (E,) int64
        >= 0: a first-layer unit of that channel switched; < 0: crossing number ``-kind - 1``.
    unit : (E,) int64
        The first-layer unit that switched, or the second-layer unit that crossed zero.
    ref : (E,) int64
        The event's number in :func:`sweep`'s first-layer tables, or its crossing number.

    Ties go first-layer events first, as in the sweep. Eight cells at a time, their ``p`` and slope
    held in registers along the row (written out for the superword vectoriser).
    """
    one, two, three, four = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    five, six, seven = np.uint64(5), np.uint64(6), np.uint64(7)
    rows = ptr1.shape[0] - 1
    m8 = p0.shape[0]
    n_ch = cr_sc.shape[1]
    ptr = ptr1 + ptr2
    total = ptr[rows]
    p_out = np.empty((total + 2 * rows, m8), np.float64)
    length = np.empty(total + rows, np.float64)
    kind = np.empty(total, np.int64)
    unit = np.empty(total, np.int64)
    ref = np.empty(total, np.int64)
    for r in range(rows):
        ru = np.uint64(r)
        for g_ in range(0, m8, 8):
            g = np.uint64(g_)
            v0 = p0[g]
            v1 = p0[g + one]
            v2 = p0[g + two]
            v3 = p0[g + three]
            v4 = p0[g + four]
            v5 = p0[g + five]
            v6 = p0[g + six]
            v7 = p0[g + seven]
            s0 = slope0[ru, g]
            s1 = slope0[ru, g + one]
            s2 = slope0[ru, g + two]
            s3 = slope0[ru, g + three]
            s4 = slope0[ru, g + four]
            s5 = slope0[ru, g + five]
            s6 = slope0[ru, g + six]
            s7 = slope0[ru, g + seven]
            e = ptr[r]
            q = np.uint64(e + 2 * r)
            p_out[q, g] = v0
            p_out[q, g + one] = v1
            p_out[q, g + two] = v2
            p_out[q, g + three] = v3
            p_out[q, g + four] = v4
            p_out[q, g + five] = v5
            p_out[q, g + six] = v6
            p_out[q, g + seven] = v7
            i1, end1 = ptr1[r], ptr1[r + 1]
            i2, end2 = ptr2[r], ptr2[r + 1]
            prev = 0.0
            while i1 < end1 or i2 < end2:
                if i2 >= end2 or (i1 < end1 and ev_alpha[i1] <= cr_alpha[cr_order[i2]]):
                    al = ev_alpha[i1]
                    dx = al - prev
                    k = np.uint64(i1)
                    v0 += s0 * dx
                    v1 += s1 * dx
                    v2 += s2 * dx
                    v3 += s3 * dx
                    v4 += s4 * dx
                    v5 += s5 * dx
                    v6 += s6 * dx
                    v7 += s7 * dx
                    s0 += ev_dr[k, g]
                    s1 += ev_dr[k, g + one]
                    s2 += ev_dr[k, g + two]
                    s3 += ev_dr[k, g + three]
                    s4 += ev_dr[k, g + four]
                    s5 += ev_dr[k, g + five]
                    s6 += ev_dr[k, g + six]
                    s7 += ev_dr[k, g + seven]
                    kind[e] = chan[ev_unit[i1]]
                    unit[e] = ev_unit[i1]
                    ref[e] = i1
                    i1 += 1
                else:
                    x = cr_order[i2]
                    al = cr_alpha[x]
                    j = np.uint64(cr_unit[x])
                    tot = 0.0
                    for c in range(n_ch):
                        tot += cr_sc[x, c]
                    f = cr_sign[x] * tot
                    dx = al - prev
                    v0 += s0 * dx
                    v1 += s1 * dx
                    v2 += s2 * dx
                    v3 += s3 * dx
                    v4 += s4 * dx
                    v5 += s5 * dx
                    v6 += s6 * dx
                    v7 += s7 * dx
                    s0 += f * w3[j, g]
                    s1 += f * w3[j, g + one]
                    s2 += f * w3[j, g + two]
                    s3 += f * w3[j, g + three]
                    s4 += f * w3[j, g + four]
                    s5 += f * w3[j, g + five]
                    s6 += f * w3[j, g + six]
                    s7 += f * w3[j, g + seven]
                    kind[e] = -x - 1
                    unit[e] = cr_unit[x]
                    ref[e] = x
                    i2 += 1
                length[e + r] = dx
                prev = al
                e += 1
                q = np.uint64(e + 2 * r)
                p_out[q, g] = v0
                p_out[q, g + one] = v1
                p_out[q, g + two] = v2
                p_out[q, g + three] = v3
                p_out[q, g + four] = v4
                p_out[q, g + five] = v5
                p_out[q, g + six] = v6
                p_out[q, g + seven] = v7
            dx = 1.0 - prev
            length[e + r] = dx
            q = np.uint64(e + 2 * r + 1)
            p_out[q, g] = v0 + s0 * dx
            p_out[q, g + one] = v1 + s1 * dx
            p_out[q, g + two] = v2 + s2 * dx
            p_out[q, g + three] = v3 + s3 * dx
            p_out[q, g + four] = v4 + s4 * dx
            p_out[q, g + five] = v5 + s5 * dx
            p_out[q, g + six] = v6 + s6 * dx
            p_out[q, g + seven] = v7 + s7 * dx
    return ptr, p_out, length, kind, unit, ref


@_kernel(superword=True)
def accumulate(ptr, kind, ref, ev_dr, cr_sign, cr_sc, unit, w3, w, r0):  # pragma: no cover
    """Channel attributions ``A = R(0) G(1) + sum_events dR (G(1) - G(alpha_event))``.

    Each row is walked from alpha = 1 back to 0, so ``G(1) - G(alpha_event)`` is a running sum, held
    in registers for eight cells at a time (written out for the superword vectoriser).

    Parameters
    ----------
    ptr, kind, ref, unit
        From :func:`pieces`.
    ev_dr, cr_sign, cr_sc
        From :func:`sweep`.
    w3 : (N2, m8)
        As for :func:`pieces`.
    w : (E + rows, m8)
        Integral of g'(p) over each piece (laid out as :func:`pieces`' ``length``).
    r0 : (rows, C, m8)
        R just after alpha = 0.

    Returns
    -------
    (rows, C, m8)
    """
    one, two, three, four = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    five, six, seven = np.uint64(5), np.uint64(6), np.uint64(7)
    rows = ptr.shape[0] - 1
    n_ch, m8 = r0.shape[1], r0.shape[2]
    out = np.zeros((rows, n_ch, m8), np.float64)
    for r in range(rows):
        ru = np.uint64(r)
        for g_ in range(0, m8, 8):
            g = np.uint64(g_)
            t0 = 0.0
            t1 = 0.0
            t2 = 0.0
            t3 = 0.0
            t4 = 0.0
            t5 = 0.0
            t6 = 0.0
            t7 = 0.0
            for e in range(ptr[r + 1] - 1, ptr[r] - 1, -1):
                q = np.uint64(e + r + 1)
                t0 += w[q, g]
                t1 += w[q, g + one]
                t2 += w[q, g + two]
                t3 += w[q, g + three]
                t4 += w[q, g + four]
                t5 += w[q, g + five]
                t6 += w[q, g + six]
                t7 += w[q, g + seven]
                kd = kind[e]
                if kd >= 0:
                    k = np.uint64(ref[e])
                    c = np.uint64(kd)
                    out[ru, c, g] += ev_dr[k, g] * t0
                    out[ru, c, g + one] += ev_dr[k, g + one] * t1
                    out[ru, c, g + two] += ev_dr[k, g + two] * t2
                    out[ru, c, g + three] += ev_dr[k, g + three] * t3
                    out[ru, c, g + four] += ev_dr[k, g + four] * t4
                    out[ru, c, g + five] += ev_dr[k, g + five] * t5
                    out[ru, c, g + six] += ev_dr[k, g + six] * t6
                    out[ru, c, g + seven] += ev_dr[k, g + seven] * t7
                else:
                    x = ref[e]
                    j = np.uint64(unit[e])
                    sg = cr_sign[x]
                    f0 = sg * w3[j, g] * t0
                    f1 = sg * w3[j, g + one] * t1
                    f2 = sg * w3[j, g + two] * t2
                    f3 = sg * w3[j, g + three] * t3
                    f4 = sg * w3[j, g + four] * t4
                    f5 = sg * w3[j, g + five] * t5
                    f6 = sg * w3[j, g + six] * t6
                    f7 = sg * w3[j, g + seven] * t7
                    for c_ in range(n_ch):
                        c = np.uint64(c_)
                        sc = cr_sc[x, c_]
                        out[ru, c, g] += f0 * sc
                        out[ru, c, g + one] += f1 * sc
                        out[ru, c, g + two] += f2 * sc
                        out[ru, c, g + three] += f3 * sc
                        out[ru, c, g + four] += f4 * sc
                        out[ru, c, g + five] += f5 * sc
                        out[ru, c, g + six] += f6 * sc
                        out[ru, c, g + seven] += f7 * sc
            q = np.uint64(ptr[r] + r)
            t0 += w[q, g]
            t1 += w[q, g + one]
            t2 += w[q, g + two]
            t3 += w[q, g + three]
            t4 += w[q, g + four]
            t5 += w[q, g + five]
            t6 += w[q, g + six]
            t7 += w[q, g + seven]
            for c_ in range(n_ch):
                c = np.uint64(c_)
                out[ru, c, g] += r0[ru, c, g] * t0
                out[ru, c, g + one] += r0[ru, c, g + one] * t1
                out[ru, c, g + two] += r0[ru, c, g + two] * t2
                out[ru, c, g + three] += r0[ru, c, g + three] * t3
                out[ru, c, g + four] += r0[ru, c, g + four] * t4
                out[ru, c, g + five] += r0[ru, c, g + five] * t5
                out[ru, c, g + six] += r0[ru, c, g + six] * t6
                out[ru, c, g + seven] += r0[ru, c, g + seven] * t7
    return out


# divisions by zero give inf (then discarded) rather than a check per value, which would keep the loop
# from vectorising
@_kernel(error_model="numpy")
def softplus_pieces(ptr, p, e, lg, length, beta, threshold):  # pragma: no cover
    """``integral g'(p) dalpha`` over each affine piece for torch's Softplus ``g`` (its exact definition).

    ``g(x) = log(1 + exp(beta x)) / beta``, or ``x`` where ``beta x > threshold``; ``g'(p) = s(beta p)``
    with ``s`` the logistic function (1 above the threshold). The exponentials come in precomputed
    (vectorised by NumPy: :func:`mechlens_attribution.sweep.softplus_terms`): ``e = exp(-|beta p|)`` and
    ``lg = log1p(e)`` at every breakpoint, so ``g = (max(beta p, 0) + lg) / beta`` and
    ``s = 1 / (1 + e)`` (``e / (1 + e)`` for ``p < 0``). A piece over which ``p`` moves by
    ``d >= 1e-6`` gets the secant ``(g(p_b) - g(p_a)) / d * length``. A shorter one (most pieces of a
    white-noise path), where the secant would cancel, gets the mean of ``s`` over the piece from its
    Taylor series at the piece's start, ``s + s' x / 2 + s'' x^2 / 6`` with ``x = beta d``
    (truncation ~``x^3 / 100``, below float64 resolution).

    Parameters
    ----------
    ptr, p, length
        From :func:`pieces`.
    e, lg : like ``p``
    beta, threshold : float
        The Softplus's parameters.

    Returns
    -------
    w : (E + rows, n)
        Laid out as ``length``.
    """
    rows = ptr.shape[0] - 1
    n = p.shape[1]
    out = np.empty((length.shape[0], n), np.float64)
    for r in range(rows):
        for k in range(ptr[r] + r, ptr[r + 1] + r + 1):
            q = k + r  # the piece runs from breakpoint q to q + 1 of p
            ln = length[k]
            for i in range(n):
                # both candidates, then a choice (no branches: the loop over cells vectorises)
                a = p[q, i]
                b = p[q + 1, i]
                d = b - a
                ta = beta * a
                tb = beta * b
                # the secant; above the threshold g is linear (pieces this short that straddle the
                # threshold do not occur in practice)
                ga = a if ta > threshold else (max(ta, 0.0) + lg[q, i]) / beta
                gb = b if tb > threshold else (max(tb, 0.0) + lg[q + 1, i]) / beta
                secant = (gb - ga) / d if d != 0.0 else 1.0
                ea = e[q, i]
                s = (1.0 if ta >= 0.0 else ea) / (1.0 + ea)
                x = beta * d
                s1 = s * (1.0 - s)
                s2 = s1 * (1.0 - 2.0 * s)
                taylor = s + x * (s1 / 2 + x * s2 / 6)
                out[k, i] = (secant if ta > threshold or tb > threshold or abs(d) >= 1e-6 else taylor) * ln
    return out


@_kernel()
def breakpoint_integrals(ptr, kind, ref, w, n_ev, n_cr):  # pragma: no cover
    """``G_n(alpha) = integral_0^alpha g'(p_n)`` at every breakpoint, by the sweep's own numbering.

    Parameters
    ----------
    ptr, kind, ref
        From :func:`pieces`.
    w : (E + rows, m8)
        Integral of g'(p) over each piece (as :func:`accumulate` reads it).
    n_ev, n_cr : int
        Sizes of :func:`sweep`'s first-layer and crossing tables.

    Returns
    -------
    g_ev : (n_ev, m8)
        G at each first-layer event (:func:`sweep`'s numbering).
    g_cr : (n_cr, m8)
        G at each crossing (crossing number).
    g1 : (rows, m8)
        G(1).
    """
    rows = ptr.shape[0] - 1
    m8 = w.shape[1]
    g_ev = np.zeros((n_ev, m8), np.float64)
    g_cr = np.zeros((n_cr, m8), np.float64)
    g1 = np.empty((rows, m8), np.float64)
    g = np.empty(m8, np.float64)
    for r in range(rows):
        g[:] = 0.0
        for e in range(ptr[r], ptr[r + 1]):
            q = e + r  # the piece before event e
            for i in range(m8):
                g[i] += w[q, i]
            x = ref[e]
            if kind[e] >= 0:
                for i in range(m8):
                    g_ev[x, i] = g[i]
            else:
                for i in range(m8):
                    g_cr[x, i] = g[i]
        q = ptr[r + 1] + r  # the last piece
        for i in range(m8):
            g1[r, i] = g[i] + w[q, i]
    return g_ev, g_cr, g1


@_kernel()
def kernel_ranges(n_out, stride, pad, dil, k, n_in):  # pragma: no cover
    """For each output position of one axis of the mixing map, the kernel taps whose input lies inside.

    Returns ``lo``, ``hi`` (n_out,): taps ``lo <= t < hi`` read inputs ``o * stride - pad + t * dil``
    in ``[0, n_in)`` (the taps between are all inside: the input position grows with ``t``).
    """
    lo = np.zeros(n_out, np.int64)
    hi = np.zeros(n_out, np.int64)
    for o in range(n_out):
        first = k
        last = -1
        for t in range(k):
            x = o * stride - pad + t * dil
            if 0 <= x < n_in:
                first = min(first, t)
                last = t
        lo[o] = first
        hi[o] = max(last + 1, first)
    return lo, hi


@_kernel(superword=True)
def per_unit(
    ptr1,
    ev_unit,
    ev_dr,
    ptr2,
    cr_unit,
    cr_sign,
    cr_det,
    g_ev,
    g_cr,
    g1,
    on0,
    zero_units,
    v0,
    a,
    b,
    din,
    dout,
    w3,
    wt,
    geom,
    n,
):  # pragma: no cover
    """Attributions to every unit of the layer (``keep_space``) from a sweep's events and crossings.

    With ``D[j, n] = dout_j w3[j, n]`` and ``H_j(alpha) = integral_0^alpha [h2_j > 0] g'(p_n)``, unit
    ``u`` of the layer gets ``A[n, u] = b_u din_u sum_j K[j, u] D[j, n] integral_{I_u} [h2_j > 0] g'(p_n)``
    over its active interval ``I_u``: ``H_j(1)`` for a unit on throughout, ``H_j(alpha_u)`` for one on
    at the start that switches off at ``alpha_u``, ``H_j(1) - H_j(alpha_u)`` for one that switches on.
    Now ``H_j(alpha) = on_j(alpha) G(alpha) - sum_{crossings c of j before alpha} sign_c G(alpha_c)``
    (``G``: the integral of ``g'`` from 0), and ``sum_j K[j, u] D[j] on_j(alpha_u)`` is the sweep's
    ``dR`` of ``u``'s event divided by its ``d`` (``-b_u din_u`` for a unit on at the start,
    ``b_u din_u`` else). So, with ``s_u = b_u din_u`` for units on at alpha = 1 (0 else),

        A[n, u] = s_u G1 V0[u] - dR_u G(alpha_u)
                  + sum_{crossings c, u feeding j_c} K[j_c, u] sign_c D[j_c]
                        * (s_u (G1 - G(alpha_c)) + d_u [c found by u's event] G(alpha_c))

    with ``V0 = sum_j K[j, u] D[j] [h0_j > 0]`` the same for every row (second-layer units exactly at
    zero at the baseline and on just after it enter as crossings at alpha = 0). One visit per
    (crossing, unit of its receptive field): ~2 500 crossings x 968 per white-noise time point of the
    retina CNN, against ~5 000 switches x 968 visits of the sweep. The visits go along a kernel row's
    contiguous units, eight cells at a time (written out for the superword vectoriser), and the mask
    (``u`` switches at or after the event where the sweep found the crossing, exactly the crossings
    its ``dR`` counts) is a select, not a branch.

    Parameters
    ----------
    ptr1, ev_unit, ev_dr, ptr2, cr_unit, cr_sign, cr_det
        From :func:`sweep`.
    g_ev, g_cr, g1
        From :func:`breakpoint_integrals`.
    on0 : (rows, N2)
        1.0 where a second-layer unit is on just after alpha = 0.
    zero_units : (Z,) int64
        The second-layer units with ``h0 == 0`` (their state at 0+ depends on the row).
    v0 : (N1, m8)
        ``sum_j K[j, u] D[j, n] [h0_j > 0]``.
    a, b, din, dout, wt, geom
        As for :func:`sweep`.
    w3 : (N2, m8)
        As for :func:`pieces` (cells zero-padded to a multiple of 8).
    n : int
        Number of cells.

    Returns
    -------
    (rows, n, N1)
    """
    zero, one, two, three, four = np.uint64(0), np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    five, six, seven = np.uint64(5), np.uint64(6), np.uint64(7)
    rows = ptr1.shape[0] - 1
    m8 = w3.shape[1]
    c_in, hh, ww, ho, wo = geom[0], geom[1], geom[2], geom[4], geom[5]
    sy, sx, py, px, dy_, dx_ = geom[6], geom[7], geom[8], geom[9], geom[10], geom[11]
    kh, kw = wt.shape[2], wt.shape[3]
    n1 = c_in * hh * ww
    plane = ho * wo
    ky_lo, ky_hi = kernel_ranges(ho, sy, py, dy_, kh, hh)
    kx_lo, kx_hi = kernel_ranges(wo, sx, px, dx_, kw, ww)
    dxu = np.uint64(dx_)
    # the kernel output-channel first, flat (each kernel row's taps contiguous)
    kfl = np.empty(wt.size, np.float64)
    for o in range(wt.shape[1]):
        for ci in range(c_in):
            for ky in range(kh):
                for kx in range(kw):
                    kfl[((o * c_in + ci) * kh + ky) * kw + kx] = wt[ci, o, ky, kx]
    out = np.empty((rows, n, n1), np.float64)
    acc = np.empty((n1, m8), np.float64)
    # per unit, together (one cache line per visit): 0 b din where on at alpha = 1 (else 0), 1 the sweep's
    # d of a switching unit (else 0), 2 its event's number in the row (-1: it does not switch)
    info = np.empty((n1, 4), np.float64)
    pc = np.empty(m8, np.float64)
    qc = np.empty(m8, np.float64)
    n_zero = zero_units.shape[0]
    for r in range(rows):
        ru = np.uint64(r)
        for u in range(n1):
            bu = b[r, u] * din[u]
            info[u, 0] = bu if (a[u] > 0.0 or (a[u] == 0.0 and b[r, u] > 0.0)) else 0.0
            info[u, 1] = 0.0
            info[u, 2] = -1.0
            for i in range(m8):
                acc[u, i] = 0.0
        first = ptr1[r]
        for k in range(ptr1[r + 1] - first):
            u = ev_unit[first + k]
            bu = b[r, u] * din[u]
            info[u, 0] = 0.0 if a[u] > 0.0 else bu  # on at alpha = 1 only if it switched on
            info[u, 1] = -bu if a[u] > 0.0 else bu
            info[u, 2] = k
        n_cr = ptr2[r + 1] - ptr2[r]
        for x_ in range(n_cr + n_zero):
            if x_ < n_cr:
                x = ptr2[r] + x_
                j = cr_unit[x]
                det = float(cr_det[x])
                sg = cr_sign[x]
                for i in range(m8):
                    d_ji = dout[j] * w3[j, i]
                    pc[i] = sg * d_ji * (g1[r, i] - g_cr[x, i])
                    qc[i] = sg * d_ji * g_cr[x, i]
            else:  # a unit at zero at the baseline and on at 0+: on from alpha = 0 (G = 0 there)
                j = zero_units[x_ - n_cr]
                if on0[r, j] < 0.5:
                    continue
                det = -1.0
                for i in range(m8):
                    pc[i] = dout[j] * w3[j, i] * g1[r, i]
                    qc[i] = 0.0
            o = j // plane
            pos = j - o * plane
            oy = pos // wo
            ox = pos - oy * wo
            x0 = ox * sx - px
            for g_ in range(0, m8, 8):
                g = np.uint64(g_)
                p0, p1, p2, p3 = pc[g], pc[g + one], pc[g + two], pc[g + three]
                p4, p5, p6, p7 = pc[g + four], pc[g + five], pc[g + six], pc[g + seven]
                q0, q1, q2, q3 = qc[g], qc[g + one], qc[g + two], qc[g + three]
                q4, q5, q6, q7 = qc[g + four], qc[g + five], qc[g + six], qc[g + seven]
                for ci in range(c_in):
                    for ky in range(ky_lo[oy], ky_hi[oy]):
                        base = np.uint64((ci * hh + oy * sy - py + ky * dy_) * ww + x0)
                        kb = np.uint64(((o * c_in + ci) * kh + ky) * kw)
                        for kx_ in range(kx_lo[ox], kx_hi[ox]):
                            kx = np.uint64(kx_)
                            uu = base + kx * dxu
                            f = kfl[kb + kx]
                            fs = f * info[uu, zero]
                            # a select, not a branch (the mask is unpredictable)
                            fd = f * info[uu, one] * (1.0 if info[uu, two] >= det else 0.0)
                            # loads, then stores (the superword vectoriser keeps them in this order)
                            a0 = acc[uu, g] + fs * p0 + fd * q0
                            a1 = acc[uu, g + one] + fs * p1 + fd * q1
                            a2 = acc[uu, g + two] + fs * p2 + fd * q2
                            a3 = acc[uu, g + three] + fs * p3 + fd * q3
                            a4 = acc[uu, g + four] + fs * p4 + fd * q4
                            a5 = acc[uu, g + five] + fs * p5 + fd * q5
                            a6 = acc[uu, g + six] + fs * p6 + fd * q6
                            a7 = acc[uu, g + seven] + fs * p7 + fd * q7
                            acc[uu, g] = a0
                            acc[uu, g + one] = a1
                            acc[uu, g + two] = a2
                            acc[uu, g + three] = a3
                            acc[uu, g + four] = a4
                            acc[uu, g + five] = a5
                            acc[uu, g + six] = a6
                            acc[uu, g + seven] = a7
        # the switching units' dR at their events
        for k in range(ptr1[r + 1] - first):
            e = first + k
            u = ev_unit[e]
            for i in range(m8):
                acc[u, i] -= ev_dr[e, i] * g_ev[e, i]
        for i in range(n):
            gi = g1[r, i]
            for u in range(n1):
                out[ru, i, u] = info[u, 0] * gi * v0[u, i] + acc[u, i]
    return out
