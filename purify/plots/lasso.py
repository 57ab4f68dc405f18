"""Lasso reconstruction curves: error against sparsity per dictionary (§8.3, Figure 12).

Reads the ``lasso`` analysis: a dataset with dims ``dictionary`` (random / clean / robust /
true features), ``target`` (``input``, ``clean_delta``, ``robust_delta``) and one path dim
(the ℓ₁ weights of the sweep), a reconstruction-error variable and a sparsity variable over
those three dims (found by name, see :func:`curve_variables`), and optionally a
``(dictionary, target)`` regression error onto each feature span (Remark 8.2).
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from purify.plots.style import MODEL_COLORS, as_list, finish, new_figure

#: Names tried, in order, for the variables of the curves and of the span regression.
ERROR_NAMES = ("error", "reconstruction_error", "relative_error", "rel_error", "residual")
SPARSITY_NAMES = ("sparsity", "n_nonzero", "nonzeros", "n_atoms", "support_size", "l0")
SPAN_NAMES = ("span_error", "regression_error", "span_residual", "projection_error")

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
    fig = new_figure(4.8 * len(targets) + 0.4, 4.4)
    axes = np.atleast_1d(fig.subplots(1, len(targets), squeeze=False)[0])
    for ax, target in zip(axes, targets, strict=True):
        for dictionary in dictionaries:
            color, marker = _DICT_STYLE.get(str(dictionary), (None, "o"))
            x = np.asarray(lasso[spa].sel(dictionary=dictionary, target=target).transpose(path).values, np.float64)
            y = np.asarray(lasso[err].sel(dictionary=dictionary, target=target).transpose(path).values, np.float64)
            ok = np.isfinite(x) & np.isfinite(y)
            order = np.argsort(x[ok], kind="stable")
            line = ax.plot(x[ok][order], y[ok][order], marker=marker, ms=3.5, lw=1.6, color=color,
                           label=f"{dictionary} features")[0]
            if span is not None:
                s = float(lasso[span].sel(dictionary=dictionary, target=target))
                if np.isfinite(s):
                    ax.axhline(s, color=line.get_color(), ls=":", lw=1.0)
        ax.set_title(TARGET_TITLES.get(str(target), str(target)))
        ax.set_xlabel(_axis_label(lasso[spa], "atoms used (sparsity)"))
        ax.set_ylabel(_axis_label(lasso[err], "reconstruction error"))
        ax.set_ylim(bottom=0.0)
        ax.set_xlim(left=0.0)
        ax.legend(fontsize=8, title="span regression: dotted" if span is not None else None, title_fontsize=7)
    return finish(fig, "Lasso reconstructions: error vs sparsity per dictionary (Figure 12 analogue)", caption)


def _axis_label(var: xr.DataArray, default: str) -> str:
    """The variable's ``long_name`` (wrapped short enough for an axis), else ``default``."""
    text = str(var.attrs.get("long_name", "")) or default
    return text if len(text) <= 60 else default + f" ({var.name})"
