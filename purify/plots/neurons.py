"""Figures that follow individual neurons: purification angles, lottery tickets, the dense
mixture and the dictionary coefficients before and after adversarial training.

Sources: the ``purification`` analysis (:func:`theta_histograms`), the ``lottery`` analysis
plus the snapshots' coefficients ``<M_j, w_i>`` (:func:`lottery_trajectories`), the
``mixture`` analysis (:func:`pure_vs_dense`) and the coefficients of two snapshots
(:func:`coefficient_heatmap`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from purify.plots.style import HIGHLIGHT, MODEL_COLORS, as_list, finish, mark_phases, new_figure

if TYPE_CHECKING:
    from purify.plots.source import FigureInput

# --------------------------------------------------------------------------------------
# θ histograms (Figure 2)
# --------------------------------------------------------------------------------------

_THETA_PANELS = (
    ("theta_init_clean", r"$\theta(w_i^0, w_i)$: init vs clean", "neurons", MODEL_COLORS["clean"]),
    ("theta_init_robust", r"$\theta(w_i^0, w'_i)$: init vs robust", "neurons", MODEL_COLORS["robust"]),
    ("theta_clean_robust", r"$\theta(w_i, w'_i)$: clean vs robust", "neurons", "tab:purple"),
)
_PAIR_SERIES = (
    ("theta_pairs_clean", r"clean $\theta(w_i, w_j)$", MODEL_COLORS["clean"]),
    ("theta_pairs_robust", r"robust $\theta(w'_i, w'_j)$", MODEL_COLORS["robust"]),
    ("theta_pairs_init", r"init $\theta(w_i^0, w_j^0)$", MODEL_COLORS["init"]),
)


def theta_histograms(purif: xr.Dataset, *, bins: int = 40, caption: str = "") -> Figure:
    """Histograms of the purification angles of §1 / Figure 2, ``θ(u, v) = |<u,v>|/(‖u‖‖v‖)``.

    Panels: ``θ(w⁰_i, w_i)``, ``θ(w⁰_i, w'_i)``, ``θ(w_i, w'_i)`` over neurons and
    ``θ(w_i, w_j)``, ``i ≠ j``, over the analysis' neuron pairs (clean, robust and, as the
    random-direction reference, init).  Each panel marks the median.  The paper's picture:
    the first two small (neurons leave their init), the third close to 1 (adversarial
    training changes features only locally), the pairs small (near-orthogonal neurons).

    Parameters
    ----------
    purif : the ``purification`` analysis dataset (``theta_*(neuron)``, ``theta_pairs_*(pair)``,
        optionally ``relative_change(step)``).
    bins : number of bins on ``[0, 1]``.
    caption : the caption line.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    fig = new_figure(11.0, 7.6)
    axes = fig.subplots(2, 2).ravel()
    for ax, (var, title, unit, color) in zip(axes[:3], _THETA_PANELS, strict=True):
        v = np.asarray(purif[var].values, np.float64)
        ax.hist(v, bins=edges, color=color, alpha=0.75, label=f"{v.size} {unit}")
        med = float(np.median(v)) if v.size else float("nan")
        ax.axvline(med, color="black", lw=1.3, ls="--", label=f"median {med:.3f}")
        ax.set_title(title)
        ax.set_ylabel(f"{unit} (count)")
    if "relative_change" in purif:
        rel = np.asarray(purif.relative_change.values, np.float64)
        rel = rel[np.isfinite(rel)]
        if rel.size:
            axes[2].set_title(axes[2].get_title() + "\n(" + r"$\Sigma_i\|w_i - w'_i\|^2 / \Sigma_i\|w_i\|^2$" + f" = {rel[-1]:.3g} at the end)", fontsize=10)
    ax = axes[3]
    for var, label, color in _PAIR_SERIES:
        if var in purif:
            v = np.asarray(purif[var].values, np.float64)
            med = float(np.median(v)) if v.size else float("nan")
            ax.hist(v, bins=edges, histtype="step", lw=1.6, color=color, label=f"{label}, median {med:.3f}")
    ax.set_title(r"$\theta(w_i, w_j)$, $i \neq j$: pairs of neurons")
    ax.set_ylabel("neuron pairs (count)")
    for ax in axes:
        ax.set_xlabel(r"$\theta = |\cos|$ (dimensionless)")
        ax.set_xlim(0.0, 1.0)
        ax.legend(fontsize=8)
    return finish(fig, "Feature purification: how far neurons move (θ histograms, Figure 2 analogue)", caption)


