"""The targets of the four phenomenon measures (what each means: the package docstring)."""

from __future__ import annotations

LATENCY_RHO_MAX = -0.9
LATENCY_MIN_INTENSITIES = 5
#: smallest latency shift, weakest minus strongest kept intensity, s (one frame is 10 ms)
LATENCY_SHIFT_MIN_S = 0.010
OSR_LATENCY_TOL_S = 0.015
OSR_RATIO_MIN = 1.5
OSR_PERIOD_SPAN_S = (0.06, 0.15)
#: least-squares slope of the OSR time after the last flash against the period (1: expected flash)
OSR_SLOPE_MIN = 0.8
#: smallest steady per-flash evoked peak, Hz: without a per-flash response there is no rhythm to omit
OSR_STEADY_MIN_HZ = 2.0
#: how far the OSR peak must rise above the rate at the omitted time: both, in Hz and as a fraction
OSR_MARGIN_HZ = 1.0
OSR_MARGIN_FRACTION = 0.25
#: bar speeds (um/s) and directions of the anticipation measure; 440 um/s = 0.08 px/frame (Berry et al.)
ANTICIPATION_SPEEDS_UM_S = (440.0, 1100.0, 2200.0)
ANTICIPATION_DIRECTIONS = ("right", "left")
#: the lead may not fall below -this x flashed latency x speed (0 lead = the lag fully compensated)
ANTICIPATION_LAG_FRACTION = 0.5
REVERSAL_WINDOW_S = 0.3
#: window before the reversal whose largest rate the burst is compared with, s
REVERSAL_BEFORE_S = 0.7
REVERSAL_RATIO_MIN = 1.5
#: largest spread (max - min over reversal positions) of the population burst time, s
REVERSAL_SPREAD_MAX_S = 0.030
