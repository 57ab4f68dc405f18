"""Figures of a run: one function per figure, and :func:`plot_run`.

Every figure function takes xarray datasets (or plain arrays wrapped as DataArrays) and
returns a :class:`matplotlib.figure.Figure` built without pyplot, so drawing has no global
state, works under any backend (``Agg`` included) and never touches files.  :func:`plot_run`
is the only function that reads a run and writes files: it draws every figure the run has
data for into ``RUN/figures/<name>.<fmt>``, each file written atomically (temp file in the
same folder, then ``os.replace``), and skips — without error — the figures whose analysis
(``purify analyze``) has not been stored.

Every figure has one entry in :data:`purify.registry.FIGURES` (which :data:`FIGURES` is): its
name, its drawer (a function in the figure's own module taking a
:class:`~purify.plots.source.FigureInput`), the analysis and store groups it needs, and a
one-line summary.  The registry's order is the drawing order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.figure import Figure

from purify import store as S
from purify.analysis import done
from purify.plots.evaluation import attack_strength, threshold_frontier
from purify.plots.lasso import lasso_curves
from purify.plots.neurons import coefficient_heatmap, lottery_trajectories, pure_vs_dense, theta_histograms
from purify.plots.robustness import direction_norm_control, perturbation_density, robust_vs_tau
from purify.plots.source import FigureInput
from purify.plots.style import caption
from purify.plots.training import training_curves
from purify.registry import FIGURES, load

__all__ = [
    "FIGURES", "FigureInput", "attack_strength", "caption", "coefficient_heatmap", "direction_norm_control",
    "draw", "lasso_curves", "lottery_trajectories", "perturbation_density", "plan", "plot_run", "pure_vs_dense",
    "robust_vs_tau", "save_figure", "theta_histograms", "threshold_frontier", "training_curves",
]


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------


def _check_names(names: Sequence[str] | None) -> list[str]:
    if names is None:
        return list(FIGURES)
    for name in names:
        FIGURES.entry(name)  # ValueError naming the allowed ones
    return list(names)


def plan(run: str | Path, names: Sequence[str] | None = None) -> dict[str, str | None]:
    """For each figure: ``None`` if :func:`plot_run` can draw it, else why it is skipped."""
    available = done(run)
    reasons: dict[str, str | None] = {}
    for n in _check_names(names):
        entry = FIGURES.entry(n)
        missing = [g for g in entry.groups if not S.has_group(run, g)]
        if entry.analysis not in (None, *available):
            reasons[n] = f"no {entry.analysis} analysis (run: purify analyze {S.run_dir(run)})"
        elif missing:
            reasons[n] = (f"no {missing[0]} group (written at completion; attack_strength needs "
                          "--eval-attack standard or strong)")
        else:
            reasons[n] = None
    return reasons


def save_figure(fig: Figure, path: Path, fmt: str, *, dpi: int = 150) -> None:
    """Write ``fig`` to ``path`` atomically: a temp file in the same folder, then ``os.replace``
    (a reader never sees a half-written figure, a crash leaves the old one)."""
    S.write_atomically(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))


def draw(run: str | Path, names: Sequence[str] | None = None) -> Iterator[tuple[str, Figure]]:
    """Yield ``(name, figure)`` for every figure of ``names`` (default all) that ``run`` has data
    for, in :data:`FIGURES` order; figures whose analysis is not stored are skipped.

    Nothing is written: :func:`plot_run` saves what this yields.  Raises ``ValueError`` for an
    unknown name and ``purify.store.StoreError`` when ``run`` is not a complete run.
    """
    todo = _check_names(names)
    r = FigureInput.open(run)
    for name in todo:
        entry = FIGURES.entry(name)
        if entry.analysis is not None and entry.analysis not in r.available:
            continue
        fig = load(entry.draw)(r)
        if fig is not None:
            yield name, fig


def plot_run(
    run: str | Path,
    *,
    formats: Sequence[str] = ("png",),
    names: Sequence[str] | None = None,
) -> list[Path]:
    """Draw every figure ``run`` has data for into ``RUN/figures/<name>.<fmt>``.

    Parameters
    ----------
    run : the run folder (or its ``store.zarr``); the run must be complete.
    formats : file formats (``png``, ``pdf``, ``svg``, ...; anything matplotlib writes).
    names : figures to draw (default all of :data:`FIGURES`); a figure whose analysis is not
        stored is skipped (see :func:`plan`), not an error.

    Returns
    -------
    list of Path
        The files written, in :data:`FIGURES` order and then ``formats`` order.

    Raises
    ------
    ValueError
        An unknown figure name or format.
    purify.store.StoreError
        ``run`` is not a complete run.
    """
    _check_names(names)
    supported = FigureCanvasBase.get_supported_filetypes()
    bad = [f for f in formats if f not in supported]
    if bad:
        raise ValueError(f"unknown figure format {bad[0]!r}; allowed: {', '.join(sorted(supported))}")
    out_dir = S.run_dir(run) / S.FIGURES_NAME
    written: list[Path] = []
    for name, fig in draw(run, names):
        out_dir.mkdir(exist_ok=True)
        for fmt in formats:
            path = out_dir / f"{name}.{fmt}"
            save_figure(fig, path, fmt)
            written.append(path)
    return written
