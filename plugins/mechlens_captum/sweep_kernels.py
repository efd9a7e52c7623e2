"""Compiled loops of the path sweep (see :mod:`mechlens_captum.sweep` for the mathematics).

Plain Python functions over NumPy arrays, compiled with numba on first use (:func:`compiled`) and
cached on disk. They are written for numba: explicit loops, no Python objects. Arrays are float64
unless said otherwise; ``n`` is the number of cells, ``C`` the channels of the attributed layer.

The middle affine map is a convolution given by its geometry (a Linear layer is a 1x1 convolution
of a 1x1 image with one input channel per unit), so a convolution's weights stay in cache instead of
a sparse matrix of 5 million (index, weight) pairs (84 MB for the retina CNN) being read per time point.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_COMPILED: dict[str, Any] = {}
_PYTHON: dict[str, Any] = {}
#: kernels that call other kernels (which must be compiled first and bound in this module)
_CALLS = {
    "sweep": ("tap_out", "record_crossing"),
    "fan_in_add": ("receptive_field",),
    "per_unit": ("receptive_field", "fan_in_add"),
}


def compiled(name: str) -> Any:
    """The numba-compiled version of the kernel ``name`` of this module."""
    if name not in _COMPILED:
        import numba

        for callee in _CALLS.get(name, ()):
            globals()[callee] = compiled(callee)
        python = _PYTHON.setdefault(name, globals()[name])
        _COMPILED[name] = numba.njit(cache=True, nogil=True)(python)
    return _COMPILED[name]


def tap_out(i, stride, pad, dil, k, size):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Output index along one axis that input index ``i`` feeds through kernel tap ``k``, or -1.

    Integer division only for strides > 1: in the sweep's inner loops it would dominate otherwise.
    """
    o = i + pad - k * dil
    if o < 0:
        return -1
    if stride != 1:
        if o % stride != 0:
            return -1
        o //= stride
    return o if o < size else -1


