"""Figures of the end-of-phase evaluation (:mod:`purify.final_evaluation`).

:func:`threshold_frontier` reads the ``threshold`` and ``evaluation`` groups: is the robust
model's robustness more than the clean network with raised biases buys?  :func:`attack_strength`
reads the ``attack_strength`` group: has the attack converged?
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from purify import schema as V
from purify.evaluate import standard_error
from purify.final_evaluation import format_r
from purify.plots.style import MODEL_COLORS, NORM_LABEL, as_list, finish, new_figure

if TYPE_CHECKING:
    from purify.plots.source import FigureInput

#: Models drawn as points on the threshold frontier, with their colour and label.
FRONTIER_MODELS = {"clean": (MODEL_COLORS["clean"], "clean model"),
                   "bias_only": ("tab:purple", "clean weights + adv. biases"),
                   "threshold": ("tab:green", "threshold model (selected r)"),
                   "robust": (MODEL_COLORS["robust"], "robust model")}


def threshold_frontier(threshold: xr.Dataset, evaluation: xr.Dataset, *, caption: str = "") -> Figure:
    """Clean vs robust accuracy at ``τ`` of the threshold baseline along ``r``, one panel per norm.

    The line is the baseline under the cheap attacks for every ``r`` of the grid (labelled
    with ``r``); open circles are the candidates under the run's full cascade.  Points are the
    models of the ``evaluation`` group (full cascade) with ±1 SE bars on both axes; a robust
    model above and right of the frontier is robust beyond what thresholding alone buys.
    """
    norms = as_list(threshold.norm.values)
    fig = new_figure(5.2 * len(norms) + 0.6, 4.6)
    axes = np.atleast_1d(fig.subplots(1, len(norms), squeeze=False)[0])
    r = np.asarray(threshold.r.values, np.float64)
    clean = np.asarray(threshold[V.CLEAN_ACCURACY].values, np.float64)
    models = [m for m in as_list(evaluation.model.values) if m in FRONTIER_MODELS]
    for ax, norm in zip(axes, norms, strict=True):
        fast = np.asarray(threshold[V.ROBUST_ACCURACY_FAST].sel(norm=norm).values, np.float64)
        full = np.asarray(threshold[V.ROBUST_ACCURACY].sel(norm=norm).values, np.float64)
        ax.plot(clean, fast, ".-", color="0.5", lw=1.2, label="threshold baseline, cheap attacks")
        for i in range(r.size):
            if round(r[i], 1) == r[i] and round(r[i] * 10) % 2 == 0:  # 0.6, 0.8, ... of the grid
                ax.annotate(f"r={r[i]:.1f}", (clean[i], fast[i]), fontsize=6, color="0.4",
                            xytext=(3, 3), textcoords="offset points")
        ok = ~np.isnan(full)
        ax.plot(clean[ok], full[ok], "o", mfc="none", color="tab:green", label="candidates, full cascade")
        for m in models:
            c = evaluation[V.CLEAN_CORRECT].sel(model=m).values
            rob = evaluation[V.ROBUST_CORRECT].sel(model=m, norm=norm).values
            color, label = FRONTIER_MODELS[m]
            ax.errorbar(c.mean(), rob.mean(), xerr=standard_error(c), yerr=standard_error(rob), fmt="s",
                        color=color, ms=6, capsize=3, label=label)
        ax.set_title(f"{NORM_LABEL.get(norm, norm)} attacks at τ")
        ax.set_xlabel("clean accuracy")
        ax.set_ylabel(f"robust accuracy at τ ({NORM_LABEL.get(norm, norm)})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    strength = evaluation.attrs.get("strength", "?")
    return finish(fig, f"Threshold baseline: clean weights, biases b_i = r ‖w_i‖/√k ({strength} evaluation, "
                       f"selected r = {format_r(threshold.attrs.get(V.SELECTED_R, float('nan')))})", caption)


def attack_strength(ds: xr.Dataset, *, caption: str = "") -> Figure:
    """Robust accuracy of the robust model at ``τ`` against converged-PGD steps, one line per
    number of starts, with ±1 SE bars: flat at the right end means the attack has converged."""
    fig = new_figure(6.0, 4.4)
    ax = fig.subplots()
    steps = np.asarray(ds.steps.values, np.float64)
    n = int(ds.attrs.get("n_examples", 0))
    for s in as_list(ds.starts.values):
        acc = np.asarray(ds[V.ACCURACY].sel(starts=s).values, np.float64)
        se = np.sqrt(acc * (1 - acc) / max(n - 1, 1))
        ax.errorbar(steps, acc, yerr=se, fmt="o-", capsize=3, label=f"{s} start{'s' if s != 1 else ''}")
    ax.set_xscale("log")
    ax.set_xticks(steps, [f"{int(v)}" for v in steps])
    ax.set_title("converged PGD on the survivors of the cheap attacks")
    ax.set_xlabel("PGD steps (cosine schedule)")
    ax.set_ylabel(f"robust accuracy at τ ({NORM_LABEL.get(ds.attrs.get('norm', 'l2'), 'ℓ₂')})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return finish(fig, f"Attack strength: robust model, {n} examples (cheap attacks first)", caption)


# --------------------------------------------------------------------------------------
# Drawers: read a run (purify.registry.FIGURES), call the figure functions above
# --------------------------------------------------------------------------------------


def draw_threshold_frontier(r: FigureInput) -> Figure | None:
    threshold, evaluation = r.group("threshold"), r.group("evaluation")
    if threshold is None or evaluation is None:  # older stores
        return None
    return threshold_frontier(threshold, evaluation, caption=r.caption)


def draw_attack_strength(r: FigureInput) -> Figure | None:
    strength = r.group("attack_strength")
    if strength is None:  # fast strength, or an older store
        return None
    return attack_strength(strength, caption=r.caption)
