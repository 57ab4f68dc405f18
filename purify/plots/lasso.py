"""Lasso reconstruction curves: error against sparsity per dictionary (§8.3, Figure 12).

Reads the ``lasso`` analysis (``purify/analysis/lasso.py``): dims ``dictionary`` (random /
clean / robust / true features), ``target`` (``input``, ``clean_delta``, ``robust_delta``) and
the path dim ``alpha_index``; ``error`` (mean relative error ``‖Wy − x‖²/‖x‖²``) and
``n_nonzero`` (mean atoms used) over those three dims, NaN after a path stopped early;
``span_residual(dictionary, target)``, the least-squares error on the whole span (Remark 8.2);
``atoms_at_error(dictionary, target)`` with the attribute ``reference_error``.  The variables
are looked up by name (:func:`curve_variables`), with a few alternative names accepted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from purify.plots.style import MODEL_COLORS, as_list, finish, new_figure

if TYPE_CHECKING:
    from purify.plots.source import FigureInput

#: Names tried, in order, for the variables of the curves and of the span regression.
ERROR_NAMES = ("error", "reconstruction_error", "relative_error", "rel_error", "residual")
SPARSITY_NAMES = ("sparsity", "n_nonzero", "nonzeros", "n_atoms", "support_size", "l0")
SPAN_NAMES = ("span_residual", "span_error", "regression_error", "projection_error")

_DICT_STYLE = {"random": (MODEL_COLORS["random"], "s"), "init": (MODEL_COLORS["random"], "s"),
               "clean": (MODEL_COLORS["clean"], "o"), "robust": (MODEL_COLORS["robust"], "^"),
               "true": (MODEL_COLORS["true"], "D")}
TARGET_TITLES = {"input": "held-out inputs x", "clean_delta": "perturbations of the clean model",
                 "robust_delta": "perturbations of the robust model"}


def _first(ds: xr.Dataset, names: tuple[str, ...], dims: set[str], ndim: int) -> str | None:
    """The first of ``names`` over ``dims`` plus ``ndim − len(dims)`` others; failing an exact
    name, the first such variable whose name contains one of ``names``."""
    fits = [v for v in ds.data_vars if dims <= set(ds[v].dims) and ds[v].ndim == ndim]
    for name in names:
        if name in fits:
            return name
    for name in names:
        for v in fits:
            if name in str(v):
                return str(v)
    return None


def curve_variables(ds: xr.Dataset) -> tuple[str, str, str, str | None]:
    """``(error, sparsity, path_dim, span_error)`` variable names of a lasso dataset.

    Raises ``KeyError`` when the dataset lacks the ``dictionary``/``target`` dims or an error
    and a sparsity variable over them plus one path dim.
    """
    base = {"dictionary", "target"}
    err = _first(ds, ERROR_NAMES, base, 3)
    spa = _first(ds, SPARSITY_NAMES, base, 3)
    if err is None or spa is None:
        raise KeyError(f"lasso dataset without (dictionary, target, path) error/sparsity variables: "
                       f"{sorted(ds.data_vars)}")
    (path,) = set(ds[err].dims) - base
    span = _first(ds, SPAN_NAMES, base, 2)
    return err, spa, path, span


def lasso_curves(lasso: xr.Dataset, *, caption: str = "") -> Figure:
    """Reconstruction error against the number of atoms used, one panel per target (Figure 12).

    Each dictionary (random init features, clean features, robust features, the true ``M``) is
    one curve along the ℓ₁ path; a curve further down-left reconstructs with fewer atoms.  The
    paper's claim (§8.3): robust features reconstruct inputs and perturbations with fewer atoms
    than clean ones.  Where the dataset has it, the least-squares error on the whole span is a
    dotted horizontal line of the same colour (Remark 8.2).

    Parameters
    ----------
    lasso : the ``lasso`` analysis dataset (see the module docstring).
    caption : the caption line.
    """
    err, spa, path, span = curve_variables(lasso)
    targets = as_list(lasso.target.values)
    dictionaries = as_list(lasso.dictionary.values)
    ref = lasso.attrs.get("reference_error")
    at_ref = lasso["atoms_at_error"] if "atoms_at_error" in lasso else None
    fig = new_figure(4.8 * len(targets) + 0.4, 5.8)
    axes = np.atleast_1d(fig.subplots(1, len(targets), squeeze=False)[0])
    for ax, target in zip(axes, targets, strict=True):
        for dictionary in dictionaries:
            color, marker = _DICT_STYLE.get(str(dictionary), (None, "o"))
            x = np.asarray(lasso[spa].sel(dictionary=dictionary, target=target).transpose(path).values, np.float64)
            y = np.asarray(lasso[err].sel(dictionary=dictionary, target=target).transpose(path).values, np.float64)
            ok = np.isfinite(x) & np.isfinite(y)  # a path that stopped early is NaN after its end
            order = np.argsort(x[ok], kind="stable")
            label = f"{dictionary} features"
            if at_ref is not None and ref is not None:
                n = float(at_ref.sel(dictionary=dictionary, target=target))
                label += f": {n:.0f} atoms at error {ref:g}" if np.isfinite(n) else f": error {ref:g} not reached"
            line = ax.plot(x[ok][order], y[ok][order], marker=marker, ms=3.5, lw=1.6, color=color, label=label)[0]
            if span is not None:
                s = float(lasso[span].sel(dictionary=dictionary, target=target))
                if np.isfinite(s):
                    ax.axhline(s, color=line.get_color(), ls=":", lw=1.0)
        if ref is not None:
            ax.axhline(float(ref), color="0.5", lw=0.8, ls="--")
        ax.set_title(TARGET_TITLES.get(str(target), str(target)))
        # Curves start at 0 atoms (error 1) and the sparse end is what matters: linear up to one
        # atom, logarithmic beyond, so a handful of atoms is not squashed against the axis.
        ax.set_xscale("symlog", linthresh=1.0, linscale=0.5)
        ax.set_xlim(left=0.0)
        ax.set_xlabel("atoms used (mean non-zero codes, log scale above 1)")
        ax.set_ylabel(r"relative error $\|W y - x\|^2 / \|x\|^2$")
        ax.set_ylim(bottom=0.0)
        title = "dashed: reference error" if ref is not None else None
        if span is not None:
            title = (title + ", " if title else "") + "dotted: span regression"
        # Below the panel: the curves fill every corner of it.
        ax.legend(fontsize=7, title=title, title_fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    return finish(fig, "Lasso reconstructions: error vs sparsity per dictionary (Figure 12 analogue)", caption)


# --------------------------------------------------------------------------------------
# Drawer: read a run (purify.registry.FIGURES), call the figure function above
# --------------------------------------------------------------------------------------


def draw_lasso_curves(r: FigureInput) -> Figure | None:
    return lasso_curves(r.analysis("lasso"), caption=r.caption)
