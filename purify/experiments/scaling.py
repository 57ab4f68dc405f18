"""Fitted scaling laws: the exponent of a power law ``y ∝ x^s`` read off a log-log plot.

The experiments compare measured exponents with the theory's (Bubeck et al. 2021's flat
``|η|`` and ``‖∇f‖``; Wang et al.'s ``1/√d`` robustness radius and ``1/√m`` deviation; the
single-step ``√d``, ``1/d``, ``1/√d`` rates).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x`` over the points where both are finite
    and positive (NaN with fewer than two such points)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])
