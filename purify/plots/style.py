"""Shared look of every figure: the caption line, the page layout and the colours.

Every figure of :mod:`purify.plots` is a bare :class:`matplotlib.figure.Figure` (no pyplot,
so no global figure registry and no backend dependence: drawing works under ``Agg``), laid
out with the constrained layout engine and closed by :func:`finish`, which adds the title and
the caption line naming the run's key parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from purify.config import RunConfig

#: One colour per model, reused by every figure so "clean" always looks the same.
MODEL_COLORS = {"clean": "tab:blue", "robust": "tab:red", "ideal": "black", "init": "tab:gray",
                "random": "tab:gray", "true": "black"}
#: Colour of a highlighted series (the lucky feature, the pure part, ...).
HIGHLIGHT = "tab:orange"
#: Shading of the adversarial-training phase on step axes.
ADV_SHADE = {"color": "tab:red", "alpha": 0.07, "lw": 0}
#: Vertical line at the end of clean training.
BOUNDARY = {"color": "0.3", "ls": ":", "lw": 1.2}

NORM_LABEL = {"l2": "ℓ₂", "linf": "ℓ∞"}

# Inches kept free at the bottom of every figure for the caption line (two lines at 7 pt).
_CAPTION_INCHES = 0.32


def new_figure(width: float, height: float) -> Figure:
    """A figure ``width × height`` inches, constrained layout leaving room for the caption."""
    fig = Figure(figsize=(width, height), dpi=100)
    room = _CAPTION_INCHES / height
    fig.set_layout_engine("constrained", rect=(0.0, room, 1.0, 1.0 - room))
    return fig


def caption(config: RunConfig, run_name: str = "") -> str:
    """The caption line: the parameters that identify a run (d, k, m, dictionary, σ_x, seed, τ)."""
    dc, nc, tc, ec = config.data, config.net, config.train, config.eval
    parts = [
        f"d={dc.d}", f"k={dc.k}", f"D={dc.n_features}", f"m={nc.width}", f"dictionary={dc.dictionary}",
        f"σ_x={dc.sigma_x:g}", f"σ₀={nc.sigma0:.3g}", f"seed={config.seed}",
    ]
    if ec.tau is not None:
        parts.append(f"τ(ℓ₂)={ec.tau:.3g}")
    if ec.tau_linf is not None:
        parts.append(f"τ(ℓ∞)={ec.tau_linf:.3g}")
    parts.append(f"steps clean={tc.clean_steps} adv={tc.adv_steps} ({tc.adv_attack}/{tc.adv_norm})")
    if run_name:
        parts.append(f"run {run_name}")
    return "   ".join(parts)


def finish(fig: Figure, title: str, caption_text: str = "") -> Figure:
    """Add the figure title and the caption line at the bottom; return ``fig``."""
    fig.suptitle(title, fontsize=12)
    if caption_text:
        fig.text(0.5, 0.008, caption_text, ha="center", va="bottom", fontsize=7, color="0.25", wrap=True)
    return fig


def mark_phases(ax: Axes, clean_end: float | None, x_max: float | None = None) -> None:
    """Shade the adversarial phase (``x > clean_end``) and draw the phase boundary on ``ax``."""
    if clean_end is None:
        return
    ax.axvline(clean_end, **BOUNDARY)
    if x_max is not None and x_max > clean_end:
        ax.axvspan(clean_end, x_max, **ADV_SHADE)


def as_list(values: Sequence) -> list:
    """Plain Python values of a coordinate (numpy scalars and ``StringDType`` entries become
    ``int``/``float``/``str``, which print cleanly in legends)."""
    return [v.item() if hasattr(v, "item") else v for v in values]


def labels(values: Sequence) -> np.ndarray:
    """A string coordinate as a NumPy object array of ``str`` (the store's ``StringDType``
    arrays cannot be cast with ``astype(str)``)."""
    return np.array([str(v) for v in values], dtype=object)
