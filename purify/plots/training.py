"""Figure of the training record: loss and accuracy per phase.

It reads only the run's root group: ``loss(iteration)``,
``train_accuracy(iteration)`` with coordinate ``iteration_phase``; ``clean_accuracy(step)``,
``strongest_accuracy(step, norm, radius)`` with coordinates ``phase(step)`` and
``tau(norm, radius)``; and the ideal classifier's ``ideal_clean_accuracy``,
``ideal_strongest_accuracy(norm, radius)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from purify import schema as V
from purify.plots.style import MODEL_COLORS, NORM_LABEL, as_list, finish, labels, mark_phases, new_figure

if TYPE_CHECKING:
    from purify.plots.source import FigureInput


def clean_end_of(root: xr.Dataset) -> int | None:
    """Last step of clean training, read from the ``phase`` coordinate of ``step`` (or of
    ``iteration``); ``None`` when the record has no clean phase."""
    for dim, phase in ((V.STEP, V.PHASE), (V.ITERATION, V.ITERATION_PHASE)):
        if phase in root.coords:
            is_clean = labels(root[phase].values) == "clean"
            if is_clean.any():
                return int(np.asarray(root[dim].values)[is_clean].max())
    return None


def training_curves(root: xr.Dataset, *, norm: str = "l2", radius: float = 1.0, caption: str = "") -> Figure:
    """Loss and training accuracy per iteration, held-out clean and robust accuracy per step.

    The clean phase (Algorithm 1 of the paper) and the adversarial phase (Algorithm 2, §4.2)
    are separated by a dotted line and the adversarial phase is shaded.  The training loss and
    accuracy of the adversarial phase are on the perturbed batch, which is why they drop at
    the boundary.  The third panel is the held-out clean accuracy and the strongest-attacker
    accuracy at ``norm`` and radius multiple ``radius`` (the run's ``τ`` at 1).

    Parameters
    ----------
    root : the run's root group (see the module docstring for the variables read).
    norm, radius : which robust accuracy to show (``radius`` is a multiple of ``τ``).
    caption : the caption line (:func:`purify.plots.style.caption`).
    """
    clean_end = clean_end_of(root)
    it = np.asarray(root.iteration.values)
    it_phase = (labels(root[V.ITERATION_PHASE].values) if V.ITERATION_PHASE in root.coords
                else np.full(it.shape, "clean", dtype=object))
    steps = np.asarray(root.step.values)
    x_max = float(max(it.max(initial=0), steps.max(initial=0)))

    fig = new_figure(14.0, 4.2)
    ax_loss, ax_acc, ax_eval = fig.subplots(1, 3)
    phase_style = {"clean": ("clean training (clean batch)", MODEL_COLORS["clean"]),
                   "adversarial": ("adversarial training (perturbed batch)", MODEL_COLORS["robust"])}
    for ax, var, ylabel in ((ax_loss, V.LOSS, "training loss (logistic)"),
                            (ax_acc, V.TRAIN_ACCURACY, "training accuracy")):
        values = np.asarray(root[var].values, np.float64)
        for phase, (label, color) in phase_style.items():
            sel = it_phase == phase
            if sel.any():
                ax.plot(it[sel], values[sel], "o-", ms=3, color=color, label=label)
        mark_phases(ax, clean_end, x_max)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    ax_loss.set_title("training loss per phase")
    ax_acc.set_title("training accuracy per phase")
    ax_acc.set_ylim(-0.02, 1.02)

    clean = np.asarray(root[V.CLEAN_ACCURACY].values, np.float64)
    ax_eval.plot(steps, clean, "o-", ms=4, color=MODEL_COLORS["clean"], label="clean accuracy")
    title = "held-out accuracy"
    if V.STRONGEST_ACCURACY in root and norm in as_list(root.norm.values):
        radii = np.asarray(root.radius.values, np.float64)
        r = float(radii[np.argmin(np.abs(radii - radius))])
        tau = float(root[V.TAU].sel(norm=norm, radius=r)) if V.TAU in root.coords else float("nan")
        robust = np.asarray(root[V.STRONGEST_ACCURACY].sel(norm=norm, radius=r).values, np.float64)
        ax_eval.plot(steps, robust, "s-", ms=4, color=MODEL_COLORS["robust"],
                     label=f"robust accuracy, strongest {NORM_LABEL.get(norm, norm)} attack, τ={tau:.3g}")
        if V.IDEAL_STRONGEST_ACCURACY in root:
            ideal = float(root[V.IDEAL_STRONGEST_ACCURACY].sel(norm=norm, radius=r))
            ax_eval.axhline(ideal, color=MODEL_COLORS["ideal"], ls="--", lw=1,
                            label="ideal model, robust (reference)")
        title += f" (radius {r:g}·τ)"
    if V.IDEAL_CLEAN_ACCURACY in root:
        ax_eval.axhline(float(root[V.IDEAL_CLEAN_ACCURACY]), color=MODEL_COLORS["ideal"], ls=(0, (1, 1)), lw=1,
                        label="ideal model, clean (reference)")
    mark_phases(ax_eval, clean_end, x_max)
    ax_eval.set_ylim(-0.02, 1.02)
    ax_eval.set_xlabel("training step")
    ax_eval.set_ylabel("accuracy (held-out)")
    ax_eval.set_title(title)
    ax_eval.legend(fontsize=8, loc="best")
    return finish(fig, "Training curves: clean training, then adversarial training (shaded)", caption)


# --------------------------------------------------------------------------------------
# Drawer: read a run (purify.registry.FIGURES), call the figure function above
# --------------------------------------------------------------------------------------


def draw_training_curves(r: FigureInput) -> Figure | None:
    return training_curves(r.data.root.load(), caption=r.caption)