# --------------------------------------------------------------------------------------
# lottery tickets (Figure 8)
# --------------------------------------------------------------------------------------


def lottery_trajectories(
    coef: xr.DataArray,
    highlight: Mapping[int, int],
    *,
    clean_end: int | None = None,
    n_features: int = 5,
    note: str = "",
    caption: str = "",
) -> Figure:
    """``<M_j, w_i>²`` over training for a few neurons, their lottery feature highlighted
    (§6.1, Figure 8 analogue).

    For each neuron ``i`` (a panel) the ``n_features`` features with the largest
    ``max_t <M_j, w_i(t)>²`` are drawn in grey and the highlighted feature ``highlight[i]``
    (the one the neuron is surely lucky for, Definition B.1) thick and coloured, so the
    lottery-ticket claim — the lucky feature grows fastest and wins — reads off directly.
    The x axis is logarithmic from the first positive snapshot step (step 0, the init, is left
    out; the first snapshot is close to it).

    Parameters
    ----------
    coef : ``(step, neuron, feature)`` coefficients ``<M_j, w_i>`` of the neurons to draw;
        coordinates ``step``, ``neuron`` (neuron ids) and ``feature`` (feature ids).
    highlight : neuron id → feature id to highlight (every neuron of ``coef``).
    clean_end : step of the end of clean training (dotted line; adversarial phase shaded).
    n_features : grey features per neuron.
    note : appended to the title (e.g. how the neurons were chosen).
    caption : the caption line.
    """
    steps = np.asarray(coef.step.values, np.float64)
    neurons = [int(n) for n in coef.neuron.values]
    features = np.asarray(coef.feature.values)
    keep = steps > 0
    x = steps[keep]
    ncols = min(3, max(1, len(neurons)))
    nrows = max(1, -(-len(neurons) // ncols))
    fig = new_figure(4.6 * ncols, 3.4 * nrows + 0.8)
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, i in zip(axes, neurons, strict=False):
        sq = np.asarray(coef.sel(neuron=i).values, np.float64) ** 2  # (step, feature)
        lucky = int(highlight[i])
        order = np.argsort(-sq.max(axis=0), kind="stable")
        # The lottery claim is about the end of clean training (Theorem C.2), so "wins" is
        # judged there when the clean end is a snapshot, else at the last snapshot.
        at = int(np.flatnonzero(steps == clean_end)[0]) if clean_end is not None and (steps == clean_end).any() else -1
        winner_end = int(features[np.argmax(sq[at])]) if sq.size else -1
        grey = [int(j) for j in order if int(features[j]) != lucky][:n_features]
        for n, j in enumerate(grey):
            y = np.where(sq[keep, j] > 0, sq[keep, j], np.nan)
            ax.plot(x, y, "-", color="0.6", lw=1.0,
                    label=f"top-{n_features} other features" if n == 0 else None)
        jl = int(np.flatnonzero(features == lucky)[0])
        y = np.where(sq[keep, jl] > 0, sq[keep, jl], np.nan)
        ax.plot(x, y, "o-", color=HIGHLIGHT, lw=2.6, ms=3.5, label=f"lucky feature j={lucky}")
        if winner_end != lucky:
            jw = int(np.flatnonzero(features == winner_end)[0])
            y = np.where(sq[keep, jw] > 0, sq[keep, jw], np.nan)
            ax.plot(x, y, "--", color=MODEL_COLORS["robust"], lw=1.6, label=f"winner j={winner_end}")
        if x.size:
            mark_phases(ax, clean_end, float(x.max()))
        ax.set_xscale("log")
        ax.set_yscale("log")
        won = "wins" if winner_end == lucky else "loses"
        when = "at clean end" if at >= 0 else "at the end"
        ax.set_title(f"neuron {i}: lucky for j={lucky}, {won} {when}", fontsize=10)
        ax.set_xlabel("step (log)")
        ax.set_ylabel(r"$\langle M_j, w_i\rangle^2$ (squared input units)")
        ax.legend(fontsize=7, loc="upper left")
    for ax in axes[len(neurons):]:
        ax.set_visible(False)
    title = r"Lottery tickets: $\langle M_j, w_i\rangle^2$ over training"
    title += ", the lucky feature highlighted (Figure 8 analogue)"
    return finish(fig, title + (f"\n{note}" if note else ""), caption)


# --------------------------------------------------------------------------------------
# pure vs dense (Figure 9)
# --------------------------------------------------------------------------------------


def _quartiles(values: xr.DataArray, active: xr.DataArray | None) -> tuple[np.ndarray, np.ndarray]:
    """25th and 75th percentile over (active) neurons at every step."""
    v = np.asarray(values.values, np.float64)
    if active is not None:
        v = np.where(np.asarray(active.values, bool), v, np.nan)
    v = np.where(np.isfinite(v), v, np.nan)
    out = np.full((2, v.shape[0]), np.nan)
    for s in range(v.shape[0]):
        row = v[s][np.isfinite(v[s])]
        if row.size:
            out[:, s] = np.percentile(row, [25, 75])
    return out[0], out[1]


def pure_vs_dense(mix: xr.Dataset, *, clean_end: int | None = None, caption: str = "") -> Figure:
    """Pure part vs dense mixture of the neurons across clean then adversarial training
    (Theorem 5.2, eq. (6.1); Figure 9 analogue).

    Panels, all medians over active neurons with the inter-quartile range shaded: the norms
    ``‖Σ_{j∈N_i} c_ij M_j‖`` (pure) and ``‖Σ_{j∉N_i} c_ij M_j‖`` (dense); their ratio; and the
    cosine of the dense part with ``M w*`` on the same coordinates.  Theorem 5.2 predicts a dense
    part aligned with ``M w*`` after clean training; Theorem 5.3 predicts that adversarial
    training shrinks it.

    Parameters
    ----------
    mix : the ``mixture`` analysis dataset (``median_pure_norm(step)``,
        ``median_dense_norm(step)``, ``median_dense_to_pure(step)``,
        ``median_dense_cos_mwstar(step)``; per-neuron ``pure_norm``, ``dense_norm``,
        ``dense_to_pure``, ``dense_cos_mwstar``, ``active`` over ``(step, neuron)`` for the bands).
    clean_end : end of clean training; default ``mix.attrs["clean_end"]``.
    caption : the caption line.
    """
    if clean_end is None and "clean_end" in mix.attrs:
        clean_end = int(mix.attrs["clean_end"])
    steps = np.asarray(mix.step.values, np.float64)
    active = mix["active"] if "active" in mix else None
    fig = new_figure(14.0, 4.4)
    axes = fig.subplots(1, 3)
    panels = (
        (axes[0], (("pure_norm", r"pure part $\|\Sigma_{j\in N_i} c_{ij} M_j\|$", HIGHLIGHT),
                   ("dense_norm", r"dense part $\|\Sigma_{j\notin N_i} c_{ij} M_j\|$", "tab:blue")),
         "norm (input units)", "pure and dense parts of each neuron", True),
        (axes[1], (("dense_to_pure", "dense / pure", "tab:purple"),), "ratio (dimensionless)",
         "dense-to-pure ratio", False),
        (axes[2], (("dense_cos_mwstar", r"cos(dense part, $M w^*$)", "tab:green"),), "cosine (dimensionless)",
         r"alignment of the dense part with $M w^*$", False),
    )
    for ax, series, ylabel, title, log in panels:
        for var, label, color in series:
            med = np.asarray(mix[f"median_{var}"].values, np.float64)
            ax.plot(steps, med, "o-", color=color, ms=4, lw=1.8, label=f"median {label}")
            if var in mix:
                lo, hi = _quartiles(mix[var], active)
                ax.fill_between(steps, lo, hi, color=color, alpha=0.18, lw=0, label="25–75% of neurons")
        mark_phases(ax, clean_end, float(steps.max()) if steps.size else None)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=8)
    rule = mix.attrs.get("pure_fraction")
    sub = (r"  ($N_i$: $|c_{ij}| \geq$" + f" {rule:.3g}" + r"$\,\max_j |c_{ij}|$)") if isinstance(rule, float) else ""
    return finish(fig, "Pure features vs dense mixture across clean then adversarial training "
                       "(Figure 9 analogue)" + sub, caption)


# --------------------------------------------------------------------------------------
# coefficient heatmap
# --------------------------------------------------------------------------------------


def heatmap_order(before: np.ndarray, after: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column order of :func:`coefficient_heatmap`.

    Rows (neurons) are sorted by their largest ``|before|`` feature.  Columns are the union of
    each neuron's ``top`` largest ``max(|before|, |after|)`` features: first the rows' largest
    features in row order — so pure neurons draw a bright diagonal — then the other features
    of the union by decreasing total magnitude over the rows.

    Returns
    -------
    rows : (n,) indices into the neurons; cols : indices into the features.
    """
    mag = np.maximum(np.abs(before), np.abs(after))
    first = np.argmax(np.abs(before), axis=1)
    rows = np.lexsort((np.arange(len(first)), first))
    cols: list[int] = []
    for r in rows:
        if int(first[r]) not in cols:
            cols.append(int(first[r]))
    union = {int(j) for r in rows for j in np.argsort(-mag[r], kind="stable")[:top]} - set(cols)
    rest = sorted(union, key=lambda j: (-float(mag[rows, j].sum()), j))
    return rows, np.asarray(cols + rest, np.int64)


def coefficient_heatmap(
    before: xr.DataArray,
    after: xr.DataArray,
    *,
    top: int = 10,
    before_label: str = "before adversarial training",
    after_label: str = "after adversarial training",
    caption: str = "",
) -> Figure:
    """``|<M_j, w_i>|`` for a sample of neurons before and after adversarial training.

    Two panels sharing one colour scale; columns are the union of the sampled neurons' ``top``
    features (:func:`heatmap_order`).  A neuron that is a pure feature plus a dense mixture
    (Theorem 5.2) shows one bright cell and a faint row; purification (Theorem 5.3) dims the
    faint part.

    Parameters
    ----------
    before, after : ``(neuron, feature)`` coefficients ``<M_j, w_i>`` of the same neurons (with
        ``neuron`` and ``feature`` id coordinates).
    top : features per neuron in the union of columns.
    before_label, after_label : panel titles.
    caption : the caption line.
    """
    b = np.abs(np.asarray(before.values, np.float64))
    a = np.abs(np.asarray(after.transpose(*before.dims).values, np.float64))
    rows, cols = heatmap_order(b, a, top)
    neurons = np.asarray(before.neuron.values)[rows]
    features = np.asarray(before.feature.values)[cols]
    vmax = float(max(b[np.ix_(rows, cols)].max(initial=0), a[np.ix_(rows, cols)].max(initial=0)))
    norm = Normalize(vmin=0.0, vmax=vmax if vmax > 0 else 1.0)
    width = min(20.0, 5.0 + 0.09 * len(cols) * 2)
    fig = new_figure(width, 0.22 * len(rows) + 2.4)
    axes = fig.subplots(1, 2)
    image = None
    for ax, mat, label in ((axes[0], b, before_label), (axes[1], a, after_label)):
        image = ax.imshow(mat[np.ix_(rows, cols)], aspect="auto", cmap="magma", norm=norm,
                          interpolation="nearest")
        ax.set_title(label)
        ax.set_xlabel(f"{len(cols)} features j: each neuron's largest first, then the rest of their top {top}")
        ax.set_ylabel("sampled neuron i")
        ax.set_yticks(range(len(rows)), [str(n) for n in neurons], fontsize=6)
        # Feature ids as tick labels while they are legible; column positions would mislead.
        if len(cols) <= 60:
            ax.set_xticks(range(len(cols)), [str(f) for f in features], fontsize=5, rotation=90)
        else:
            ax.set_xticks([])
    cbar = fig.colorbar(image, ax=list(axes), shrink=0.9)
    cbar.set_label(r"$|\langle M_j, w_i\rangle|$ (input units)")
    return finish(fig, "Dictionary coefficients of sampled neurons before and after adversarial training",
                  caption)


def as_coefficients(C: np.ndarray, neurons: np.ndarray, steps: np.ndarray | None = None) -> xr.DataArray:
    """Wrap coefficients ``(neuron, feature)`` or ``(step, neuron, feature)`` as the DataArray the
    figure functions take."""
    C = np.asarray(C)
    feature = np.arange(C.shape[-1])
    if C.ndim == 2:
        return xr.DataArray(C, dims=("neuron", "feature"), coords={"neuron": neurons, "feature": feature})
    return xr.DataArray(C, dims=("step", "neuron", "feature"),
                        coords={"step": as_list(steps), "neuron": neurons, "feature": feature})


# --------------------------------------------------------------------------------------
# Drawers: read a run (purify.registry.FIGURES), call the figure functions above
# --------------------------------------------------------------------------------------


#: Neurons in the lottery-trajectory and heatmap figures.
N_LOTTERY_NEURONS = 6
N_HEATMAP_NEURONS = 20


def draw_coefficient_heatmap(r: FigureInput) -> Figure | None:
    d = r.data
    m = d.config.net.width
    pick = np.sort(r.numpy_rng("plots/coefficient_heatmap").choice(m, size=min(N_HEATMAP_NEURONS, m),
                                                                    replace=False))
    M = d.M.astype(np.float64)
    # Only the sampled rows: W M for all m neurons costs m·d·D per step (2·10⁹ at the default size).
    before = as_coefficients(d.W(d.clean_end)[pick].astype(np.float64) @ M, pick)
    after = as_coefficients(d.W(d.final)[pick].astype(np.float64) @ M, pick)
    return coefficient_heatmap(before, after, before_label=f"clean model (step {d.clean_end})",
                               after_label=f"robust model (step {d.final})", caption=r.caption)


def draw_theta_histograms(r: FigureInput) -> Figure | None:
    return theta_histograms(r.analysis("purification"), caption=r.caption)


def draw_lottery_trajectories(r: FigureInput) -> Figure | None:
    d, lot = r.data, r.analysis("lottery")
    lucky = np.asarray(lot.lucky_feature.values)
    sure = np.flatnonzero(lucky >= 0)
    if sure.size:
        # A seeded random sample, not the best-looking neurons: the figure should be typical.
        chosen = np.sort(r.numpy_rng("plots/lottery_trajectories").choice(
            sure, size=min(N_LOTTERY_NEURONS, sure.size), replace=False))
        highlight = {int(i): int(lucky[i]) for i in chosen}
        note = f"{chosen.size} of {sure.size} surely lucky neurons (S_sure, Def. B.1), drawn at random"
    else:
        score = np.asarray(lot.score.values)
        chosen = np.sort(np.argsort(-score.max(axis=1), kind="stable")[:N_LOTTERY_NEURONS])
        highlight = {int(i): int(score[i].argmax()) for i in chosen}
        note = (f"no surely lucky neuron: the {chosen.size} neurons with the highest init score, "
                "their highest-score feature highlighted")
    steps, M = d.steps, d.M.astype(np.float64)
    C = np.stack([d.W(int(s))[chosen].astype(np.float64) @ M for s in steps])
    return lottery_trajectories(as_coefficients(C, chosen, steps), highlight, clean_end=d.clean_end,
                                note=note, caption=r.caption)


def draw_pure_vs_dense(r: FigureInput) -> Figure | None:
    return pure_vs_dense(r.analysis("mixture"), clean_end=r.data.clean_end, caption=r.caption)
