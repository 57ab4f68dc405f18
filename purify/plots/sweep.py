"""Phase diagrams of a sweep: heatmaps over two axes, lines over one with seed spread.

Both figures read the combined dataset of ``purify sweep`` (``SWEEP/sweep.zarr``, see
:mod:`purify.sweep.combine`): variables over the sweep axes, ``seed`` among them, and
``status``.  Values are averaged over seeds that completed; the spread is their standard
deviation (``ddof=1``).  Cells where some seeds failed say so on the heatmap (``failed f/n``)
and lose those seeds from the mean, so a failure never passes for a value.  Axes other than
the drawn ones that have several values become one row of panels per value combination.

The variables of the default figures are the quantities of Allen-Zhu & Li 2020's Theorems 5.1
and 5.3 (robust accuracy at ``τ = 1/√k`` before and after adversarial training, clean accuracy
after it) and Theorem 5.3c's locality ``Σ‖w−w'‖²/Σ‖w‖²``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from purify.plots.style import finish, new_figure

DEFAULT_VARIABLES = ("robust_accuracy_before", "robust_accuracy_after", "clean_accuracy_after",
                     "relative_weight_change")
#: More rows of panels than this means the sweep has too many other axes to draw at once.
MAX_ROWS = 6
SEED = "seed"


def seed_stats(da: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    """``(mean, sd, n)`` over the seeds whose value is not NaN (sd is NaN below two seeds)."""
    if SEED not in da.dims:
        n = da.notnull().astype(int)
        return da, xr.full_like(da, np.nan), n
    n = da.notnull().sum(SEED)
    mean = da.mean(SEED, skipna=True)
    sd = da.std(SEED, skipna=True, ddof=1).where(n >= 2)
    return mean, sd, n


def _is_accuracy(name: str) -> bool:
    return "accuracy" in name or name.endswith("_fraction")


def _rows(ds: xr.Dataset, drawn: Sequence[str]) -> list[dict]:
    """One selection per row of panels: every combination of the other multi-valued axes."""
    others = [d for d in ds.status.dims if d not in drawn and d != SEED and ds.sizes[d] > 1]
    combos = list(itertools.product(*(range(ds.sizes[d]) for d in others)))
    if len(combos) > MAX_ROWS:
        raise ValueError(f"the axes {', '.join(others)} give {len(combos)} rows of panels (at most {MAX_ROWS}); "
                         "draw other axes with --x/--y")
    singles = {d: 0 for d in ds.status.dims if d not in drawn and d != SEED and ds.sizes[d] == 1}
    return [{**singles, **dict(zip(others, c, strict=True))} for c in combos]


def _row_label(ds: xr.Dataset, sel: dict) -> str:
    return ", ".join(f"{d}={_fmt(ds[d].values[i])}" for d, i in sel.items() if ds.sizes[d] > 1)


def _fmt(value) -> str:
    value = value.item() if hasattr(value, "item") else value
    return f"{value:g}" if isinstance(value, float) else str(value)


def _numeric(ds: xr.Dataset, dim: str) -> bool:
    return np.issubdtype(np.asarray(ds[dim].values).dtype, np.number)


def _cmap(name: str) -> Colormap:
    from matplotlib import colormaps

    return colormaps["viridis" if _is_accuracy(name) else "magma"].with_extremes(bad="0.85")  # no seed completed


def sweep_heatmaps(ds: xr.Dataset, *, x: str, y: str, variables: Sequence[str] = DEFAULT_VARIABLES,
                   caption: str = "") -> Figure:
    """One heatmap per variable over ``(y, x)``: the mean over seeds, written in each cell with
    its standard deviation, and ``failed f/n`` where seeds of the cell failed.

    Accuracies share the colour range ``[0, 1]`` so panels compare; other variables share
    the range of their values across rows.
    """
    rows = _rows(ds, (x, y))
    nx, ny = ds.sizes[x], ds.sizes[y]
    fig = new_figure(max(3.6, 0.9 * nx + 1.6) * len(variables), (max(2.6, 0.55 * ny + 1.3)) * len(rows) + 0.6)
    axes = np.atleast_2d(fig.subplots(len(rows), len(variables), squeeze=False))
    failed = (ds.status == "failed")
    for j, name in enumerate(variables):
        mean_all, sd_all, n_all = seed_stats(ds[name])
        finite = np.asarray(mean_all.values)[np.isfinite(mean_all.values)]
        vmin, vmax = (0.0, 1.0) if _is_accuracy(name) else (
            (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0))
        for i, sel in enumerate(rows):
            ax = axes[i, j]
            mean = mean_all.isel(sel).transpose(y, x)
            sd = sd_all.isel(sel).transpose(y, x)
            nf = (failed.isel(sel).sum(SEED) if SEED in failed.dims else failed.isel(sel)).transpose(y, x)
            ns = ds.sizes.get(SEED, 1)
            im = ax.imshow(np.ma.masked_invalid(mean.values.astype(float)), origin="lower", aspect="auto",
                           cmap=_cmap(name), vmin=vmin, vmax=vmax)
            for (r, c), m in np.ndenumerate(mean.values):
                lines = [f"{m:.2f}"] if np.isfinite(m) else []
                if np.isfinite(sd.values[r, c]):
                    lines.append(f"±{sd.values[r, c]:.2f}")
                if nf.values[r, c]:
                    lines.append(f"failed {int(nf.values[r, c])}/{ns}")
                ax.text(c, r, "\n".join(lines), ha="center", va="center", fontsize=7,
                        color="white" if np.isfinite(m) and (m - vmin) < 0.55 * (vmax - vmin) else "black")
            ax.set_xticks(range(nx), [_fmt(v) for v in ds[x].values])
            ax.set_yticks(range(ny), [_fmt(v) for v in ds[y].values])
            ax.set_xlabel(x)
            ax.set_ylabel(y)
            label = _row_label(ds, sel)
            ax.set_title(name.replace("_", " ") + (f"\n{label}" if label else ""), fontsize=9)
            if i == 0:
                fig.colorbar(im, ax=axes[:, j].tolist(), shrink=0.8)
    seeds = ds.sizes.get(SEED, 1)
    return finish(fig, f"Sweep over {x} and {y}: mean over {seeds} seed{'s' * (seeds != 1)} (± sd)", caption)


def sweep_lines(ds: xr.Dataset, *, x: str, variables: Sequence[str] = DEFAULT_VARIABLES,
                caption: str = "") -> Figure:
    """One panel per variable: the mean over seeds along ``x`` with a ± sd band, one line per
    value of the next multi-valued axis (further axes become rows)."""
    others = [d for d in ds.status.dims if d not in (x, SEED) and ds.sizes[d] > 1]
    hue = others[0] if others else None
    rows = _rows(ds, (x, hue) if hue else (x,))
    numeric = _numeric(ds, x)
    xs = np.asarray(ds[x].values, float) if numeric else np.arange(ds.sizes[x])
    fig = new_figure(4.0 * len(variables), 3.2 * len(rows) + 0.6)
    axes = np.atleast_2d(fig.subplots(len(rows), len(variables), squeeze=False))
    from matplotlib import colormaps

    colors = colormaps["viridis"](np.linspace(0.0, 0.85, ds.sizes[hue])) if hue else ["tab:blue"]
    for j, name in enumerate(variables):
        mean_all, sd_all, _ = seed_stats(ds[name])
        for i, sel in enumerate(rows):
            ax = axes[i, j]
            series = range(ds.sizes[hue]) if hue else [None]
            for h, color in zip(series, colors, strict=True):
                pick = dict(sel) | ({hue: h} if hue is not None else {})
                mean = np.asarray(mean_all.isel(pick).values, float)
                sd = np.asarray(sd_all.isel(pick).values, float)
                label = f"{hue}={_fmt(ds[hue].values[h])}" if hue is not None else None
                ax.plot(xs, mean, "o-", color=color, label=label, ms=4)
                ax.fill_between(xs, mean - np.nan_to_num(sd), mean + np.nan_to_num(sd), color=color, alpha=0.2, lw=0)
            if numeric and len(xs) > 2 and np.all(xs > 0) and xs.max() / xs.min() >= 8:
                ax.set_xscale("log")
            if not numeric:
                ax.set_xticks(xs, [_fmt(v) for v in ds[x].values])
            ax.set_xlabel(x)
            label = _row_label(ds, {k: v for k, v in sel.items() if k != hue})
            ax.set_title(name.replace("_", " ") + (f"\n{label}" if label else ""), fontsize=9)
            if _is_accuracy(name):
                ax.set_ylim(-0.02, 1.02)
            if hue is not None and i == 0 and j == 0:
                ax.legend(fontsize=7)
    seeds = ds.sizes.get(SEED, 1)
    return finish(fig, f"Sweep along {x}: mean ± sd over {seeds} seed{'s' * (seeds != 1)}", caption)


def sweep_caption(ds: xr.Dataset, name: str = "") -> str:
    """The caption line: the axes, the fixed options of the base config, the cell counts."""
    spec = json.loads(ds.attrs.get("spec_json", "{}"))
    axes = " × ".join(f"{d}({ds.sizes[d]})" for d in ds.status.dims)
    base = spec.get("base", {})
    fixed = [f"{k}={v}" for section, table in base.items() if isinstance(table, dict) for k, v in table.items()]
    fixed += [f"{k}={v}" for k, v in base.items() if not isinstance(v, dict)]
    parts = [f"sweep {name}".strip(), f"axes {axes}"]
    if fixed:
        parts.append("fixed " + " ".join(fixed))
    parts.append(f"{ds.attrs.get('n_complete', '?')}/{ds.attrs.get('n_cells', '?')} cells complete")
    return "   ".join(parts)


def plot_sweep(
    sweep: str | Path,
    *,
    variables: Sequence[str] | None = None,
    x: str | None = None,
    y: str | None = None,
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """Draw a sweep's figures into ``SWEEP/figures/``: ``heatmap_<y>_<x>`` when the sweep has
    two axes with several values (besides seed), and ``lines_<axis>`` along ``x`` (and ``y``).

    Raises
    ------
    purify.store.StoreError
        ``sweep`` holds no sweep result.
    ValueError
        An unknown variable or axis, or nothing to draw.
    """
    from purify.plots import save_figure
    from purify.sweep.combine import open_combined

    ds = open_combined(sweep)
    folder = Path(sweep)
    folder = folder.parent if folder.name.endswith(".zarr") else folder
    variables = list(variables or [v for v in DEFAULT_VARIABLES if v in ds])
    numeric_vars = [v for v in ds.data_vars if ds[v].dtype.kind == "f" and v != "elapsed_seconds"]
    for name in variables:
        if name not in numeric_vars:
            raise ValueError(f"unknown variable {name!r}; allowed: {', '.join(numeric_vars)}")
    axes = [d for d in ds.status.dims if d != SEED and ds.sizes[d] > 1]
    for name, value in (("--x", x), ("--y", y)):
        if value is not None and value not in axes:
            raise ValueError(f"invalid {name}={value!r}: allowed: {', '.join(axes) or 'none (only seeds vary)'}")
    if not axes:
        raise ValueError("the sweep varies only the seed: nothing to draw over (add an axis)")
    x = x or axes[0]
    y = y or next((a for a in axes if a != x), None)
    if y == x:
        raise ValueError("--x and --y must be different axes")
    caption = sweep_caption(ds, folder.name)
    figures = []
    if y is not None:
        figures.append((f"heatmap_{y}_{x}", sweep_heatmaps(ds, x=x, y=y, variables=variables, caption=caption)))
    for axis in (x, y) if y is not None else (x,):
        figures.append((f"lines_{axis}", sweep_lines(ds, x=axis, variables=variables, caption=caption)))
    out = folder / "figures"
    out.mkdir(exist_ok=True)
    written = []
    for name, fig in figures:
        for fmt in formats:
            path = out / f"{name}.{fmt}"
            save_figure(fig, path, fmt)
            written.append(path)
    return written


__all__ = ["DEFAULT_VARIABLES", "plot_sweep", "seed_stats", "sweep_caption", "sweep_heatmaps", "sweep_lines"]