def record_crossing(found, cap_cr, alpha, j, on, sc, cr_alpha, cr_unit, cr_sign, cr_sc):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Write crossing number ``found`` (second-layer unit ``j``, which was ``on``, at ``alpha``) if it fits."""
    if found < cap_cr:
        cr_alpha[found] = alpha
        cr_unit[found] = j
        cr_sign[found] = 1.0 - 2.0 * on
        for cc in range(sc.shape[0]):
            cr_sc[found, cc] = sc[cc, j]


def sweep(a, b, chan, din, dout, wt, geom, h0, s0, w3, cap_cr):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Sweep every row's path once; return its breakpoints in order with what changes at each.

    Parameters
    ----------
    a : (N1,)
        First-layer inputs (before the first ReLU) at the baseline.
    b : (rows, N1)
        Their change from the baseline to each row's end point.
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
    ptr : (rows + 1,) int64
        Row ``r``'s breakpoints are ``ptr[r]:ptr[r+1]`` of the arrays below, sorted by alpha.
    alpha : (E,)
    kind : (E,) int64
        >= 0: a first-layer unit of that channel switched; < 0: crossing number ``-kind - 1``.
    dp : (E, n)
        Change of each cell's ``dR[:, channel]`` (first-layer events; also its change of dp/dalpha)
        or of dp/dalpha (crossings).
    cr_sc : (X, C)
        Slope of ``h2_j`` per channel of origin at the crossing.
    unit : (E,) int64
        The unit of each breakpoint: the first-layer unit that switched, or the second-layer unit
        that crossed zero.
    cr_sign : (X,)
        +1 where the crossing unit turned on, -1 where it turned off.
    found : int
        Crossings found; if more than ``cap_cr`` the tables are incomplete: call again with more.
    """
    rows, n1 = b.shape
    n2, n = w3.shape
    n_ch = s0.shape[1]
    hh, ww, oo, ho, wo = geom[1], geom[2], geom[3], geom[4], geom[5]
    sy, sx, py, px, dy_, dx_ = geom[6], geom[7], geom[8], geom[9], geom[10], geom[11]
    kh, kw = wt.shape[2], wt.shape[3]
    wflat = wt.reshape(wt.shape[0], wt.shape[1], kh * kw)
    tap_pos = np.empty(kh * kw, np.int64)
    tap_k = np.empty(kh * kw, np.int64)
    plane = ho * wo
    cap_ev = rows * n1 + cap_cr
    ptr = np.zeros(rows + 1, np.int64)
    alpha_out = np.empty(cap_ev, np.float64)
    kind_out = np.empty(cap_ev, np.int64)
    dp_out = np.empty((cap_ev, n), np.float64)
    cr_sc = np.empty((cap_cr, n_ch), np.float64)
    cr_unit = np.empty(cap_cr, np.int64)
    cr_sign = np.empty(cap_cr, np.float64)
    unit_out = np.empty(cap_ev, np.int64)
    cr_alpha = np.empty(cap_cr, np.float64)
    # per second-layer unit j, side by side (one cache line per visit): the current linear piece of
    # h2_j(alpha) = q + s alpha, whether it is on (1.0 / 0.0), and its elementwise output scale
    st = np.empty((n2, 4), np.float64)
    sc = np.empty((n_ch, n2), np.float64)  # channel-major: an event touches one channel's row
    alpha = np.empty(n1, np.float64)
    units = np.empty(n1, np.int64)
    ev_dr = np.empty((n1, n), np.float64)
    acc = np.empty(n, np.float64)
    found = 0
    n_out = 0
    for r in range(rows):
        # first-layer switch points inside (0, 1), in order
        m = 0
        for u in range(n1):
            bu = b[r, u]
            if bu != 0.0:
                al = -a[u] / bu
                if al > 0.0 and al < 1.0:
                    alpha[m] = al
                    units[m] = u
                    m += 1
        order = np.argsort(alpha[:m])
        for j in range(n2):
            tot = 0.0
            for c in range(n_ch):
                sc[c, j] = s0[r, c, j]
                tot += s0[r, c, j]
            st[j, 0] = h0[j]
            st[j, 1] = tot
            st[j, 2] = 1.0 if (h0[j] > 0.0 or (h0[j] == 0.0 and tot > 0.0)) else 0.0
            st[j, 3] = dout[j]
        row_first = found  # this row's crossings are numbers row_first ... found - 1
        for k in range(m):
            u = units[order[k]]
            al = alpha[order[k]]
            # on at the baseline (a > 0) and switching: its contribution b_u leaves; else it arrives
            d = (-b[r, u] if a[u] > 0.0 else b[r, u]) * din[u]
            c = chan[u]
            for i in range(n):
                acc[i] = 0.0
            ci = u // (hh * ww)
            y = (u // ww) % hh
            x = u % ww
            # the output positions this unit feeds: o * plane + oy * wo + ox for every kernel tap
            n_taps = 0
            for ky in range(kh):
                oy = tap_out(y, sy, py, dy_, ky, ho)
                if oy < 0:
                    continue
                for kx in range(kw):
                    ox = tap_out(x, sx, px, dx_, kx, wo)
                    if ox < 0:
                        continue
                    tap_pos[n_taps] = oy * wo + ox
                    tap_k[n_taps] = ky * kw + kx
                    n_taps += 1
            for o in range(oo):
                base = o * plane
                for q in range(n_taps):
                    j = base + tap_pos[q]
                    hq = st[j, 0]
                    hs = st[j, 1]
                    hn = hq + hs * al
                    # (hn > 0) != on is rarely true: one well-predicted branch
                    if (hn > 0.0) != (st[j, 2] > 0.5) and hn != 0.0:
                        # at the root of the piece that just ended
                        record_crossing(
                            found, cap_cr, min(-hq / hs, al), j, st[j, 2], sc, cr_alpha, cr_unit, cr_sign, cr_sc
                        )
                        found += 1
                        st[j, 2] = 1.0 - st[j, 2]
                    dl = wflat[ci, o, tap_k[q]] * d * st[j, 3]
                    st[j, 0] = hq - dl * al  # the new piece meets the old one at al
                    st[j, 1] = hs + dl
                    sc[c, j] += dl
                    f = dl * st[j, 2]  # no branch on the (unpredictable) state
                    for i in range(n):
                        acc[i] += f * w3[j, i]
            for i in range(n):
                ev_dr[k, i] = acc[i]
        # the last linear piece, up to alpha = 1
        for j in range(n2):
            hn = st[j, 0] + st[j, 1]
            if (hn > 0.0) != (st[j, 2] > 0.5) and hn != 0.0:
                record_crossing(
                    found, cap_cr, min(-st[j, 0] / st[j, 1], 1.0), j, st[j, 2], sc, cr_alpha, cr_unit, cr_sign, cr_sc
                )
                found += 1
        if found > cap_cr:
            break
        n_rc = found - row_first
        # merge the (sorted) first-layer events with the sorted crossings
        cr_order = np.argsort(cr_alpha[row_first:found]) + row_first
        i1 = 0
        i2 = 0
        while i1 < m or i2 < n_rc:
            take1 = i2 >= n_rc or (i1 < m and alpha[order[i1]] <= cr_alpha[cr_order[i2]])
            if take1:
                u = units[order[i1]]
                alpha_out[n_out] = alpha[order[i1]]
                kind_out[n_out] = chan[u]
                unit_out[n_out] = u
                for i in range(n):
                    dp_out[n_out, i] = ev_dr[i1, i]
                i1 += 1
            else:
                x_id = cr_order[i2]
                j = cr_unit[x_id]
                alpha_out[n_out] = cr_alpha[x_id]
                kind_out[n_out] = -x_id - 1
                unit_out[n_out] = j
                tot = 0.0
                for cc in range(n_ch):
                    tot += cr_sc[x_id, cc]
                for i in range(n):
                    dp_out[n_out, i] = cr_sign[x_id] * w3[j, i] * tot
                i2 += 1
            n_out += 1
        ptr[r + 1] = n_out
    k = min(found, cap_cr)
    return (
        ptr,
        alpha_out[:n_out],
        kind_out[:n_out],
        dp_out[:n_out],
        cr_sc[:k],
        unit_out[:n_out],
        cr_sign[:k],
        found,
    )


def pieces(ptr, alpha, dp, slope0, p0):  # type: ignore[no-untyped-def]  # pragma: no cover
    """The linear pieces of each row's pre-output ``p`` between consecutive breakpoints.

    Parameters
    ----------
    ptr, alpha, dp
        From :func:`sweep`.
    slope0 : (rows, n)
        dp/dalpha just after alpha = 0.
    p0 : (n,)
        p at the baseline.

    Returns
    -------
    p_a, p_b : (E + rows, n)
        p at the start and end of each piece; row ``r``'s pieces are ``ptr[r] + r : ptr[r+1] + r + 1``.
    length : (E + rows, 1)
    """
    rows = ptr.shape[0] - 1
    n = p0.shape[0]
    total = ptr[rows] + rows
    p_a = np.empty((total, n), np.float64)
    p_b = np.empty((total, n), np.float64)
    length = np.empty((total, 1), np.float64)
    p = np.empty(n, np.float64)
    sl = np.empty(n, np.float64)
    for r in range(rows):
        for i in range(n):
            p[i] = p0[i]
            sl[i] = slope0[r, i]
        prev = 0.0
        out = ptr[r] + r
        for e in range(ptr[r], ptr[r + 1] + 1):
            nxt = alpha[e] if e < ptr[r + 1] else 1.0
            gap = nxt - prev
            length[out, 0] = gap
            for i in range(n):
                p_a[out, i] = p[i]
                p[i] += sl[i] * gap
                p_b[out, i] = p[i]
                if e < ptr[r + 1]:
                    sl[i] += dp[e, i]
            prev = nxt
            out += 1
    return p_a, p_b, length


def accumulate(ptr, kind, unit, dp, cr_sign, cr_sc, w3, w, r0):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Channel attributions ``A = R(0) G(1) + sum_events dR (G(1) - G(alpha_event))``.

    Parameters
    ----------
    ptr, kind, unit, dp, cr_sign, cr_sc
        From :func:`sweep`.
    w3 : (N2, n)
        As for :func:`sweep`.
    w : (E + rows, n)
        Integral of g'(p) over each piece (laid out as by :func:`pieces`).
    r0 : (rows, n, C)
        R just after alpha = 0.

    Returns
    -------
    (rows, n, C)
    """
    rows = ptr.shape[0] - 1
    n, n_ch = r0.shape[1], r0.shape[2]
    out = np.empty((rows, n, n_ch), np.float64)
    g1 = np.empty(n, np.float64)
    rest = np.empty(n, np.float64)
    for r in range(rows):
        first = ptr[r] + r
        count = ptr[r + 1] - ptr[r] + 1
        for i in range(n):
            g1[i] = 0.0
            for q in range(first, first + count):
                g1[i] += w[q, i]
            for c in range(n_ch):
                out[r, i, c] = r0[r, i, c] * g1[i]
            rest[i] = g1[i]
        for e in range(ptr[r], ptr[r + 1]):
            q = first + (e - ptr[r])
            for i in range(n):
                rest[i] -= w[q, i]  # now G(1) - G(alpha_e)
            kd = kind[e]
            if kd >= 0:
                for i in range(n):
                    out[r, i, kd] += dp[e, i] * rest[i]
            else:
                x_id = -kd - 1
                for i in range(n):
                    f = cr_sign[x_id] * w3[unit[e], i] * rest[i]
                    for c in range(n_ch):
                        out[r, i, c] += f * cr_sc[x_id, c]
    return out


def softplus_integral(p_a, p_b, length, beta, threshold):  # type: ignore[no-untyped-def]  # pragma: no cover
    """``integral g'(p) dalpha`` over each affine piece for torch's Softplus ``g`` (its exact definition).

    ``g(x) = log(1 + exp(beta x)) / beta``, or ``x`` where ``beta x > threshold``; the secant
    ``(g(p_b) - g(p_a)) / (p_b - p_a) * length``, or ``g'(midpoint) * length`` where ``p`` barely
    moves (the difference quotient would cancel; the midpoint rule's error is below float64 there).
    """
    out = np.empty_like(p_a)
    for k in range(p_a.shape[0]):
        ln = length[k, 0]
        for i in range(p_a.shape[1]):
            a = p_a[k, i]
            b = p_b[k, i]
            d = b - a
            if abs(d) < 1e-6:
                x = beta * (a + b) / 2
                out[k, i] = (1.0 if x > threshold else 1.0 / (1.0 + np.exp(-x))) * ln
            else:
                ga = a if beta * a > threshold else np.log1p(np.exp(beta * a)) / beta
                gb = b if beta * b > threshold else np.log1p(np.exp(beta * b)) / beta
                out[k, i] = (gb - ga) / d * ln
    return out


def receptive_field(j, geom, kh, kw, c_in, units, taps):  # type: ignore[no-untyped-def]  # pragma: no cover
    """The input units feeding second-layer unit ``j`` of the mixing map (``geom`` as in :func:`sweep`).

    Fills ``units[:count]`` with their indices and ``taps[:count]`` with ``(ci * kh + ky) * kw + kx``,
    the kernel entry joining each to ``j``; returns ``count``.
    """
    hh, ww, ho, wo = geom[1], geom[2], geom[4], geom[5]
    sy, sx, py, px, dy_, dx_ = geom[6], geom[7], geom[8], geom[9], geom[10], geom[11]
    plane = ho * wo
    oy = (j % plane) // wo
    ox = j % wo
    count = 0
    for ci in range(c_in):
        for ky in range(kh):
            y = oy * sy - py + ky * dy_
            if y < 0 or y >= hh:
                continue
            for kx in range(kw):
                x = ox * sx - px + kx * dx_
                if x < 0 or x >= ww:
                    continue
                units[count] = (ci * hh + y) * ww + x
                taps[count] = (ci * kh + ky) * kw + kx
                count += 1
    return count


def fan_in_add(v, j, coef, wt, dout, w3, geom, units, taps):  # type: ignore[no-untyped-def]  # pragma: no cover
    """``v[u] += coef * K[j, u] * dout[j] * w3[j]`` for every input unit ``u`` feeding second-layer unit ``j``.

    ``v`` (N1, n); ``K`` is the mixing map's kernel (``wt``, ``geom`` as in :func:`sweep`), without
    the input scale ``din``; ``units``, ``taps`` are work arrays of length ``wt[0].size``.
    """
    c_in, kh, kw = wt.shape[0], wt.shape[2], wt.shape[3]
    o = j // (geom[4] * geom[5])
    flat = wt.reshape(c_in, wt.shape[1], kh * kw)
    base = coef * dout[j]
    for k in range(receptive_field(j, geom, kh, kw, c_in, units, taps)):
        t = taps[k]
        f = base * flat[t // (kh * kw), o, t % (kh * kw)]
        u = units[k]
        for i in range(w3.shape[1]):
            v[u, i] += f * w3[j, i]


def per_unit(ptr, kind, unit, cr_sign, a, b, din, dout, wt, geom, w3, on0, w):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Attributions to every unit of the layer (``keep_space``) from a sweep's breakpoints.

    ``A[n, u] = b_u din_u * integral over u's active interval of g'(p_n) V_n(u, alpha)``, where
    ``V_n(u, alpha) = sum_j K[j, u] dout_j w3[j, n] [h2_j > 0]`` changes only when a unit ``j`` fed by
    ``u`` crosses zero. So ``A = b din (V(0+) G(I_u) + sum_crossings sign K dout w3[j] G(I_u and
    after the crossing))`` with ``G`` the integral of ``g'(p_n)`` (cumulated from ``w``).

    Parameters
    ----------
    ptr, kind, unit, cr_sign
        From :func:`sweep`.
    a, b, din, dout, wt, geom, w3
        As for :func:`sweep`.
    on0 : (rows, N2)
        1.0 where a second-layer unit is on just after alpha = 0.
    w : (E + rows, n)
        Integral of g'(p) over each piece (as :func:`accumulate` reads it).

    Returns
    -------
    (rows, n, N1)
    """
    rows, n1 = b.shape
    n2, n = w3.shape
    out = np.zeros((rows, n, n1), np.float64)
    c_in, kh, kw = wt.shape[0], wt.shape[2], wt.shape[3]
    flat = wt.reshape(c_in, wt.shape[1], kh * kw)
    plane = geom[4] * geom[5]
    rf_units = np.empty(c_in * kh * kw, np.int64)
    rf_taps = np.empty(c_in * kh * kw, np.int64)
    v = np.empty((n1, n), np.float64)
    g_at = np.empty((n1, n), np.float64)  # G at each first-layer unit's switch
    pos = np.empty(n1, np.int64)  # its breakpoint number in the row (-1: no switch)
    g = np.empty(n, np.float64)
    g1 = np.empty(n, np.float64)
    for r in range(rows):
        first = ptr[r] + r
        count = ptr[r + 1] - ptr[r]
        for i in range(n):
            g1[i] = 0.0
            for q in range(first, first + count + 1):
                g1[i] += w[q, i]
        # G at every breakpoint, walked in order
        gb = np.empty((count, n), np.float64)
        for i in range(n):
            g[i] = 0.0
        for e in range(count):
            for i in range(n):
                g[i] += w[first + e, i]
                gb[e, i] = g[i]
        for u in range(n1):
            pos[u] = -1
        for e in range(count):
            if kind[ptr[r] + e] >= 0:
                u = unit[ptr[r] + e]
                pos[u] = e
                for i in range(n):
                    g_at[u, i] = gb[e, i]
        # V(0+): the units on at the start
        v[:, :] = 0.0
        for j in range(n2):
            if on0[r, j] > 0.5:
                fan_in_add(v, j, 1.0, wt, dout, w3, geom, rf_units, rf_taps)
        for u in range(n1):
            bu = b[r, u] * din[u]
            if bu == 0.0:
                continue
            on_start = a[u] > 0.0 or (a[u] == 0.0 and b[r, u] > 0.0)
            for i in range(n):
                if pos[u] >= 0:
                    gi = g_at[u, i] if on_start else g1[i] - g_at[u, i]
                else:
                    gi = g1[i] if on_start else 0.0
                out[r, i, u] = bu * v[u, i] * gi
        # each crossing changes V for the units feeding it, from the crossing on
        for e in range(count):
            kd = kind[ptr[r] + e]
            if kd >= 0:
                continue
            j = unit[ptr[r] + e]
            o = j // plane
            base = cr_sign[-kd - 1] * dout[j]
            for k in range(receptive_field(j, geom, kh, kw, c_in, rf_units, rf_taps)):
                u = rf_units[k]
                bu = b[r, u] * din[u]
                if bu == 0.0:
                    continue
                on_start = a[u] > 0.0 or (a[u] == 0.0 and b[r, u] > 0.0)
                t = rf_taps[k]
                f = bu * base * flat[t // (kh * kw), o, t % (kh * kw)]
                pu = pos[u]
                for i in range(n):
                    # G over u's active interval after the crossing (breakpoint e)
                    if pu < 0:
                        gi = g1[i] - gb[e, i] if on_start else 0.0
                    elif on_start:  # active on [0, alpha_u]
                        gi = g_at[u, i] - gb[e, i] if pu > e else 0.0
                    else:  # active on [alpha_u, 1]
                        gi = g1[i] - (g_at[u, i] if pu > e else gb[e, i])
                    out[r, i, u] += f * w3[j, i] * gi
    return out
