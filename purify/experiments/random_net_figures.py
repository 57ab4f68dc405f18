"""The figures of the random-network experiment (:mod:`purify.experiments.random_net`):
Bubeck et al. 2021 Fig. 1 (fraction flipped), Fig. 2 (depth-1 step and gradient) and
Appendix D Figs 2–7 (every depth), drawn from the experiment's ``(depth, k, d)`` ReLU and
``(k, d)`` smooth-activation datasets.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from purify.plots.style import finish, new_figure

if TYPE_CHECKING:
    from purify.experiments.random_net import Settings


def _band(ax, x, mean, std, label, color) -> None:
    ax.plot(x, mean, "o-", ms=3, lw=1.4, color=color, label=label)
    ax.fill_between(x, np.clip(mean - std, 0, None), mean + std, color=color, alpha=0.15, lw=0)


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.9 * i / max(1, n - 1)) for i in range(n)]


def fraction_figure(ds: xr.Dataset, sm: xr.Dataset, s: Settings) -> Figure:
    """Fig. 1: fraction flipped against ``d``, one panel per depth (and the smooth ψ), one line per ``k``."""
    panels = [(f"ReLU, L = {L}", ds.sel(depth=L)) for L in ds.depth.values.tolist()]
    panels.append((f"{s.smooth}, L = 1", sm))
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = new_figure(3.4 * cols + 1.2, 2.9 * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    colors = _colors(ds.k.size)
    for ax, (title, part) in zip(axes, panels, strict=False):
        for color, k in zip(colors, ds.k.values.tolist(), strict=True):
            row = part.sel(k=k)
            if np.isnan(row.frac_flipped.values).all():
                continue
            _band(ax, row.d.values, row.frac_flipped.values, row.frac_flipped_std.values, f"k={k:g}", color)
            if not np.allclose(row.frac_flipped_rescaled.values, row.frac_flipped.values, equal_nan=True):
                ax.plot(row.d.values, row.frac_flipped_rescaled.values, ls="--", lw=1, color=color)
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.05)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("input dimension d")
        ax.set_ylabel("fraction flipped")
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, loc="lower right")
    return finish(fig, "Fraction of inputs flipped by one gradient step η∇f(x), |η| < 20 (Bubeck et al. Fig. 1)",
                  f"{s.inits} networks × {s.inputs} inputs per point; band: ±1 std over networks; ‖x‖ = √d; "
                  "dashed (L ≥ 2): cap 20·2^((L−1)/2), the paper's cap for N(0, 2/fan_in) hidden layers")


def depth1_figure(ds: xr.Dataset, sm: xr.Dataset, refs: dict) -> Figure:
    """Fig. 2: mean smallest ``|η|``, ``‖∇f‖`` and ``‖δ‖`` against ``d`` at depth 1, ReLU and smooth ψ."""
    fig = new_figure(13.5, 6.4)
    axes = fig.subplots(2, 3, squeeze=False)
    colors = _colors(ds.k.size)
    act = sm.attrs["activation"]
    for r, (name, part) in enumerate((("ReLU", ds.sel(depth=1)), (act, sm))):
        ref = refs["relu" if name == "ReLU" else act]
        for c, (var, label, key) in enumerate((("eta", "smallest flipping |η|", "eta"),
                                               ("grad_norm", "‖∇f(x)‖", "grad_norm"),
                                               ("delta_norm", "‖δ‖ = |η| ‖∇f‖", "delta_norm"))):
            ax = axes[r, c]
            for color, k in zip(colors, part.k.values.tolist(), strict=True):
                row = part.sel(k=k)
                _band(ax, row.d.values, row[f"{var}_mean"].values, row[f"{var}_std"].values, f"k={k:g}", color)
            ax.axhline(ref[key], color="black", ls="--", lw=1, label="linear-regime value")
            if var == "delta_norm":
                d = np.asarray(part.d.values, np.float64)
                ax.plot(d, np.sqrt(d), color="tab:red", ls=":", lw=1.4, label="‖x‖ = √d")
            ax.set_xscale("log")
            ax.set_xlabel("input dimension d")
            ax.set_ylabel(label)
            ax.set_title(f"{name}, depth 1: {label}", fontsize=10)
            ax.grid(alpha=0.3)
        axes[r, 2].legend(fontsize=7, loc="upper left")
    return finish(fig, "Smallest flipping step and input gradient of random two-layer nets (Bubeck et al. Fig. 2)",
                  "mean ± std over flipped inputs (|η|, ‖δ‖) or all inputs (‖∇f‖); dashed: |f|/‖∇f‖² etc. "
                  "for f linear along ∇f")


def deep_figure(ds: xr.Dataset) -> Figure:
    """App. D Figs 2–7: mean smallest ``|η|`` and ``‖∇f‖`` against ``d`` for every depth, one line per ``k``."""
    depths = ds.depth.values.tolist()
    fig = new_figure(3.2 * len(depths) + 1.0, 6.0)
    axes = fig.subplots(2, len(depths), squeeze=False)
    colors = _colors(ds.k.size)
    for c, L in enumerate(depths):
        part = ds.sel(depth=L)
        for r, (var, label) in enumerate((("eta", "smallest flipping |η|"), ("grad_norm", "‖∇f(x)‖"))):
            ax = axes[r, c]
            for color, k in zip(colors, part.k.values.tolist(), strict=True):
                row = part.sel(k=k)
                if np.isnan(row[f"{var}_mean"].values).all():
                    continue
                _band(ax, row.d.values, row[f"{var}_mean"].values, row[f"{var}_std"].values, f"k={k:g}", color)
            ax.set_xscale("log")
            ax.set_ylim(bottom=0)
            ax.set_xlabel("input dimension d")
            ax.set_ylabel(label)
            ax.set_title(f"ReLU, L = {L}", fontsize=10)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    return finish(fig, "Smallest flipping |η| and ‖∇f‖ for depths L (Bubeck et al. App. D)",
                  "hidden layers N(0, 1/fan_in): output and gradient shrink by √2 per ReLU layer")
