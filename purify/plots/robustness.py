"""Figures of robustness: accuracy against the radius τ, the anatomy of the perturbations, and
the direction vs norm control of adversarial training.

:func:`robust_vs_tau` reads the run's root group (``clean_accuracy(step)``,
``robust_accuracy(step, norm, attack, radius)``, ``strongest_accuracy(step, norm, radius)``,
coordinate ``tau(norm, radius)``, ``ideal_*``); :func:`perturbation_density` the
``perturbations`` analysis; :func:`direction_norm_control` the ``purification`` analysis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from purify import schema as V
from purify.plots.style import MODEL_COLORS, NORM_LABEL, as_list, finish, new_figure
from purify.plots.training import clean_end_of

if TYPE_CHECKING:
    from purify.plots.source import FigureInput

#: Line style per attacker in :func:`robust_vs_tau`; the strongest (per-example worst) is solid.
ATTACK_STYLES = {"fgm": (0, (1, 1.5)), "pgd": (0, (5, 2)), "dense": (0, (7, 1.5, 1.5, 1.5)),
                 "noise": (0, (1, 4))}
_EXTRA_STYLES = [(0, (3, 1)), (0, (1, 3)), (0, (5, 1, 1, 1))]


def attack_styles(attacks: list[str]) -> dict:
    """Line style of each attacker name (known ones fixed, others from a spare list)."""
    styles = {a: ATTACK_STYLES[a] for a in attacks if a in ATTACK_STYLES}
    spare = iter(_EXTRA_STYLES * (1 + len(attacks)))
    for a in attacks:
        styles.setdefault(a, next(spare))
    return styles


def robust_vs_tau(
    root: xr.Dataset,
    *,
    clean_step: int | None = None,
    robust_step: int | None = None,
    caption: str = "",
) -> Figure:
    """Robust accuracy against the attack radius ``τ``, one panel per norm (Allen-Zhu & Li §4.2, §6.2).

    Colour is the model (clean model at ``clean_step``, robust model at ``robust_step``,
    the ideal thresholded classifier of Allen-Zhu & Li §3 dashed), line style the attacker; the thick
    solid line is the per-example strongest attacker.  Each curve starts at ``τ = 0`` with the
    model's clean accuracy.

    Parameters
    ----------
    root : the run's root group.
    clean_step : step of the clean model; default the last step of the clean phase.
    robust_step : step of the robust model; default the last step.
    caption : the caption line.
    """
    steps = np.asarray(root.step.values)
    clean_step = clean_end_of(root) if clean_step is None else clean_step
    robust_step = int(steps[-1]) if robust_step is None else robust_step
    norms = as_list(root.norm.values)
    attacks = as_list(root.attack.values)
    styles = attack_styles(attacks)
    models = []
    if clean_step is not None:
        models.append(("clean", f"clean model (step {clean_step})", clean_step))
    if robust_step != clean_step:
        models.append(("robust", f"robust model (step {robust_step})", robust_step))

    fig = new_figure(5.0 * len(norms) + 2.6, 4.4)
    axes = np.atleast_1d(fig.subplots(1, len(norms), squeeze=False)[0])
    for ax, norm in zip(axes, norms, strict=True):
        tau = np.concatenate([[0.0], np.asarray(root[V.TAU].sel(norm=norm).values, np.float64)])
        for key, _, step in models:
            color = MODEL_COLORS[key]
            clean = float(root[V.CLEAN_ACCURACY].sel(step=step))
            for a in attacks:
                acc = np.asarray(root[V.ROBUST_ACCURACY].sel(step=step, norm=norm, attack=a).values, np.float64)
                ax.plot(tau, np.concatenate([[clean], acc]), color=color, ls=styles[a], lw=1.2)
            best = np.asarray(root[V.STRONGEST_ACCURACY].sel(step=step, norm=norm).values, np.float64)
            ax.plot(tau, np.concatenate([[clean], best]), "o-", color=color, lw=2.2, ms=4)
        if V.IDEAL_STRONGEST_ACCURACY in root:
            ideal = np.asarray(root[V.IDEAL_STRONGEST_ACCURACY].sel(norm=norm).values, np.float64)
            ax.plot(tau, np.concatenate([[float(root[V.IDEAL_CLEAN_ACCURACY])], ideal]), "--",
                    color=MODEL_COLORS["ideal"], lw=1.8)
        run_tau = float(root[V.TAU].sel(norm=norm, radius=1.0)) if 1.0 in as_list(root.radius.values) else None
        if run_tau is not None:
            ax.axvline(run_tau, color="0.6", lw=0.8, ls=":")
        label = NORM_LABEL.get(norm, norm)
        ax.set_xlabel(f"{label} radius τ (input units)")
        ax.set_ylabel("accuracy under attack (held-out)")
        ax.set_title(f"{label} attacks" + (f" (run's τ = {run_tau:.3g}, dotted)" if run_tau else ""))
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(left=0.0)

    handles = [Line2D([], [], color=MODEL_COLORS[key], lw=2.2, label=label) for key, label, _ in models]
    if V.IDEAL_STRONGEST_ACCURACY in root:
        handles.append(Line2D([], [], color=MODEL_COLORS["ideal"], ls="--", lw=1.8,
                              label="ideal model, strongest"))
    handles.append(Line2D([], [], color="0.2", lw=2.2, marker="o", ms=4, label="strongest (per example)"))
    handles += [Line2D([], [], color="0.2", ls=styles[a], lw=1.2, label=f"attack: {a}") for a in attacks]
    fig.legend(handles=handles, loc="outside right center", fontsize=8, title="colour: model, style: attack",
               title_fontsize=8)
    return finish(fig, "Robust accuracy vs attack radius τ: clean vs adversarially trained model", caption)


def perturbation_density(pert: xr.Dataset, *, caption: str = "") -> Figure:
    """How dense the attacks' perturbations are in the dictionary basis, clean vs robust model
    (§5.1 "Density of adversarial perturbation", Figure 7).

    Three panels of per-example distributions from the ``perturbations`` analysis
    (variables ``participation_ratio``, ``topk_mass``, ``cos_mwstar`` over
    ``(model, attack, example)``): colour is the model, line style the attacker.  The grey
    line marks the value of ``M w*`` itself, the fully dense direction of Theorem 5.1c.

    Parameters
    ----------
    pert : the ``perturbations`` analysis dataset.
    caption : the caption line.
    """
    models = as_list(pert.model.values)
    attacks = as_list(pert.attack.values)
    styles = attack_styles(attacks)
    k = pert.attrs.get("k", "k")
    panels = [
        ("participation_ratio", r"participation ratio $(\sum c^2)^2 / (D \sum c^4)$  [1 dense, 1/D one atom]",
         "participation_ratio_mwstar", "sparsity of δ in the dictionary basis"),
        ("topk_mass", r"fraction of $\|c\|^2$ in the top" + f" k={k} atoms", "topk_mass_mwstar",
         "mass in the top-k atoms"),
        ("cos_mwstar", r"$|\cos(\delta, M w^*)|$", None, r"alignment with the dense direction $M w^*$"),
    ]
    fig = new_figure(14.0, 4.3)
    axes = fig.subplots(1, 3)
    for ax, (var, xlabel, ref, title) in zip(axes, panels, strict=True):
        values = np.asarray(pert[var].values, np.float64)
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if ref is not None and ref in pert:
            lo, hi = min(lo, float(pert[ref])), max(hi, float(pert[ref]))
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 31)
        for mi, model in enumerate(models):
            for ai, attack in enumerate(attacks):
                v = values[mi, ai]
                v = v[np.isfinite(v)]
                if v.size:
                    ax.hist(v, bins=bins, histtype="step", lw=1.6, ls=styles[attack],
                            color=MODEL_COLORS.get(str(model), None),
                            label=f"{model} model, {attack} (mean {v.mean():.3g})")
        if ref is not None and ref in pert:
            ax.axvline(float(pert[ref]), color="0.5", lw=1.5, label=r"$M w^*$ itself")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("perturbations (count)")
        ax.set_title(title)
        ax.legend(fontsize=7)
    radius, tau = pert.attrs.get("radius"), pert.attrs.get("tau")
    at = f" (ℓ₂, radius {radius:g}·τ = {tau:.3g})" if radius is not None and tau is not None else ""
    return finish(fig, "Anatomy of adversarial perturbations: clean vs robust model" + at, caption)


#: Colour of each network of the direction vs norm control (``purification`` analysis).
VARIANT_STYLE = {
    "clean": (MODEL_COLORS["clean"], r"clean weights $w_i$"),
    "robust": (MODEL_COLORS["robust"], r"robust weights $w'_i$"),
    "clean_dir_robust_norm": ("tab:purple", "clean directions, robust norms"),
    "robust_dir_clean_norm": ("tab:green", "robust directions, clean norms"),
}


def direction_norm_control(purif: xr.Dataset, *, caption: str = "") -> Figure:
    """Does adversarial training buy robustness through directions or through norms?

    From the ``purification`` analysis' control: the four networks that
    share the final frozen biases and differ in their weights (``control_accuracy(variant,
    radius)`` with coordinate ``tau(radius)``, ``control_clean_accuracy(variant)``) against the
    ℓ₂ radius, and the accuracy gain over the clean weights at the control radius
    (``gain_total``, ``gain_from_norm``, ``gain_from_direction``).

    Parameters
    ----------
    purif : the ``purification`` analysis dataset with its control variables.
    caption : the caption line.
    """
    variants = as_list(purif.variant.values)
    tau = np.concatenate([[0.0], np.asarray(purif.tau.values, np.float64)])
    fig = new_figure(11.0, 4.3)
    ax_tau, ax_gain = fig.subplots(1, 2, width_ratios=(3, 2))
    for v in variants:
        color, label = VARIANT_STYLE.get(v, (None, v))
        acc = np.asarray(purif.control_accuracy.sel(variant=v).values, np.float64)
        clean = float(purif.control_clean_accuracy.sel(variant=v))
        ax_tau.plot(tau, np.concatenate([[clean], acc]), "o-", ms=4, lw=1.8, color=color, label=label)
    r1 = purif.attrs.get("control_radius_multiple")
    if r1 is not None:
        ax_tau.axvline(float(purif.tau.sel(radius=r1)), color="0.6", lw=0.8, ls=":")
    ax_tau.set_xlabel("ℓ₂ radius τ (input units)")
    ax_tau.set_ylabel("accuracy, strongest ℓ₂ attack (held-out)")
    ax_tau.set_title("all variants use the final (frozen) biases")
    ax_tau.set_ylim(-0.02, 1.02)
    ax_tau.set_xlim(left=0.0)
    ax_tau.legend(fontsize=8)

    names = ("gain_total", "gain_from_norm", "gain_from_direction")
    labels = ("robust\n(total)", "robust norms\nonly", "robust directions\nonly")
    colors = (MODEL_COLORS["robust"], VARIANT_STYLE["clean_dir_robust_norm"][0],
              VARIANT_STYLE["robust_dir_clean_norm"][0])
    gains = [float(purif[n]) if n in purif else float("nan") for n in names]
    bars = ax_gain.bar(range(3), gains, color=colors)
    for bar, g in zip(bars, gains, strict=True):
        ax_gain.annotate(f"{g:+.3f}", (bar.get_x() + bar.get_width() / 2, g), ha="center",
                         va="bottom" if g >= 0 else "top", fontsize=8)
    ax_gain.axhline(0.0, color="0.3", lw=0.8)
    ax_gain.set_xticks(range(3), labels, fontsize=8)
    ax_gain.set_xlabel("weights changed from the clean model")
    ax_gain.set_ylabel("accuracy gain over clean weights")
    at = f" at τ = {float(purif.tau.sel(radius=r1)):.3g}" if r1 is not None else ""
    ax_gain.set_title("robust-accuracy gain" + at)
    return finish(fig, "Direction vs norm control: what adversarial training's robustness comes from", caption)


# --------------------------------------------------------------------------------------
# Drawers: read a run (purify.registry.FIGURES), call the figure functions above
# --------------------------------------------------------------------------------------


def draw_robust_vs_tau(r: FigureInput) -> Figure | None:
    return robust_vs_tau(r.data.root.load(), clean_step=r.data.clean_end, robust_step=r.data.final,
                         caption=r.caption)


def draw_direction_norm_control(r: FigureInput) -> Figure | None:
    ds = r.analysis("purification")
    if "control_accuracy" not in ds:  # the analysis was run with control=False
        return None
    return direction_norm_control(ds, caption=r.caption)


def draw_perturbation_density(r: FigureInput) -> Figure | None:
    return perturbation_density(r.analysis("perturbations"), caption=r.caption)
